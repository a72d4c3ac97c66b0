"""Every answer of the Nchf endpoint against TS 32.291 Release 17 (tests/sbi/conformance.py:
status named by the operation, body valid against its schema with every reference, media
type, Location), over HTTP/2 with prior knowledge: a stateful run create -> update -> retry ->
release on several sessions, each error the spec names, and bodies schemathesis generates
from the spec itself (valid and not), none of which may get a 5xx or an undocumented answer."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from ocs.balance import BalanceStore
from ocs.charging.config import ChargingConfig
from tests.charging.conftest import settings_for
from tests.charging.helpers import SUSPENDED_IMSI
from tests.charging.nchf_client import nchf_served
from tests.sbi.conformance import CREATE_OP, RELEASE_OP, UPDATE_OP, NchfConformance
from tests.sbi.nchf_requests import CREATE, charging_data_request, release_path, update_path
from tests.sbi.oracle import specs_or_skip

NOTIFY = "http://127.0.0.1:9/nsmf-callback/notify_1"
FUZZ_EXAMPLES = 10  # bodies generated per operation and mode (valid, invalid)


def imsi_of(n: int) -> str:
    return str(262010000000000 + n)


async def test_a_stateful_run_and_every_error_conform(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    specs = specs_or_skip()
    async with (
        nchf_served(settings_for(redis_url, config)) as served,
        NchfConformance(specs, served.port) as nchf,
    ):
        for session in range(3):
            imsi = imsi_of(session)
            created, ref = await nchf.create(
                charging_data_request(imsi, 0, msisdn=f"49170000{session:04d}", notify_uri=NOTIFY)
            )
            assert created.status_code == 201, created.text
            assert ref is not None
            body: dict[str, Any] = {}
            for n in (1, 2, 3):
                body = charging_data_request(imsi, n, used=300_000, triggers=["QUOTA_THRESHOLD"])
                updated = await nchf.update(ref, body)
                assert updated.status_code == 200, updated.text
            again = await nchf.update(ref, body)  # a retry: the same answer, charged once
            assert again.status_code == 200 and again.json() == updated.json()
            final = charging_data_request(imsi, 4, requested=None, used=1_000, triggers=["FINAL"])
            released = await nchf.release(ref, final)
            assert released.status_code == 204, released.text
            assert (await nchf.update(ref, charging_data_request(imsi, 5))).status_code == 404
            assert (await nchf.release(ref, final)).status_code == 204  # a retried release
        # what the spec names as errors, each a ProblemDetails
        unknown = "0123456789abcdef0123456789abcdef-demo"
        assert (await nchf.update(unknown, charging_data_request(imsi_of(0), 1))).is_error
        assert (await nchf.release("nonsense", charging_data_request(imsi_of(0), 1))).is_error
        assert (await nchf.post(CREATE_OP, CREATE, None, raw=b"{not json")).status_code == 400
        no_isn = charging_data_request(imsi_of(1), 0)
        del no_isn["invocationSequenceNumber"]
        assert (await nchf.post(CREATE_OP, CREATE, no_isn)).status_code == 400
        stranger = charging_data_request("001019999999999", 0)  # no tenant's SIM
        assert (await nchf.create(stranger))[0].is_error
        suspended = charging_data_request(SUSPENDED_IMSI, 0)
        assert (await nchf.create(suspended))[0].status_code in (201, 403)
        huge = json.dumps(charging_data_request(imsi_of(2), 0) | {"pad": "x" * 200_000})
        assert (await nchf.post(CREATE_OP, CREATE, None, raw=huge.encode())).status_code == 413
    statuses = {(op, status) for op, status in nchf.seen}
    assert {(CREATE_OP, 201), (UPDATE_OP, 200), (RELEASE_OP, 204), (CREATE_OP, 400)} <= statuses
    assert {(UPDATE_OP, 404), (RELEASE_OP, 404)} <= statuses


@functools.cache
def generated(folder: Path, operation: str, count: int) -> list[Any]:
    """``count`` request bodies schemathesis draws for ``operation`` (valid ones and, through
    its negative mode, as many invalid ones), collected before any is sent (once a run)."""
    schema = schemathesis.openapi.from_path(str(folder / "TS32291_Nchf_ConvergedCharging.yaml"))
    api_operation = schema[operation]["POST"]
    bodies: list[Any] = []
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
        strategy = api_operation.as_strategy(generation_mode=mode)

        @settings(
            max_examples=count,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(strategy)
        def collect(case: Any) -> None:
            bodies.append(case.body)

        collect()
    return bodies


@pytest.mark.slow
@pytest.mark.timeout(900)  # schemathesis compiles the spec's schemas, slow on a busy machine
async def test_generated_bodies_get_documented_answers_and_never_a_server_error(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    specs = specs_or_skip()
    ops = (CREATE_OP, UPDATE_OP, RELEASE_OP)
    cases = {op: generated(specs.folder, op, FUZZ_EXAMPLES) for op in ops}
    async with (
        nchf_served(settings_for(redis_url, config)) as served,
        NchfConformance(specs, served.port) as nchf,
    ):
        created, ref = await nchf.create(charging_data_request(imsi_of(7), 0))
        assert ref is not None, created.text
        paths = {CREATE_OP: CREATE, UPDATE_OP: update_path(ref), RELEASE_OP: release_path(ref)}
        for op, bodies in cases.items():
            for body in bodies:
                raw = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
                answer = await nchf.post(op, paths[op], None, raw=raw)
                assert answer.status_code < 500, (op, body, answer.text)
    assert sum(nchf.seen.values()) == 1 + sum(len(b) for b in cases.values())
