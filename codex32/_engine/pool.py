"""The sandbox pool: containers start in namespaces made before they were asked for.

Per shape (a plan's namespaces and id maps) the pool keeps up to ``size`` sandboxes
ready (``_runtime.sandbox``): forked by the fork server, their namespaces entered,
PID 1 waiting, and on v1 already moved into a cgroup of their own, so that the
kernel's RCU grace period of that move is paid off the start's path. A start takes
one if its shape has one ready, renames that cgroup to the container's and writes
the limits (``ContainerCgroups.adopt``), wires the network and lets PID 1 go on with
the container's plan: mounts, hostname, capabilities, seccomp, exec, as a fresh
start. A sandbox serves one container; a start that finds none starts afresh and
the pool begins to keep that shape. A background thread refills, one sandbox at a
time. Size 0 (the default of the library; ``CODEX32_SANDBOX_POOL``) disables it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque

from codex32._cgroups.containers import ContainerCgroups
from codex32._plan.plan import Plan
from codex32._runtime.launch import ForkServer
from codex32._runtime.sandbox import Sandbox, Shape, shape_of
from codex32.errors import Codex32Error

log = logging.getLogger(__name__)

#: Shapes kept at once (the least recently asked for is dropped beyond that).
MAX_SHAPES = 4
#: Seconds without a start before the pool makes sandboxes again.
QUIET = 0.03


class SandboxPool:
    """Ready sandboxes per shape, refilled by a thread of the engine."""

    def __init__(self, size: int, fork_server: ForkServer | None, cgroups: ContainerCgroups):
        self.size = size if fork_server is not None else 0
        self._fork_server = fork_server
        self._cgroups = cgroups
        self._ready: OrderedDict[Shape, deque[Sandbox]] = OrderedDict()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.hits = 0
        self.misses = 0
        self._last_take = 0.0

    def take(self, plan: Plan) -> Sandbox | None:
        """A ready sandbox of the plan's shape (the pool then refills), or None."""
        if self.size <= 0:
            return None
        shape = shape_of(plan)
        stale: list[Sandbox] = []
        found: Sandbox | None = None
        with self._lock:
            if self._closed:
                return None
            queue = self._ready.setdefault(shape, deque())
            self._ready.move_to_end(shape)
            while queue and found is None:
                sandbox = queue.popleft()
                if sandbox.alive():
                    found = sandbox
                else:
                    stale.append(sandbox)
            while len(self._ready) > MAX_SHAPES:
                stale.extend(self._ready.popitem(last=False)[1])
            self._last_take = time.monotonic()
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
        for sandbox in stale:
            self._drop(sandbox)
        return found

    def want(self, plan: Plan) -> None:
        """Keep sandboxes of the plan's shape from now on (filling starts at once)."""
        if self.size <= 0:
            return
        with self._lock:
            self._ready.setdefault(shape_of(plan), deque())
            self._ready.move_to_end(shape_of(plan))
            stale: list[Sandbox] = []
            while len(self._ready) > MAX_SHAPES:
                stale.extend(self._ready.popitem(last=False)[1])
        for sandbox in stale:
            self._drop(sandbox)
        self.replenish()

    def replenish(self) -> None:
        """Refill what ``take`` used, now: called once the start that took it is done,
        so that making the next sandboxes (three forks, namespaces) does not compete
        with that start for the CPUs."""
        if self.size <= 0:
            return
        with self._lock:
            if not self._closed:
                self._ensure_thread()
                self._lock.notify_all()

    def ready(self) -> dict[Shape, int]:
        """How many sandboxes wait per shape (``codex32 info``, tests)."""
        with self._lock:
            return {shape: len(queue) for shape, queue in self._ready.items()}

    def describe(self) -> dict[str, int]:
        """Size, sandboxes waiting (all shapes), hits and misses so far (``info``)."""
        with self._lock:
            ready = sum(len(queue) for queue in self._ready.values())
            return {"size": self.size, "ready": ready, "hits": self.hits, "misses": self.misses}

    def wait_ready(self, timeout: float) -> bool:
        """Block until every shape asked for is full (tests, the bench); False on time-out."""
        with self._lock:
            return self._lock.wait_for(lambda: self._wanted() is None, timeout)

    def close(self) -> None:
        """Stop refilling and end every waiting sandbox (its PID 1 dies unused)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._lock:
            left = [sandbox for queue in self._ready.values() for sandbox in queue]
            self._ready.clear()
        for sandbox in left:
            self._drop(sandbox)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._refill, name="codex32-pool", daemon=True)
            self._thread.start()

    def _wanted(self) -> Shape | None:
        """The most recently asked-for shape that is short of ``size`` (lock held)."""
        for shape in reversed(self._ready):
            if len(self._ready[shape]) < self.size:
                return shape
        return None

    def _refill(self) -> None:
        failures = 0
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or self._wanted() is not None)
                # Starts in a burst each take a sandbox ready: make new ones once the
                # burst is over, not between its starts (they would share the CPUs).
                while not self._closed and (wait := self._quiet_left()) > 0:
                    self._lock.wait(wait)
                if self._closed:
                    return
                shape = self._wanted()
            if shape is None:
                continue
            sandbox = self._make(shape)
            with self._lock:
                keep = sandbox is not None and not self._closed and shape in self._ready
                if keep:
                    assert sandbox is not None
                    self._ready[shape].append(sandbox)
                    failures = 0
                self._lock.notify_all()
            if sandbox is not None and not keep:
                self._drop(sandbox)
            if sandbox is None:
                failures += 1
                if failures >= 3:  # the host cannot make them: stop trying, start afresh
                    log.warning("sandbox pool disabled after %d failures", failures)
                    with self._lock:
                        self.size = 0
                        self._lock.notify_all()
                    return

    def _quiet_left(self) -> float:
        return self._last_take + QUIET - time.monotonic()

    def _make(self, shape: Shape) -> Sandbox | None:
        assert self._fork_server is not None
        try:
            sandbox = Sandbox.make(self._fork_server, shape)
        except (Codex32Error, OSError) as exc:
            log.warning("could not make a pooled sandbox: %s", exc)
            return None
        if sandbox is None:
            return None
        try:
            sandbox.cgroup = self._cgroups.hold(sandbox.pid)
        except Codex32Error as exc:
            log.warning("could not place a pooled sandbox in a cgroup: %s", exc)
            self._drop(sandbox)
            return None
        return sandbox

    def _drop(self, sandbox: Sandbox) -> None:
        sandbox.discard()
        if sandbox.cgroup is not None:
            with contextlib.suppress(Codex32Error):
                sandbox.cgroup.destroy(kill=True)
