"""Alembic's environment for the executor's schema.

The executor runs migrations on a connection it already holds (``db.upgrade`` hands
it over in ``config.attributes["connection"]``); the ``alembic`` command line, with
``-x url=...`` or ``DATABASE_URL``, gets an async engine of its own.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from codex32.executor.db import Base, make_engine

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True)  # fmt: skip
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ["DATABASE_URL"]
    asyncio.run(_run_online(url))
