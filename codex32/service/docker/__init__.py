"""The Docker-compatible socket: docker-py and the docker CLI drive Codex-32 unchanged.

An aiohttp server (it can answer ``101 UPGRADED`` hijacks and keep writing after the
client's half-close) serving the Docker Engine API over the service's engine, policy
and audit log, in the service's process. See docs/docker-compat.md.
"""

from __future__ import annotations

from .app import DockerServer, make_app, start_server
from .backend import DockerBackend
from .mapping import ISOLATION_LABEL

__all__ = ["ISOLATION_LABEL", "DockerBackend", "DockerServer", "make_app", "start_server"]
