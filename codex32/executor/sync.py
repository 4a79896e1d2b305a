"""The executor's synchronous face, as the engine's API is: for scripts and threads.

An event loop runs in a thread of its own for the executor's life, so a supervising
sync executor keeps watching between calls.
"""

from __future__ import annotations

import asyncio
import builtins
import queue
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from codex32.executor.executor import AdaptiveExecutor, Callback
from codex32.executor.models import Bot, BotRun, BotStatus

T = TypeVar("T")


class SyncAdaptiveExecutor:
    """``AdaptiveExecutor`` with blocking methods (same names, same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bot-executor", daemon=True
        )
        self._thread.start()
        self.executor = AdaptiveExecutor(*args, **kwargs)
        try:
            self._call(self.executor.start())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self.executor.close())
        self._stop_loop()

    def __enter__(self) -> SyncAdaptiveExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on(self, action: str, callback: Callback) -> None:
        self.executor.on(action, callback)

    def run_bot(self, bot: Bot) -> BotRun:
        return self._call(self.executor.run_bot(bot))

    def stop_bot(self, bot_id: str, timeout: float | None = None) -> BotRun | None:
        return self._call(self.executor.stop_bot(bot_id, timeout))

    def restart_bot(self, bot_id: str, timeout: float | None = None) -> BotRun:
        return self._call(self.executor.restart_bot(bot_id, timeout))

    def remove_bot(self, bot_id: str, *, force: bool = False) -> None:
        self._call(self.executor.remove_bot(bot_id, force=force))

    def status(self, bot_id: str) -> BotStatus:
        return self._call(self.executor.status(bot_id))

    def list(self) -> builtins.list[BotStatus]:
        return self._call(self.executor.list())

    def runs(self, bot_id: str) -> builtins.list[BotRun]:
        return self._call(self.executor.runs(bot_id))

    def logs(self, bot_id: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """Lines as they come (a queue between the loop and the caller)."""
        lines: queue.Queue[str | BaseException | None] = queue.Queue()

        async def pump() -> None:
            try:
                async for line in self.executor.logs(bot_id, follow=follow, tail=tail):
                    lines.put(line)
            except BaseException as error:  # handed to the caller
                lines.put(error)
            finally:
                lines.put(None)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while (item := lines.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            future.cancel()
