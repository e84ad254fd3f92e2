"""Work for a client that has left is abandoned: its decoding stops, and its prediction leaves
the micro-batcher's queue before the inference call (``service.abandon``)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.abandon import ClientGoneError, unless_client_leaves, until_client_leaves
from service.batching import MicroBatcher


class Client:
    """A request whose client is connected until ``leave()``."""

    def __init__(self) -> None:
        self.gone = False

    def leave(self) -> None:
        self.gone = True

    async def is_disconnected(self) -> bool:
        return self.gone


def test_a_prediction_queued_for_a_client_that_left_never_reaches_inference() -> None:
    calls: list[int] = []
    started, resume = threading.Event(), threading.Event()

    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        started.set()
        resume.wait(10)  # the first call holds the model while the others queue
        return {"y": inputs["x"] * 2}

    batcher = MicroBatcher(infer, max_batch_rows=100)
    leaving, staying = Client(), Client()

    async def main() -> tuple[BaseException | None, np.ndarray]:
        first = asyncio.ensure_future(batcher.submit({"x": np.ones(1)}))
        await asyncio.to_thread(started.wait, 10)
        gone = asyncio.ensure_future(
            until_client_leaves(leaving, batcher.submit({"x": np.ones(7)}))
        )
        kept = asyncio.ensure_future(
            until_client_leaves(staying, batcher.submit({"x": np.ones(3)}))
        )
        await asyncio.sleep(0.01)
        leaving.leave()
        try:
            await gone
        except ClientGoneError as exc:
            error: BaseException | None = exc
        else:
            error = None
        resume.set()
        await first
        return error, (await kept)["y"]

    error, kept = asyncio.run(main())
    assert isinstance(error, ClientGoneError)
    assert 7 not in calls and calls == [1, 3]
    assert kept.tolist() == [2.0, 2.0, 2.0]


def test_work_in_a_thread_stops_at_its_next_step_when_the_client_leaves() -> None:
    client = Client()
    steps: list[int] = []

    def work(stop: threading.Event) -> str:
        for step in range(200):
            if stop.is_set():
                return "stopped"
            steps.append(step)
            if step == 3:
                client.leave()
            stop.wait(0.01)
        return "finished"

    with pytest.raises(ClientGoneError):
        asyncio.run(unless_client_leaves(client, work))
    assert 3 < len(steps) < 200


def test_a_connected_client_gets_the_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0.12)  # longer than one poll
        return 42

    assert asyncio.run(until_client_leaves(Client(), answer())) == 42
