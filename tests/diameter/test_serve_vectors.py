"""Every request of the real captures (tests/vectors/*.hex), sent to `ocs serve` over TCP after
our own CER, gets a well-formed answer.

The captured requests keep their own Origin-Host and end-to-end ids, so a request the capture
retransmitted (same Origin-Host and end-to-end id) gets our stored answer, as RFC 6733 6.2 wants.
Requests of applications we do not serve (Gx, S6a in the Magma captures) must still be answered,
with DIAMETER_APPLICATION_UNSUPPORTED. The answers in the captures are not sent. Our test peer
is configured as a routing agent relaying for the captures' gateways.
"""

from __future__ import annotations

import json
from pathlib import Path

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import decode
from ocs.diameter.constants import FLAG_REQUEST, Application, ResultCode

from .conftest import load_vector_file, vector_files
from .helpers import CLIENT_HOST
from .test_cli_serve import OcsServe, clean_env, open_peer

ORIGIN_HOST, ORIGIN_REALM = "ocs.test", "test"


def requests_of(path: Path) -> list[bytes]:
    return [raw for raw in load_vector_file(path) if raw[4] & FLAG_REQUEST]


async def check_capture(path: Path, port: int) -> dict[int, int]:
    """Send every request of one capture over a fresh connection; returns Result-Code counts."""
    requests = requests_of(path)
    assert requests, f"{path.name} holds no request"
    codes: dict[int, int] = {}
    peer = await open_peer(port)
    try:
        for index, raw in enumerate(requests):
            request = decode(raw)
            await peer.send(raw)
            answer = decode(await peer.recv_raw())
            where = f"{path.stem}[{index}] command {request.command} app {request.app_id}"
            assert not answer.is_request, where
            assert answer.command == request.command, where
            assert answer.app_id == request.app_id, where
            assert (answer.hbh_id, answer.e2e_id) == (request.hbh_id, request.e2e_id), where
            result = answer.get(A.AVP_RESULT_CODE)
            assert isinstance(result, int), where
            assert answer.get(A.AVP_ORIGIN_HOST) == ORIGIN_HOST, where
            assert answer.get(A.AVP_ORIGIN_REALM) == ORIGIN_REALM, where
            session = request.get(A.AVP_SESSION_ID)
            if session is not None:
                assert answer.get(A.AVP_SESSION_ID) == session, where
                assert answer.avps[0].key == A.AVP_SESSION_ID, where  # RFC 6733 8.8
            if request.app_id not in (Application.COMMON, Application.CREDIT_CONTROL):
                assert result == ResultCode.DIAMETER_APPLICATION_UNSUPPORTED, where
                assert answer.is_error, where
            codes[result] = codes.get(result, 0) + 1
    finally:
        await peer.close()
    assert sum(codes.values()) == len(requests)
    return codes


def relay_of(paths: list[Path]) -> dict[str, object]:
    """Our test peer as a routing agent relaying for every gateway of the captures (their
    requests carry the capturing gateway's Origin-Host, not our test peer's)."""
    hosts = {
        str(decode(raw).get(A.AVP_ORIGIN_HOST, "")) for path in paths for raw in requests_of(path)
    }
    return {"origin_host": CLIENT_HOST, "addresses": ["127.0.0.1"], "relays_for": sorted(hosts)}


async def test_every_captured_request_gets_a_well_formed_answer(tmp_path: Path) -> None:
    """One `ocs serve` for all captures (it starts embedded services: seconds, not ms)."""
    paths = vector_files()
    assert len(paths) >= 8
    server = await OcsServe.start(
        tmp_path,
        *("--host", "127.0.0.1", "--port", "0"),
        *("--origin-host", ORIGIN_HOST, "--origin-realm", ORIGIN_REALM),
        env=clean_env(tmp_path, OCS_PEERS=json.dumps([relay_of(paths)])),
    )
    try:
        answered = {path.stem: await check_capture(path, server.port) for path in paths}
    finally:
        exit_code = await server.stop()
    assert exit_code == 0
    assert all(answered.values())
