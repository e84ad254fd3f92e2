"""``AnswerDeadlines``: a request whose answer has not started by its deadline is cancelled and
knows it (``expired_here``); one whose answer started, or that was cancelled from elsewhere,
is not; one timer serves requests arriving one after another."""

from __future__ import annotations

import asyncio

import pytest

from service.answer_deadlines import AnswerDeadlines


async def request(deadlines: AnswerDeadlines, answer: asyncio.Event) -> str:
    """A request that answers once ``answer`` is set: its outcome."""
    deadline = deadlines.start()
    try:
        await answer.wait()
        deadlines.answered(deadline)
        return "answered"
    except asyncio.CancelledError:
        if deadline.expired_here():
            return "504"
        raise
    finally:
        deadlines.answered(deadline)


def test_a_request_not_answered_in_time_expires_and_one_answered_does_not() -> None:
    async def main() -> list[str]:
        deadlines = AnswerDeadlines(0.05)
        answered = asyncio.Event()
        answered.set()
        late = asyncio.create_task(request(deadlines, asyncio.Event()))
        in_time = asyncio.create_task(request(deadlines, answered))
        return [await in_time, await late]

    assert asyncio.run(main()) == ["answered", "504"]


def test_the_timer_serves_requests_arriving_after_the_first_is_answered_or_expired() -> None:
    async def main() -> list[str]:
        deadlines = AnswerDeadlines(0.02)
        first = asyncio.Event()
        first.set()
        outcomes = [await request(deadlines, first)]  # answered: its timer still pending
        outcomes.append(await request(deadlines, asyncio.Event()))  # the timer re-arms for it
        outcomes.append(await request(deadlines, asyncio.Event()))  # none pending: a new timer
        return outcomes

    assert asyncio.run(main()) == ["answered", "504", "504"]


def test_a_cancellation_from_elsewhere_is_passed_on_not_answered_504() -> None:
    async def main() -> None:
        deadlines = AnswerDeadlines(60)
        started = asyncio.Event()

        async def cancelled_elsewhere() -> str:
            deadline = deadlines.start()
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                assert not deadline.expired_here()
                raise
            finally:
                deadlines.answered(deadline)
            return "answered"

        task = asyncio.create_task(cancelled_elsewhere())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
