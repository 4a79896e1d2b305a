"""Health probes and the state machine of Docker's HEALTHCHECK.

``HealthTracker`` holds one run's health: ``starting`` until the first success (or
until ``retries`` failures after ``start_period``), ``healthy``, ``unhealthy`` after
``retries`` failures in a row. It only counts; the executor probes and acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from codex32.executor.backends import ProbeResult
from codex32.executor.models import HealthCheck, HealthState, HttpProbe, TcpProbe


@dataclass
class HealthTracker:
    check: HealthCheck
    started: float = field(default_factory=time.monotonic)
    state: HealthState = HealthState.STARTING
    failures: int = 0
    next_probe: float = 0.0
    probing: bool = False
    last_output: str = ""

    def __post_init__(self) -> None:
        self.next_probe = self.started + min(self.check.interval, 1.0)

    def due(self, now: float) -> bool:
        return not self.probing and now >= self.next_probe

    def record(self, result: ProbeResult, now: float) -> HealthState | None:
        """Count one probe; return the new state when it changed."""
        self.next_probe = now + self.check.interval
        self.last_output = result.output
        before = self.state
        if result.healthy:
            self.failures = 0
            self.state = HealthState.HEALTHY
        elif now - self.started < self.check.start_period and self.state is HealthState.STARTING:
            pass  # failures in the start period do not count
        else:
            self.failures += 1
            if self.failures >= self.check.retries:
                self.state = HealthState.UNHEALTHY
        return self.state if self.state is not before else None


async def probe_http(probe: HttpProbe, host: str, timeout: float) -> ProbeResult:
    """GET the URL in a thread (urllib); 200-399 is healthy, as Kubernetes' httpGet."""
    url = f"http://{probe.host or host}:{probe.port}{probe.path}"

    def get() -> ProbeResult:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return ProbeResult(200 <= answer.status < 400, f"GET {url}: {answer.status}")
        except urllib.error.HTTPError as error:
            return ProbeResult(False, f"GET {url}: {error.code}")
        except (OSError, ValueError) as error:
            return ProbeResult(False, f"GET {url}: {error}")

    try:
        return await asyncio.wait_for(asyncio.to_thread(get), timeout + 1)
    except TimeoutError:
        return ProbeResult(False, f"GET {url}: timed out after {timeout:g}s")


async def probe_tcp(probe: TcpProbe, host: str, timeout: float) -> ProbeResult:
    """Connect and close; an accepted connection is healthy."""
    target = probe.host or host
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target, probe.port), timeout
        )
    except (OSError, TimeoutError) as error:
        return ProbeResult(False, f"connect {target}:{probe.port}: {error or 'timed out'}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, f"connect {target}:{probe.port}: ok")
