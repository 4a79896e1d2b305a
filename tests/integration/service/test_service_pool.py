"""The service keeps a sandbox pool (2 per shape by default): its starts are pool hits.

Containers started through the API after the first of their shape come from the
pool, which ``/info`` counts; what they print is what a fresh start's would be
(``tests/integration/test_sandbox_pool.py`` compares the two in depth).
"""

from __future__ import annotations

import pytest

from service.service_support import API, Service, busybox, container, wait_for

pytestmark = pytest.mark.root


def _pool(service: Service) -> dict[str, int]:
    with service.client() as client:
        pool: dict[str, int] = client.get(f"{API}/info").json()["sandbox_pool"]
    return pool


def test_service_starts_come_from_its_pool(service: Service) -> None:
    assert _pool(service)["size"] == 2
    config = busybox("echo $((6 * 7))")
    before = _pool(service)
    with service.client() as client:
        for _ in range(4):
            with container(client, config) as cid:
                wait = client.post(f"{API}/containers/{cid}/wait").json()
                assert wait["exit_code"] == 0, wait
                logs = client.get(f"{API}/containers/{cid}/logs").text
                assert "42" in logs
            assert wait_for(lambda: _pool(service)["ready"] >= 2, timeout=10)
    after = _pool(service)
    assert after["hits"] - before["hits"] >= 3, (before, after)
