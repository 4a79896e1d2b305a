"""The executor's database: bots and their runs, through SQLAlchemy 2 (async).

SQLite in the storage directory by default (nothing to set up); PostgreSQL when
``DATABASE_URL=postgresql+asyncpg://...``. The schema belongs to the Alembic
migrations shipped in ``codex32/executor/migrations``; opening a store upgrades it
to the newest revision, so a new version of codex32 finds its tables.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from codex32.executor.models import (
    LIVE_RUN_STATES,
    Bot,
    BotRun,
    DeploymentType,
    HealthState,
    RunState,
)


class Base(DeclarativeBase):
    """The executor's tables (the migrations create them; this maps them)."""


class BotRow(Base):
    __tablename__ = "bots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    desired: Mapped[str] = mapped_column(String(16), default="stopped")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class RunRow(Base):
    __tablename__ = "bot_runs"
    __table_args__ = (UniqueConstraint("bot_id", "number", name="uq_bot_runs_bot_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    deployment_type: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    health: Mapped[str] = mapped_column(String(16), default="none")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_start_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    container_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pod_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    trigger: Mapped[str] = mapped_column(String(16), default="user")


def database_url(storage_dir: Path, url: str | None = None) -> str:
    """``url``, else ``DATABASE_URL``, else SQLite at ``STORAGE/executor/executor.db``."""
    chosen = url or os.environ.get("DATABASE_URL")
    if chosen:
        return chosen
    return f"sqlite+aiosqlite:///{storage_dir / 'executor' / 'executor.db'}"


def supervisor_lock(storage_dir: Path, url: str | None = None) -> Path:
    """The lock the supervising executor of this storage and database holds.

    One per database: two executors on one storage directory with their own databases
    (a test's, the host service's) each supervise their own bots.
    """
    import hashlib

    digest = hashlib.sha256(database_url(storage_dir, url).encode()).hexdigest()[:16]
    return storage_dir / "executor" / f"supervisor-{digest}.lock"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the CLI reads while a supervisor writes; foreign keys: runs go with their bot.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite's directory is made, its pragmas set."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on ``engine``'s database."""
    from alembic import command

    def run(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def _bot(row: BotRow) -> Bot:
    return Bot.model_validate(row.spec)


def _run(row: RunRow) -> BotRun:
    return BotRun(
        id=row.id,
        bot_id=row.bot_id,
        number=row.number,
        deployment_type=DeploymentType(row.deployment_type),
        state=RunState(row.state),
        health=HealthState(row.health),
        exit_code=row.exit_code,
        reason=row.reason,
        started_at=row.started_at,
        finished_at=row.finished_at,
        pid=row.pid,
        pid_start_time=row.pid_start_time,
        container_id=row.container_id,
        pod_name=row.pod_name,
        trigger=row.trigger,
    )


class BotStore:
    """Bots and runs in the database; every method is one short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, storage_dir: Path, url: str | None = None) -> BotStore:
        """Connect and bring the schema to the newest revision."""
        engine = make_engine(database_url(storage_dir, url))
        try:
            await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- bots --------------------------------------------------------------------

    async def save_bot(self, bot: Bot, desired: str | None = None) -> None:
        """Insert or update ``bot`` (its spec, and ``desired`` when given)."""
        now = time.time()
        spec = bot.model_dump(mode="json")
        async with self._sessions.begin() as session:
            row = await session.get(BotRow, bot.id)
            if row is None:
                session.add(
                    BotRow(
                        id=bot.id,
                        name=bot.name,
                        spec=spec,
                        desired=desired or "stopped",
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                row.name, row.spec, row.updated_at = bot.name, spec, now
                if desired is not None:
                    row.desired = desired

    async def set_desired(self, bot_id: str, desired: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(BotRow)
                .where(BotRow.id == bot_id)
                .values(desired=desired, updated_at=time.time())
            )

    async def get_bot(self, bot_id_or_name: str) -> tuple[Bot, str] | None:
        """The bot with this id (or name, or unique id prefix) and its desired state."""
        async with self._sessions() as session:
            row = await session.get(BotRow, bot_id_or_name)
            if row is None:
                row = (
                    await session.execute(select(BotRow).where(BotRow.name == bot_id_or_name))
                ).scalar_one_or_none()
            if row is None and len(bot_id_or_name) >= 4:
                rows = (
                    (
                        await session.execute(
                            select(BotRow).where(BotRow.id.startswith(bot_id_or_name))
                        )
                    )
                    .scalars()
                    .all()
                )
                row = rows[0] if len(rows) == 1 else None
            return None if row is None else (_bot(row), row.desired)

    async def list_bots(self) -> list[tuple[Bot, str]]:
        async with self._sessions() as session:
            rows = (await session.execute(select(BotRow).order_by(BotRow.created_at))).scalars()
            return [(_bot(r), r.desired) for r in rows]

    async def delete_bot(self, bot_id: str) -> None:
        async with self._sessions.begin() as session:
            for run in (
                await session.execute(select(RunRow).where(RunRow.bot_id == bot_id))
            ).scalars():
                await session.delete(run)
            row = await session.get(BotRow, bot_id)
            if row is not None:
                await session.delete(row)

    # -- runs --------------------------------------------------------------------

    async def add_run(self, run: BotRun) -> BotRun:
        """Record a new run; its number is the bot's next."""
        async with self._sessions.begin() as session:
            last = (
                await session.execute(
                    select(RunRow.number)
                    .where(RunRow.bot_id == run.bot_id)
                    .order_by(RunRow.number.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            data = run.model_dump(exclude={"id"})
            data["number"] = (last or 0) + 1
            data["deployment_type"] = run.deployment_type.value
            data["state"], data["health"] = run.state.value, run.health.value
            row = RunRow(**data)
            session.add(row)
            await session.flush()
            return _run(row)

    async def update_run(self, run_id: int, *, only_live: bool = False, **values: Any) -> bool:
        """Change a run; with ``only_live``, only while it is live. Whether it changed."""
        clean = {k: (v.value if hasattr(v, "value") else v) for k, v in values.items()}
        query = update(RunRow).where(RunRow.id == run_id)
        if only_live:
            query = query.where(RunRow.state.in_([s.value for s in LIVE_RUN_STATES]))
        async with self._sessions.begin() as session:
            result = await session.execute(query.values(**clean))
            return bool(getattr(result, "rowcount", 0))

    async def runs(self, bot_id: str, limit: int | None = None) -> list[BotRun]:
        """The bot's runs, newest first."""
        async with self._sessions() as session:
            query = select(RunRow).where(RunRow.bot_id == bot_id).order_by(RunRow.number.desc())
            if limit:
                query = query.limit(limit)
            return [_run(r) for r in (await session.execute(query)).scalars()]

    async def latest_run(self, bot_id: str) -> BotRun | None:
        found = await self.runs(bot_id, limit=1)
        return found[0] if found else None

    async def live_runs(self) -> Sequence[BotRun]:
        async with self._sessions() as session:
            query = select(RunRow).where(RunRow.state.in_([s.value for s in LIVE_RUN_STATES]))
            return [_run(r) for r in (await session.execute(query)).scalars()]
