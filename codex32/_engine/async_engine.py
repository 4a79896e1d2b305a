"""AsyncContainerEngine: the public API for asyncio callers (the service, bots' scripts).

The engine is synchronous: its verbs block on kernel waits, file locks and child
processes. The async face runs them off the event loop, as aiodocker sits beside
docker-py, without a second implementation of any verb:

* short verbs (create, start, stop, inspect, ...) run on a bounded thread pool
  (``max_workers``), so a burst of requests queues instead of spawning threads
  without end;
* long waits (``wait``) run in slices of at most ``_WAIT_SLICE`` seconds on a second
  pool, so that a caller that goes away frees its thread within a slice;
* streams (logs follow, events follow, stats) are async iterators fed by one thread
  each through a bounded queue (back-pressure: a slow reader slows the reading
  thread, not the loop); leaving the ``async for`` (or the task being cancelled)
  stops that thread within one poll (0.1 s).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from codex32._cgroups.containers import ContainerStats
from codex32._engine.container import Container
from codex32._engine.engine import ContainerEngine
from codex32._engine.results import ExecResult, RunResult
from codex32._network.ipam import NetworkDefinition
from codex32._store.events import Event
from codex32._store.logs import LogEntry
from codex32._store.state import ContainerRecord, ContainerState
from codex32.config.container import ContainerConfig
from codex32.config.images import ContainerImage
from codex32.errors import DamagedRecordError

T = TypeVar("T")

#: The longest one blocking ``wait`` call holds a thread before it is re-issued.
_WAIT_SLICE = 1.0
#: Items a stream's thread may get ahead of its reader.
_STREAM_QUEUE = 256
LIVE = (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)
_END = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Threads:
    """The two pools and the stream threads of one async engine."""

    def __init__(self, max_workers: int, max_waiters: int) -> None:
        self.calls = concurrent.futures.ThreadPoolExecutor(max_workers, "codex32-call")
        self.waits = concurrent.futures.ThreadPoolExecutor(max_waiters, "codex32-wait")

    async def call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.calls, partial(function, *args, **kwargs))

    async def wait_call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.waits, partial(function, *args, **kwargs))

    async def stream(self, make: Callable[[Callable[[], bool]], Iterator[T]]) -> AsyncIterator[T]:
        """Iterate ``make(stop)`` on a thread of its own; ``stop()`` turns true when the
        consumer leaves, and ``make``'s iterator must ask it at each poll."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(_STREAM_QUEUE)
        gone = threading.Event()

        def put(item: object) -> bool:
            try:
                future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            except RuntimeError:  # the loop is closed
                return False
            while True:
                try:
                    future.result(timeout=0.2)
                    return True
                except concurrent.futures.TimeoutError:
                    if gone.is_set():
                        future.cancel()
                        return False
                except concurrent.futures.CancelledError:
                    return False

        def produce() -> None:
            try:
                for item in make(gone.is_set):
                    if gone.is_set() or not put(item):
                        return
                put(_END)
            except BaseException as error:  # handed to the consumer, raised there
                put(_Raised(error))

        thread = threading.Thread(target=produce, name="codex32-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, _Raised):
                    raise item.error
                yield item  # type: ignore[misc]
        finally:
            gone.set()

    def close(self) -> None:
        self.calls.shutdown(wait=False, cancel_futures=True)
        self.waits.shutdown(wait=False, cancel_futures=True)


class AsyncContainer:
    """A container handle whose verbs are awaitable (wraps :class:`Container`)."""

    def __init__(self, container: Container, threads: _Threads) -> None:
        self.sync = container
        self._threads = threads

    def __repr__(self) -> str:
        return f"<AsyncContainer {self.short_id} {self.name} {self.state.value}>"

    @property
    def id(self) -> str:
        return self.sync.id

    @property
    def short_id(self) -> str:
        return self.sync.short_id

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def state(self) -> ContainerState:
        """As last refreshed (``await reload()`` to refresh)."""
        return self.sync.state

    @property
    def status(self) -> str:
        return self.sync.status

    @property
    def record(self) -> ContainerRecord:
        return self.sync.record

    async def config(self) -> ContainerConfig:
        """What the container was created from (read from its directory)."""
        return await self._threads.call(lambda: self.sync.config)

    async def reload(self) -> None:
        await self._threads.call(self.sync.reload)

    async def start(
        self, *, stdin: int | None = None, stdout: int | None = None, stderr: int | None = None
    ) -> None:
        """Start; with descriptors, attached to them (see ``Container.start``)."""
        await self._threads.call(self.sync.start, stdin=stdin, stdout=stdout, stderr=stderr)

    async def stop(self, timeout: float | None = None) -> None:
        await self._threads.wait_call(self.sync.stop, timeout)

    async def kill(self, signal_: str | int = "SIGKILL") -> None:
        await self._threads.call(self.sync.kill, signal_)

    async def restart(self, timeout: float | None = None) -> None:
        await self._threads.wait_call(self.sync.restart, timeout)

    async def pause(self) -> None:
        await self._threads.call(self.sync.pause)

    async def unpause(self) -> None:
        await self._threads.call(self.sync.unpause)

    async def remove(self, *, force: bool = False) -> None:
        await self._threads.wait_call(self.sync.remove, force=force)

    async def wait(self, timeout: float | None = None) -> int:
        """Until the container is not running; its exit code. ``TimeoutError`` after
        ``timeout`` seconds. Cancelling frees the thread within ``_WAIT_SLICE``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"container {self.name} still running after {timeout} s")
            step = _WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining)
            try:
                return await self._threads.wait_call(self.sync.wait, step)
            except TimeoutError:
                continue

    async def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | None = None,
        since: float | None = None,
        timestamps: bool = False,
    ) -> bytes:
        """The output so far (docker-py's ``logs()``)."""
        return await self._threads.call(
            self.sync.logs,
            stdout=stdout,
            stderr=stderr,
            tail=tail,
            since=since,
            timestamps=timestamps,
        )

    def stream_logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = True,
    ) -> AsyncIterator[LogEntry]:
        """Log entries as they come; ends when the container stops (or the reader leaves)."""
        return self._threads.stream(
            lambda stop: iter(
                self.sync.stream_logs(
                    stdout=stdout,
                    stderr=stderr,
                    tail=tail,
                    since=since,
                    follow=follow,
                    stop=stop,
                )
            )
        )

    async def stats(self) -> ContainerStats:
        return await self._threads.call(self.sync.stats)

    async def stream_stats(self, interval: float = 1.0) -> AsyncIterator[ContainerStats]:
        """A sample every ``interval`` seconds while the container runs (``docker stats``)."""
        while True:
            yield await self._threads.call(self.sync.stats)
            await asyncio.sleep(interval)
            await self.reload()
            if self.state not in LIVE:
                return

    async def top(self) -> list[dict[str, object]]:
        return await self._threads.call(self.sync.top)

    async def network_settings(self) -> dict[str, object]:
        return await self._threads.call(self.sync.network_settings)

    async def exec_run(
        self,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        tty: bool = False,
        on_terminal: Callable[[int], None] | None = None,
    ) -> ExecResult:
        """As ``Container.exec_run``; on the wait pool, since it lasts as the command does."""
        return await self._threads.wait_call(
            self.sync.exec_run,
            command,
            env=env,
            user=user,
            workdir=workdir,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            tty=tty,
            on_terminal=on_terminal,
        )

    async def export(self, path: str | os.PathLike[str]) -> None:
        await self._threads.wait_call(self.sync.export, path)

    async def export_stream(self, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        """The filesystem as a tar stream. The export is made first (to a private
        temporary file under the storage directory, as the export itself is atomic),
        so that its failure is raised here, before any byte is streamed."""
        tmp_root = self.sync._engine.settings.storage_dir / "tmp"
        await self._threads.call(partial(tmp_root.mkdir, mode=0o700, exist_ok=True))
        directory = Path(await self._threads.call(tempfile.mkdtemp, dir=tmp_root))
        path = directory / "export.tar"

        def remove() -> None:
            with contextlib.suppress(OSError):
                path.unlink()
            with contextlib.suppress(OSError):
                directory.rmdir()

        try:
            await self.export(path)
            tar = await self._threads.call(_open_binary, path)
        except BaseException:
            remove()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await self._threads.call(tar.read, chunk_size):
                    yield chunk
            finally:
                tar.close()
                remove()

        return chunks()


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")


class AsyncContainerCollection:
    """``engine.containers`` with awaitable verbs."""

    def __init__(self, engine: ContainerEngine, threads: _Threads) -> None:
        self._engine = engine
        self._threads = threads

    def _wrap(self, container: Container) -> AsyncContainer:
        return AsyncContainer(container, self._threads)

    async def create(self, config: ContainerConfig) -> AsyncContainer:
        return self._wrap(await self._threads.call(self._engine.containers.create, config))

    async def damaged(self) -> tuple[DamagedRecordError, ...]:
        """Each container record that cannot be trusted, with its path and why."""
        return await self._threads.call(self._engine.containers.damaged)

    async def run_detached(self, config: ContainerConfig) -> AsyncContainer:
        return self._wrap(await self._threads.call(self._engine.containers.run_detached, config))

    async def run(self, config: ContainerConfig) -> RunResult:
        """Create, start, wait; output captured (on the wait pool: it lasts the run)."""
        return await self._threads.wait_call(self._engine.containers.run, config)

    async def get(self, name_or_id: str) -> AsyncContainer:
        return self._wrap(await self._threads.call(self._engine.containers.get, name_or_id))

    async def list(self, *, all: bool = False) -> list[AsyncContainer]:
        found = await self._threads.call(self._engine.containers.list, all=all)
        return [self._wrap(c) for c in found]

    async def prune(self) -> builtins.list[str]:
        return await self._threads.wait_call(self._engine.containers.prune)


class AsyncImageCollection:
    """``engine.images`` (the rootfs templates) with awaitable verbs."""

    def __init__(self, engine: ContainerEngine, threads: _Threads) -> None:
        self._engine = engine
        self._threads = threads

    async def list(self) -> list[ContainerImage]:
        return await self._threads.call(self._engine.images.list)

    async def get(self, name: str) -> ContainerImage:
        return await self._threads.call(self._engine.images.get, name)

    async def build(self, name: str, *, quiet: bool = True) -> ContainerImage:
        return await self._threads.wait_call(self._engine.images.build, name, quiet=quiet)

    def build_stream(self, name: str) -> AsyncIterator[str | ContainerImage]:
        """(Re)build, yielding the recipe's output line by line, then the image built
        (a failed build raises ``ImageError`` after its lines)."""
        return self._threads.stream(lambda _stop: self._build_lines(name))

    def _build_lines(self, name: str) -> Iterator[str | ContainerImage]:
        read_end, write_end = os.pipe()
        outcome: list[ContainerImage | BaseException] = []

        def build() -> None:
            try:
                with open(write_end, "w", closefd=True) as progress:
                    outcome.append(self._engine.images.build(name, progress=progress))
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=build, name="codex32-build", daemon=True)
        thread.start()
        with open(read_end, encoding="utf-8", errors="replace") as lines:
            yield from lines
        thread.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        yield outcome[0]


class AsyncNetworkCollection:
    """``engine.networks`` with awaitable verbs."""

    def __init__(self, engine: ContainerEngine, threads: _Threads) -> None:
        self._engine = engine
        self._threads = threads

    async def create(
        self, name: str, subnet: str, *, gateway: str | None = None, masquerade: bool = False
    ) -> NetworkDefinition:
        return await self._threads.call(
            self._engine.networks.create, name, subnet, gateway=gateway, masquerade=masquerade
        )

    async def get(self, name: str) -> NetworkDefinition:
        return await self._threads.call(self._engine.networks.get, name)

    async def list(self) -> list[NetworkDefinition]:
        return await self._threads.call(self._engine.networks.list)

    async def inspect(self, name: str) -> dict[str, Any]:
        return await self._threads.call(self._engine.networks.inspect, name)

    async def remove(self, name: str) -> None:
        await self._threads.call(self._engine.networks.remove, name)


class AsyncContainerEngine:
    """The engine for asyncio code: ``containers``, ``images``, ``networks``, ``events``.

    Wraps a :class:`ContainerEngine` (the process-wide one by default, as
    ``init_engine()`` made it): both faces share one warm engine.
    """

    def __init__(
        self,
        engine: ContainerEngine | None = None,
        *,
        max_workers: int = 32,
        max_waiters: int = 256,
    ) -> None:
        if engine is None:
            from codex32._engine.engine import get_engine

            engine = get_engine()
        self.sync = engine
        self._threads = _Threads(max_workers, max_waiters)
        self.containers = AsyncContainerCollection(engine, self._threads)
        self.images = AsyncImageCollection(engine, self._threads)
        self.networks = AsyncNetworkCollection(engine, self._threads)

    @classmethod
    async def start(
        cls, storage_dir: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> AsyncContainerEngine:
        """``await init_engine(storage_dir)`` (reconcile and recovery), then wrap it."""
        from codex32._engine.engine import init_engine

        return cls(await init_engine(storage_dir), **kwargs)

    @property
    def settings(self) -> Any:
        return self.sync.settings

    async def call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run any other synchronous engine call on the bounded pool."""
        return await self._threads.call(function, *args, **kwargs)

    async def event_list(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        filters: dict[str, list[str]] | None = None,
    ) -> list[Event]:
        """The past events (``docker events --until``)."""
        return await self._threads.call(
            lambda: list(self.sync.events(since=since, until=until, filters=filters))
        )

    def events(
        self,
        *,
        since: float | None = None,
        filters: dict[str, list[str]] | None = None,
    ) -> AsyncIterator[Event]:
        """Events as they are written, by any process (the CLI's, monitors'), from the
        engine's events file; with ``since``, the past ones from then on first."""
        return self._threads.stream(
            lambda stop: self.sync.events(since=since, filters=filters, follow=True, stop=stop)
        )

    async def close(self) -> None:
        """Stop the pools (not the engine: ``shutdown_engine()`` does that)."""
        self._threads.close()

    async def __aenter__(self) -> AsyncContainerEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
