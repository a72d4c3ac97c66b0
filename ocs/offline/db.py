"""The PostgreSQL connection, versioned migrations and tenant-scoped transactions.

``OCS_DATABASE_URL`` names the server; without it an embedded PostgreSQL (the ``pgserver``
package) is started with its data under ``<data_dir>/postgres``. The URL's user owns the
schema and runs the migrations; the application works as the role ``ocs_app`` (``SET LOCAL
ROLE`` in every transaction), which owns nothing, so the row-level security policies always
apply. Each transaction names its tenant with ``app.tenant``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.pool

from ocs.observability.logs import debug_only

APP_ROLE: Final = "ocs_app"
TENANT_SETTING: Final = "app.tenant"
MIGRATIONS_PACKAGE: Final = "ocs.offline.migrations"
MIGRATION_LOCK: Final = 0x0C5_0FF  # advisory lock id held while migrating
EMBEDDED_DIR: Final = "postgres"
HANDLES_FILE: Final = ".handle_pids.json"  # pgserver's list of the processes using a folder
CONNECT_TIMEOUT: Final = 10.0  # seconds to open a connection

Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


class DatabaseError(Exception):
    """The database cannot be reached or prepared (message names the cause)."""


@dataclass(slots=True)
class Database:
    """An open pool and, for the embedded server, the handle keeping it alive."""

    pool: Pool
    url: str
    embedded: Any = field(default=None)

    async def close(self) -> None:
        await self.pool.close()
        if self.embedded is not None:
            server, self.embedded = self.embedded, None
            await asyncio.to_thread(server.cleanup)

    @asynccontextmanager
    async def tenant(self, tenant: str) -> AsyncIterator[Connection]:
        """A transaction as the application role, restricted to ``tenant`` by RLS."""
        async with self.pool.acquire() as conn, conn.transaction():
            await enter_tenant(conn, tenant)
            yield conn


async def enter_tenant(conn: Connection, tenant: str) -> None:
    """Inside a transaction: become the application role and name the tenant."""
    await conn.execute(
        "SELECT set_config('role', $1, true), set_config($2, $3, true)",
        APP_ROLE,
        TENANT_SETTING,
        tenant,
    )


def embedded_url(data_dir: Path) -> tuple[str, Any]:
    """Start the embedded PostgreSQL under ``data_dir``, or attach to the one another
    process (``ocs billrun`` beside ``ocs cdr drain --follow``) started there; returns (url,
    handle). pgserver counts the processes using one data folder (under an inter-process
    lock) and the last one to close stops the server, so processes sharing a data dir never
    run two servers on it. Its start-up narration goes to the log at DEBUG level."""
    debug_only("pgserver")
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set", ...
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DatabaseError(
            "no OCS_DATABASE_URL and the embedded PostgreSQL (pgserver) is not installed"
        ) from exc
    folder = data_dir / EMBEDDED_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(folder)
        server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            folder, cleanup_mode="stop"
        )
        return str(server.get_uri()), server
    except (OSError, subprocess.SubprocessError) as exc:
        raise DatabaseError(
            f"embedded PostgreSQL in {folder}: cannot start: {exc} (its log: {folder / 'log'})"
        ) from exc


def _forget_dead_handles(folder: Path) -> None:
    """Drop the processes that died without closing from pgserver's list of the users of
    ``folder`` (a killed command stays in it for ever, and then nobody stops the server)."""
    handles = folder / HANDLES_FILE
    if not handles.exists():
        return
    from pgserver.postgres_server import PostgresServer  # noqa: PLC0415

    with PostgresServer._lock:
        try:
            pids = [int(p) for p in json.loads(handles.read_text())]
        except (OSError, ValueError, TypeError):
            return
        alive = [pid for pid in pids if _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def connect(
    settings: Any, *, min_size: int = 1, max_size: int = 8, migrate_now: bool = True
) -> Database:
    """Open the configured (or embedded) database and apply pending migrations. What keeps
    it from opening is a :class:`DatabaseError` naming the database and the reason."""
    configured: str | None = getattr(settings, "database_url", None)
    embedded = None
    if configured:
        url = configured
    else:
        url, embedded = await asyncio.to_thread(embedded_url, Path(settings.data_dir))
    where = redacted(configured) if configured else f"embedded PostgreSQL in {settings.data_dir}"
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT
        )
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        if embedded is not None:
            await asyncio.to_thread(embedded.cleanup)
        raise DatabaseError(f"database {where}: cannot connect: {exc}") from None
    db = Database(pool, url, embedded)
    if migrate_now:
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except BaseException:
            await db.close()
            raise
    return db


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every packaged migration, in version order."""
    out: list[tuple[int, str, str]] = []
    for item in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, item.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(conn: Connection) -> list[str]:
    """Apply the migrations not yet recorded in ``schema_migrations``, each in its own
    transaction, under an advisory lock. Returns the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    version,
                    name,
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


class LazyDatabase:
    """The database opened on first use, once (the API serves without PostgreSQL until a
    route reads drained records); :meth:`close` at shutdown."""

    def __init__(self, settings: Any, *, max_size: int = 4) -> None:
        self.settings = settings
        self.max_size = max_size
        self._db: Database | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Database:
        if self._db is None:
            async with self._lock:
                if self._db is None:
                    self._db = await connect(self.settings, max_size=self.max_size)
        return self._db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()
