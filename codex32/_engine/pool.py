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
    """Ready sandboxes per shape, refilled (and dropped) by a thread of the engine."""

    def __init__(self, size: int, fork_server: ForkServer | None, cgroups: ContainerCgroups):
        self.size = size if fork_server is not None else 0
        self._fork_server = fork_server
        self._cgroups = cgroups
        self._ready: OrderedDict[Shape, deque[Sandbox]] = OrderedDict()
        self._dropping: list[Sandbox] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_take = 0.0
        self._retry_at = 0.0  # after failures to make one, the refill waits until then
        self.hits = 0  # starts that ran in a sandbox
        self.misses = 0  # starts that found none ready
        self.fallbacks = 0  # starts whose sandbox could not take them (started afresh)

    def take(self, plan: Plan) -> Sandbox | None:
        """A ready sandbox of the plan's shape, or None; ``done`` is to follow the start."""
        if self.size <= 0:
            return None
        shape = shape_of(plan)
        with self._lock:
            if self._closed:
                return None
            self._keep(shape)
            self._last_take = time.monotonic()
            queue = self._ready[shape]
            while queue:
                sandbox = queue.popleft()
                if sandbox.alive():
                    return sandbox
                self._dropping.append(sandbox)
        return None

    def done(self, taken: Sandbox | None, claimed: bool) -> None:
        """After the start that ``take`` served: count it and refill. Never raises (the
        start's outcome is the caller's)."""
        if self.size <= 0 and taken is None:
            return
        with self._lock:
            if taken is None:
                self.misses += 1
            elif claimed:
                self.hits += 1
            else:
                self.fallbacks += 1
            if self._closed:
                return
            try:
                self._ensure_thread()
            except RuntimeError as exc:  # no thread to be had: starts go on afresh
                log.warning("the sandbox pool cannot refill: %s", exc)
            self._lock.notify_all()

    def want(self, plan: Plan) -> None:
        """Keep sandboxes of the plan's shape from now on (filling starts at once)."""
        if self.size <= 0:
            return
        with self._lock:
            if self._closed:
                return
            self._keep(shape_of(plan))
            self._ensure_thread()
            self._lock.notify_all()

    def ready(self) -> dict[Shape, int]:
        """How many sandboxes wait per shape (``codex32 info``, tests)."""
        with self._lock:
            return {shape: len(queue) for shape, queue in self._ready.items()}

    def describe(self) -> dict[str, int]:
        """Size, sandboxes waiting (all shapes) and the starts so far (``info``)."""
        with self._lock:
            ready = sum(len(queue) for queue in self._ready.values())
            return {"size": self.size, "ready": ready, "hits": self.hits,
                    "misses": self.misses, "fallbacks": self.fallbacks}  # fmt: skip

    def wait_ready(self, timeout: float) -> bool:
        """Block until every shape asked for is full (tests, the bench, ``warm_pool``);
        False on time-out, or if the pool is off."""
        with self._lock:
            full = self._lock.wait_for(lambda: self._wanted() is None, timeout)
            return full and self.size > 0 and bool(self._ready)

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
            left += self._dropping
            self._ready.clear()
            self._dropping.clear()
        for sandbox in left:
            self._drop(sandbox)

    def _keep(self, shape: Shape) -> None:
        """Keep ``shape`` as the most recently asked for (lock held); the least recent
        beyond ``MAX_SHAPES`` is given up (its sandboxes dropped by the thread)."""
        self._ready.setdefault(shape, deque())
        self._ready.move_to_end(shape)
        while len(self._ready) > MAX_SHAPES:
            self._dropping.extend(self._ready.popitem(last=False)[1])

    def _ensure_thread(self) -> None:
        if self._thread is None:
            thread = threading.Thread(target=self._refill, name="codex32-pool", daemon=True)
            thread.start()
            self._thread = thread

    def _wanted(self) -> Shape | None:
        """The most recently asked-for shape that is short of ``size`` (lock held)."""
        for shape in reversed(self._ready):
            if len(self._ready[shape]) < self.size:
                return shape
        return None

    def _quiet_left(self) -> float:
        """Seconds to wait before making one: after a start (a burst may go on) or a
        failure (back off)."""
        return max(self._last_take + QUIET, self._retry_at) - time.monotonic()

    def _refill(self) -> None:
        failures = 0
        while True:
            with self._lock:
                self._lock.wait_for(
                    lambda: self._closed or bool(self._dropping) or self._wanted() is not None
                )
                dropping, self._dropping = self._dropping, []
                # Starts in a burst each take a sandbox ready: make new ones once the
                # burst is over, not between its starts (they would share the CPUs).
                while not dropping and not self._closed and (wait := self._quiet_left()) > 0:
                    self._lock.wait(wait)
                if self._closed:
                    self._dropping.extend(dropping)  # close() ends them
                    return
                shape = None if dropping else self._wanted()
            for old in dropping:
                self._drop(old)
            if shape is None:
                continue
            sandbox = self._make(shape)
            with self._lock:
                if sandbox is None:
                    failures += 1  # back off: 0.5 s, doubling up to a minute
                    self._retry_at = time.monotonic() + min(60.0, 0.5 * 2 ** (failures - 1))
                else:
                    failures = 0
                    if self._closed or shape not in self._ready:
                        self._dropping.append(sandbox)
                    else:
                        self._ready[shape].append(sandbox)
                self._lock.notify_all()

    def _make(self, shape: Shape) -> Sandbox | None:
        assert self._fork_server is not None
        try:
            sandbox = Sandbox.make(self._fork_server, shape)
        except Exception as exc:  # the thread lives on: the pool retries later
            log.warning("could not make a pooled sandbox: %s", exc)
            return None
        if sandbox is None:
            return None
        try:
            sandbox.cgroup = self._cgroups.hold(sandbox.pid)
        except Exception as exc:
            log.warning("could not place a pooled sandbox in a cgroup: %s", exc)
            self._drop(sandbox)
            return None
        return sandbox

    def _drop(self, sandbox: Sandbox) -> None:
        sandbox.discard()
        if sandbox.cgroup is not None:
            with contextlib.suppress(Codex32Error):
                sandbox.cgroup.destroy(kill=True)
