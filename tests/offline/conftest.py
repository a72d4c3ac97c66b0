"""Fixtures of the offline tests: a real PostgreSQL (the machine's own on 127.0.0.1:5432 when
reachable, else an embedded one from pgserver) with one fresh database per test session,
dropped at the end; a real Redis database (flushed); demo catalogues under unique tenants."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from ocs.config import Settings
from ocs.offline.crypto import TenantCipher, tenant_cipher
from ocs.offline.db import Database, connect, migrate
from ocs.offline.sync import sync_catalogue
from ocs.offline.terms import DEMO_TERMS, load_terms
from ocs.rating.catalogue import Catalogue
from ocs.rating.loader import load_catalogue
from tests.balance.fixtures import db_url, flushed_client, redis_base_url

__all__ = ["redis_base_url"]

OFFLINE_REDIS_DB = 12
DEMO = Path(__file__).resolve().parents[2] / "policies" / "demo"
MASTER = bytes(range(32))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("OCS_TEST_DATABASE_URL")
    if explicit:
        yield explicit
        return
    if _reachable("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    import pgserver

    server: Any = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    name = f"ocs_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}"'))
    url = urlunsplit(urlsplit(pg_admin_url)._replace(path=f"/{name}"))
    asyncio.run(_migrate(url))
    try:
        yield url
    finally:
        asyncio.run(_admin(pg_admin_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def settings(pg_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=pg_url, data_dir=tmp_path)


@pytest.fixture
async def db(pg_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    database = await connect(Settings(database_url=pg_url, data_dir=tmp_path), max_size=6)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def redis(redis_base_url: str) -> AsyncIterator[Redis]:
    async for client in flushed_client(db_url(redis_base_url, OFFLINE_REDIS_DB)):
        yield client


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def catalogue_folder(folder: Path, tenant: str, extra: str = "") -> Path:
    """The demo catalogue renamed to ``tenant`` (plus ``extra`` YAML)."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in DEMO.glob("*.yaml"):
        text = item.read_text()
        if item.name == "tenant.yaml":
            text = text.replace("  id: demo\n", f"  id: {tenant}\n")
        (folder / item.name).write_text(text)
    if extra:
        (folder / "zz-extra.yaml").write_text(extra)
    return folder


@pytest.fixture
def catalogue(tmp_path: Path, tenant: str) -> Catalogue:
    return load_catalogue(catalogue_folder(tmp_path / "catalogue", tenant))


async def synced(db: Database, catalogue: Catalogue) -> TenantCipher:
    """Sync ``catalogue`` with the demo terms; returns the tenant's cipher."""
    tid = catalogue.tenant.id
    async with db.pool.acquire() as conn, conn.transaction():
        from ocs.offline.db import enter_tenant
        from ocs.offline.sync import upsert_tenant

        await enter_tenant(conn, tid)
        await upsert_tenant(conn, tid, "", "DE", "Europe/Berlin", "EUR")
        cipher = await tenant_cipher(conn, tid, MASTER)
        await sync_catalogue(conn, catalogue, cipher, load_terms(DEMO_TERMS))
    return cipher


@pytest.fixture
def redis_url_offline(redis_base_url: str) -> str:
    return db_url(redis_base_url, OFFLINE_REDIS_DB)
