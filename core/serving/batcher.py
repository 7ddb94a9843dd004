"""Dynamic micro-batching: items from concurrent requests share one ONNX Runtime call.

The worker survives anything one batch raises (that batch's requests fail, the next batch runs),
the queue is bounded (a full queue refuses new work instead of growing), and `stop` returns
within its timeout whatever is still queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Overloaded(Exception):
    """The queue cannot take the items now (the server answers 503 with Retry-After)."""


class BatchFailed(Exception):
    """Running the batch an item was in failed (the server answers 500 for it, and goes on)."""


class MicroBatcher:
    """Collects items until `max_batch` are waiting or `max_wait_ms` passed since the first.

    Args:
        run: items -> one result per item; runs in a worker thread so the event loop
            keeps accepting requests while ONNX Runtime works.
        max_batch: most items in one call.
        max_wait_ms: longest a first item waits for company.
        max_queue: most items waiting at once; more are refused with Overloaded.
        on_batch: called with each batch size (metrics).
    """

    def __init__(
        self, run: Callable[[list], list], max_batch: int = 32, max_wait_ms: float = 5.0,
        max_queue: int = 1024, on_batch: Callable[[int], None] | None = None,
    ):
        self.run, self.max_batch, self.max_wait = run, max(1, max_batch), max_wait_ms / 1000
        self.max_queue = max(1, max_queue)
        self.on_batch = on_batch or (lambda n: None)
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._accepting = False

    @property
    def alive(self) -> bool:
        """Whether the worker is running (a dead worker makes the server unready and unhealthy)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())
        self._accepting = True

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Refuse new items, let the queued ones finish for up to `timeout_s`, then fail the rest."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._queue.empty() and self.alive and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await asyncio.wait_for(self._task, max(0.1, deadline - loop.time()))
            except (asyncio.CancelledError, TimeoutError):
                pass
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(Overloaded("the server is shutting down"))

    async def submit(self, items: list) -> list:
        """Results for `items`, in order (an item's exception is raised here).

        Raises:
            Overloaded: the queue is full, or the server is stopping or has no worker.
        """
        if not self._accepting or not self.alive:
            raise Overloaded("the server is not accepting requests")
        if self._queue.qsize() + len(items) > self.max_queue:
            raise Overloaded(f"{self._queue.qsize()} items are queued (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self._queue.put_nowait((item, future))
        return list(await asyncio.gather(*futures))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(remaining, 0)))
                except TimeoutError:
                    break
            self.on_batch(len(batch))
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(None, self.run, items)
                if len(results) != len(items):
                    raise RuntimeError(f"{len(results)} results for {len(items)} items")
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                _fail(batch, Overloaded("the server is shutting down"))
                raise
            except BaseException as exc:  # noqa: BLE001 - one batch's failure (even a Rust panic) spares the rest
                _fail(batch, BatchFailed(f"{type(exc).__name__}: {_first_line(exc)}"))
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


def _fail(batch: list, exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:200]
