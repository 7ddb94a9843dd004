"""Dynamic micro-batching: items from concurrent requests share one ONNX Runtime call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class MicroBatcher:
    """Collects items until `max_batch` are waiting or `max_wait_ms` passed since the first.

    Args:
        run: items -> one result per item; runs in a worker thread so the event loop
            keeps accepting requests while ONNX Runtime works.
        max_batch: most items in one call.
        max_wait_ms: longest a first item waits for company.
        on_batch: called with each batch size (metrics).
    """

    def __init__(
        self, run: Callable[[list], list], max_batch: int = 32, max_wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.run, self.max_batch, self.max_wait = run, max(1, max_batch), max_wait_ms / 1000
        self.on_batch = on_batch or (lambda n: None)
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()

    async def submit(self, items: list) -> list:
        """Results for `items`, in order (an item's exception is raised here)."""
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
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
