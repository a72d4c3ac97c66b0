"""The scenario and differential tests run the whole money path: a real Redis (the balance
scripts), a real PostgreSQL (drain, re-rating, bill runs) and the charging application over
its real code. They reuse the offline suite's PostgreSQL (one fresh database per session)."""

from __future__ import annotations

from tests.offline.conftest import db, pg_admin_url, pg_url, redis, redis_base_url

__all__ = ["db", "pg_admin_url", "pg_url", "redis", "redis_base_url"]
