import asyncio
import threading

import numpy as np
import pytest

from service.batching import MicroBatcher, OverloadedError, concatenate_padded, sequence_length


def _doubler(calls: list[int]):
    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    return infer


def test_concurrent_requests_share_calls_and_get_their_own_rows_back() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_doubler(calls), max_batch_rows=64)

    async def main() -> list[dict[str, np.ndarray]]:
        requests = [np.arange(i, i + 3, dtype=np.float32) for i in range(0, 60, 3)]
        return await asyncio.gather(*(batcher.submit({"x": r}) for r in requests))

    results = asyncio.run(main())
    for index, result in enumerate(results):
        start = index * 3
        np.testing.assert_array_equal(result["y"], np.arange(start, start + 3) * 2)
    assert sum(calls) == 60
    assert len(calls) < 20  # some requests were joined


def test_batches_never_exceed_max_batch_rows() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_doubler(calls), max_batch_rows=8)

    async def main() -> None:
        await asyncio.gather(*(batcher.submit({"x": np.ones(3)}) for _ in range(10)))

    asyncio.run(main())
    assert max(calls) <= 8 and sum(calls) == 30


def test_queue_beyond_its_limit_is_refused() -> None:
    batcher = MicroBatcher(_doubler([]), max_batch_rows=8, max_queue_rows=5)

    async def main() -> None:
        await batcher.submit({"x": np.ones(6)})

    with pytest.raises(OverloadedError, match="limit 5"):
        asyncio.run(main())


def test_a_failing_inference_fails_its_requests_and_not_the_next_ones() -> None:
    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (inputs["x"] < 0).any():
            raise ValueError("negative")
        return {"y": inputs["x"]}

    batcher = MicroBatcher(infer, max_batch_rows=1)

    async def main() -> np.ndarray:
        with pytest.raises(ValueError, match="negative"):
            await batcher.submit({"x": -np.ones(1)})
        return (await batcher.submit({"x": np.ones(1)}))["y"]

    np.testing.assert_array_equal(asyncio.run(main()), np.ones(1))


def test_a_cost_budget_bounds_rows_times_the_widest_joined_request() -> None:
    shapes: list[tuple[int, int]] = []

    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes.append(inputs["x"].shape)
        return {"y": inputs["x"].sum(axis=1)}

    batcher = MicroBatcher(
        infer,
        max_batch_rows=1000,
        join=concatenate_padded,
        width=sequence_length("x"),
        max_batch_cost=40,
    )
    widths = [2, 10, 3, 2, 8, 1, 4, 10]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(
            *(batcher.submit({"x": np.ones((2, width))}) for width in widths)
        )

    results = asyncio.run(main())
    assert [result["y"].tolist() for result in results] == [[w, w] for w in widths]
    assert all(rows * width <= 40 for rows, width in shapes)
    assert sum(rows for rows, _ in shapes) == 2 * len(widths) and len(shapes) < len(widths)


def test_a_request_whose_caller_left_is_dropped_before_its_call() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_doubler(calls), max_batch_rows=100)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit({"x": np.ones(1)}))
        gone = asyncio.ensure_future(batcher.submit({"x": np.ones(50)}))
        kept = asyncio.ensure_future(batcher.submit({"x": np.ones(2)}))
        await asyncio.sleep(0)  # all three are queued before the first call is taken
        gone.cancel()
        await asyncio.gather(first, kept)

    asyncio.run(main())
    assert 50 not in calls and sum(calls) == 3


def test_a_small_request_finding_the_batcher_idle_runs_inline_and_others_still_join() -> None:
    threads: list[int] = []
    calls: list[int] = []
    batches: list[int] = []
    release = threading.Event()

    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        threads.append(threading.get_ident())
        if len(inputs["x"]) == 5:
            release.wait(10)  # the large call holds the thread until the small ones are queued
        return _doubler(calls)(inputs)

    batcher = MicroBatcher(
        infer, max_batch_rows=64, inline_rows=2, on_batch=lambda rows, s, o: batches.append(rows)
    )

    async def main() -> list[dict[str, np.ndarray]]:
        alone = await batcher.submit({"x": np.arange(2.0)})  # idle: inline
        large = asyncio.ensure_future(batcher.submit({"x": np.ones(5)}))  # over 2 rows: thread
        while not threads[1:]:  # its call is in the thread
            await asyncio.sleep(0.001)
        small = [asyncio.ensure_future(batcher.submit({"x": np.full(1, i)})) for i in range(3)]
        await asyncio.sleep(0)  # queued behind the running call
        release.set()
        return [alone, await large, *await asyncio.gather(*small)]

    loop_thread = threading.get_ident()
    results = asyncio.run(main())
    assert [r["y"].tolist() for r in results] == [[0, 2], [2] * 5, [0], [2], [4]]
    assert threads[0] == loop_thread and loop_thread not in threads[1:]
    assert calls == batches == [2, 5, 3]  # the three small ones shared one threaded call


@pytest.mark.parametrize(
    "settings",
    [{"max_wait_ms": 1}, {"alone": lambda: False}],
    ids=["it may wait for more rows", "other requests are in flight"],
)
def test_no_inline_call_when(settings: dict) -> None:
    threads: list[int] = []

    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        threads.append(threading.get_ident())
        return {"y": inputs["x"]}

    batcher = MicroBatcher(infer, max_batch_rows=8, inline_rows=8, **settings)
    asyncio.run(batcher.submit({"x": np.ones(1)}))
    assert threads and threads[0] != threading.get_ident()


def test_a_batch_that_fills_during_the_wait_goes_at_once() -> None:
    """``max_wait_ms`` of ten minutes: the call happens when the rows reach max_batch_rows."""
    calls: list[int] = []
    batcher = MicroBatcher(_doubler(calls), max_batch_rows=4, max_wait_ms=600_000)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit({"x": np.ones(2)}))
        await asyncio.sleep(0)  # the first request opens the batch and its wait
        second = batcher.submit({"x": np.ones(2)})
        await asyncio.wait_for(asyncio.gather(first, second), timeout=60)

    asyncio.run(main())
    assert calls == [4]
