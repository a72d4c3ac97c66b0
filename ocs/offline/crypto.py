"""Subscriber identifiers at rest: per-tenant keys, AES-GCM encryption, HMAC blind index.

Decision: application-side AES-256-GCM (``cryptography``) rather than pgcrypto, so plain
IMSIs never travel to the server or appear in its logs. Each tenant has a 64-byte data key
(32 bytes encryption, 32 bytes blind index) stored in ``tenant_keys`` wrapped by the
installation master key (AES-GCM, the tenant id as associated data), so a row copied to
another tenant cannot be decrypted. The master key comes from the setting
``offline_master_key`` (hex) when present, else ``<data_dir>/offline-master.key`` (created
with mode 0600 on first use). Lookups use the blind index ``HMAC-SHA256(index key, value)``
truncated to 16 bytes: equal values match, the value cannot be recovered from the index.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ocs.offline.db import Connection

MASTER_FILE: Final = "offline-master.key"
NONCE: Final = 12
BIDX_LEN: Final = 16


def master_key(settings: Any) -> bytes:
    explicit: str | None = getattr(settings, "offline_master_key", None)
    if explicit:
        return bytes.fromhex(explicit)
    path = Path(settings.data_dir) / MASTER_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex())
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True, slots=True)
class TenantCipher:
    tenant: str
    enc_key: bytes
    idx_key: bytes

    def encrypt(self, value: str) -> bytes:
        nonce = os.urandom(NONCE)
        aad = self.tenant.encode()
        return nonce + AESGCM(self.enc_key).encrypt(nonce, value.encode(), aad)

    def decrypt(self, blob: bytes) -> str:
        aad = self.tenant.encode()
        return AESGCM(self.enc_key).decrypt(blob[:NONCE], blob[NONCE:], aad).decode()

    def bidx(self, value: str) -> bytes:
        return hmac.new(self.idx_key, value.encode(), hashlib.sha256).digest()[:BIDX_LEN]


def _unwrap(tenant: str, wrapped: bytes, master: bytes) -> TenantCipher:
    raw = bytes(wrapped)
    key = AESGCM(master).decrypt(raw[:NONCE], raw[NONCE:], tenant.encode())
    return TenantCipher(tenant, key[:32], key[32:])


async def stored_cipher(conn: Connection, tenant: str, master: bytes) -> TenantCipher | None:
    """The tenant's cipher if its key exists (a reader: creates nothing). Every drained
    record was stored after its tenant's key, so without a key there is no record."""
    wrapped = await conn.fetchval(
        "SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1", tenant
    )
    return None if wrapped is None else _unwrap(tenant, wrapped, master)


async def tenant_cipher(conn: Connection, tenant: str, master: bytes) -> TenantCipher:
    """The tenant's cipher; creates and stores its wrapped key on first use. ``conn`` must
    be in a transaction scoped to ``tenant``."""
    wrapped = await conn.fetchval(
        "SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1", tenant
    )
    aad = tenant.encode()
    if wrapped is None:
        await conn.execute(
            "INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant
        )
        key = os.urandom(64)
        nonce = os.urandom(NONCE)
        blob = nonce + AESGCM(master).encrypt(nonce, key, aad)
        await conn.execute(
            "INSERT INTO tenant_keys (tenant_id, wrapped_key) VALUES ($1, $2)"
            " ON CONFLICT (tenant_id) DO NOTHING",
            tenant,
            blob,
        )
        wrapped = await conn.fetchval(
            "SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1", tenant
        )
    return _unwrap(tenant, wrapped, master)
