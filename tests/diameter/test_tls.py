"""Diameter over TLS (RFC 6733 13: TLS/TCP): the server takes a certificate from settings."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.constants import ResultCode
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import connect
from ocs.server import start

from .helpers import ccr


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
