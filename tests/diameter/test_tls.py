"""Diameter over TLS (RFC 6733 13: TLS/TCP): the server takes a certificate from settings."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.codec import decode
from ocs.diameter.constants import ResultCode
from ocs.diameter.framer import Framer
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import connect
from ocs.process import start

from .helpers import ccr, cer


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=ocs.test",
            "-addext",
            "subjectAltName=DNS:ocs.test,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_cer_and_ccr_over_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    settings = Settings(
        host="127.0.0.1",
        port=0,
        origin_host="ocs.test",
        origin_realm="test",
        tls_cert=cert,
        tls_key=key,
        peers=[{"origin_host": "pgw.test", "addresses": ["127.0.0.1"]}],
    )
    runtime = await start(settings)
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        identity = Identity("pgw.test", "test")
        proto = await connect(
            Node(identity),
            LocalConfig(identity=identity),
            "127.0.0.1",
            runtime.server.port,
            ssl_context=client_ctx,
        )
        assert proto.peer.remote is not None and proto.peer.remote.origin_host == "ocs.test"
        answer = await proto.send_request(ccr())
        # No charging application is attached here: the node answers 3007 over TLS.
        assert answer.get(A.AVP_RESULT_CODE) == ResultCode.DIAMETER_APPLICATION_UNSUPPORTED
        assert answer.get(A.AVP_ORIGIN_HOST) == "ocs.test"
    finally:
        await runtime.stop()
    await proto.closed


# -- mutual TLS: the client certificate must name the configured peer ----------------------
def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path, certificate: tuple[Path, Path]) -> dict[str, tuple[Path, Path]]:
    """A CA and client certificates it signed: CN pgw.test, and CN rogue.test."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    _openssl(
        "req", "-x509", *ec, "-days", "1", "-subj", "/CN=test-ca", "-keyout", ca_key, "-out", ca
    )
    out = {"server": certificate, "ca": (ca, ca_key)}
    for name in ("pgw.test", "rogue.test"):
        key, csr, pem = (tmp_path / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        _openssl("req", "-new", *ec, "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        _openssl(
            "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "1", "-out", pem,
        )  # fmt: skip
        out[name] = (pem, key)
    return out


async def _cea_over_tls(port: int, server_cert: Path, client: tuple[Path, Path]) -> int:
    """The Result-Code of the CEA to our CER (Origin-Host pgw.test) under ``client``'s
    certificate."""
    ctx = ssl.create_default_context(cafile=str(server_cert))
    ctx.load_cert_chain(str(client[0]), str(client[1]))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="ocs.test"
    )
    try:
        writer.write(cer().encode())
        framer = Framer()
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "closed without a CEA"
            if answers := framer.feed(data):
                return int(decode(answers[0]).get(A.AVP_RESULT_CODE, 0))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@pytest.mark.parametrize("addresses", [["127.0.0.1"], []], ids=["address+cert", "cert-only"])
async def test_client_certificate_must_name_the_peer(
    pki: dict[str, tuple[Path, Path]], addresses: list[str]
) -> None:
    server_cert, server_key = pki["server"]
    settings = Settings(
        host="127.0.0.1",
        port=0,
        origin_host="ocs.test",
        origin_realm="test",
        tls_cert=server_cert,
        tls_key=server_key,
        tls_ca=pki["ca"][0],
        peers=[{"origin_host": "pgw.test", "addresses": addresses}],
    )
    runtime = await start(settings)
    try:
        port = runtime.server.port
        good = await _cea_over_tls(port, server_cert, pki["pgw.test"])
        assert good == ResultCode.DIAMETER_SUCCESS
        rogue = await _cea_over_tls(port, server_cert, pki["rogue.test"])
        assert rogue == ResultCode.DIAMETER_UNKNOWN_PEER  # a valid certificate, another name
    finally:
        await runtime.stop()


def test_a_peer_without_addresses_needs_tls_client_certificates() -> None:
    with pytest.raises(ValidationError, match="no addresses"):
        Settings(peers=[{"origin_host": "pgw.test"}])
