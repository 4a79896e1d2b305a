"""Many callers at once: 50 parallel creations, and long waits that do not hold others up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from service.service_support import API, Service, busybox

pytestmark = pytest.mark.root

PARALLEL = 50


def test_fifty_parallel_creations_no_failure_no_leak(service: Service, storage_dir: Path) -> None:
    async def scenario() -> None:
        async with service.async_client() as client:
            creations = [
                client.post(
                    f"{API}/containers",
                    params={"start": True},
                    json=busybox("sleep 60", name=f"par-{i}"),
                )
                for i in range(PARALLEL)
            ]
            created = await asyncio.gather(*creations)
            failures = [r.text for r in created if r.status_code != 201]
            ids = [r.json()["id"] for r in created if r.status_code == 201]
            try:
                assert failures == []
                running = (await client.get(f"{API}/containers", params={"name": "^par-"})).json()
                assert sorted(c["name"] for c in running) == sorted(
                    f"par-{i}" for i in range(PARALLEL)
                )
                assert {c["status"] for c in running} == {"running"}
            finally:
                removals = [
                    client.delete(f"{API}/containers/{cid}", params={"force": True}) for cid in ids
                ]
                removed = await asyncio.gather(*removals)
            refused = [(r.status_code, r.text) for r in removed if r.status_code != 204]
            assert refused == []
            left = (await client.get(f"{API}/containers", params={"all": True})).json()
            assert [c["name"] for c in left if c["name"].startswith("par-")] == []

    asyncio.run(scenario())
    assert not [p for p in (storage_dir / "names").iterdir() if p.name.startswith("par-")]


def test_long_waits_and_follows_do_not_delay_other_requests(service: Service) -> None:
    async def scenario() -> float:
        async with service.async_client() as client:
            created = await client.post(
                f"{API}/containers",
                params={"start": True},
                json=busybox("echo up; sleep 30", name="long-one"),
            )
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            try:
                waits = [client.post(f"{API}/containers/{cid}/wait") for _ in range(10)]
                follows = [
                    client.get(f"{API}/containers/{cid}/logs", params={"follow": True})
                    for _ in range(5)
                ]
                attached = client.post(
                    f"{API}/containers/run", json=busybox("sleep 4", auto_remove=True)
                )
                pending = [asyncio.ensure_future(c) for c in [*waits, *follows, attached]]
                await asyncio.sleep(1.0)  # all of them blocked in the service by now
                assert not any(p.done() for p in pending)
                slowest = 0.0
                for _ in range(20):
                    started = time.monotonic()
                    response = await client.get(f"{API}/containers/{cid}")
                    assert response.status_code == 200
                    assert (await client.get("/health")).status_code == 200
                    slowest = max(slowest, time.monotonic() - started)
                assert not any(p.done() for p in pending[:15])
                await client.post(f"{API}/containers/{cid}/kill")
                results = await asyncio.gather(*pending)
                assert [r.json()["exit_code"] for r in results[:10]] == [137] * 10
                assert [r.text for r in results[10:15]] == ["up\n"] * 5
                assert results[15].json()["exit_code"] == 0
                return slowest
            finally:
                await client.delete(f"{API}/containers/{cid}", params={"force": True})

    slowest = asyncio.run(scenario())
    # Blocked, a request would wait for the kill (30 s); 3 s leaves room for a busy host.
    assert slowest < 3.0, f"a plain request took {slowest:.2f} s while others waited"
