"""``codex32 db init`` and ``db upgrade``: the original ``setup_database.sh``, in Python.

``init`` with a PostgreSQL superuser's URL creates the role (with a password) and the
database it owns, migrates it and returns the URL the executor then uses
(``DATABASE_URL``); without one it makes the SQLite database in the storage directory.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url

from codex32 import ConfigError
from codex32.executor.db import current_revision, database_url, make_engine, upgrade

_IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def init_database(
    storage_dir: Path, admin_url: str | None, database: str, user: str, password: str | None
) -> str:
    """Create what is missing; return the database's URL (with its password)."""
    if admin_url is None:
        url = database_url(storage_dir)
        if not url.startswith("sqlite"):
            raise ConfigError(
                "DATABASE_URL names a server database",
                hint="give --admin-url to create it, or 'db upgrade' to migrate",
            )
        await upgrade_database(storage_dir, url)
        return url
    for what, name in (("database", database), ("user", user)):
        if not re.fullmatch(_IDENTIFIER, name):
            raise ConfigError(f"{what} name {name!r}: use lower-case letters, digits and _")
    admin = make_url(admin_url)
    if not admin.drivername.startswith("postgresql"):
        raise ConfigError(
            f"--admin-url {admin_url!r} is no PostgreSQL URL",
            hint="postgresql://postgres@localhost:5432/postgres",
        )
    import asyncpg

    password = password or secrets.token_urlsafe(18)
    try:
        conn = await asyncpg.connect(
            host=admin.host,
            port=admin.port,
            user=admin.username,
            password=admin.password,
            database=admin.database or "postgres",
        )
    except (OSError, asyncpg.PostgresError) as error:
        raise ConfigError(
            f"cannot connect to PostgreSQL at {admin.host}:{admin.port}: {error}",
            hint="is the server up, and the URL a superuser's?",
        ) from None
    try:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
            await conn.execute(f'ALTER ROLE "{user}" WITH LOGIN PASSWORD {_literal(password)}')
        else:
            await conn.execute(f'CREATE ROLE "{user}" WITH LOGIN PASSWORD {_literal(password)}')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
    finally:
        await conn.close()
    url = (
        f"postgresql+asyncpg://{quote(user)}:{quote(password, safe='')}@{admin.host}"
        f"{f':{admin.port}' if admin.port else ''}/{database}"
    )
    await upgrade_database(storage_dir, url)
    return url


async def upgrade_database(
    storage_dir: Path, url: str | None = None, revision: str = "head"
) -> str:
    """Migrate; return ``URL: revision`` (the password hidden)."""
    target = database_url(storage_dir, url)
    engine = make_engine(target)
    try:
        await upgrade(engine, revision)
        now = await current_revision(engine)
    finally:
        await engine.dispose()
    return f"{make_url(target).render_as_string(hide_password=True)}: at revision {now}"
