"""Nchf_ConvergedCharging v3 against a real server and a real Redis, over HTTP/2 with prior
knowledge (httpx with h2): whole sessions, retries, errors, and one pool charged by Gy and
Nchf sessions at once."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocs.balance import BalanceStore
from ocs.balance.keys import nchf_key, nchf_subscriber_key
from ocs.charging.config import ChargingConfig
from ocs.diameter import avp_codes as A
from tests.balance.helpers import assert_conserved
from tests.charging.ccr import build_ccr
from tests.charging.conftest import settings_for
from tests.charging.helpers import ACME_POOL, SUSPENDED_IMSI, bucket, granted, msccs, wire
from tests.charging.nchf_client import (
    charging_request,
    conforms,
    granted_of,
    h2_client,
    nchf_served,
    usage,
)

MB = 1_000_000
JSON = {"content-type": "application/json"}


def units(record: Any) -> int:
    return sum(amount for _, amount in record.alloc)


async def post(client: httpx.AsyncClient, url: str, doc: dict[str, Any]) -> httpx.Response:
    return await client.post(url, content=json.dumps(doc), headers=JSON)


async def test_a_whole_session_over_h2c_charges_what_was_reported(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    start = await bucket(store, ACME_POOL, "acme-pool")
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        assert served.attacher.runtime is not None
        counted = served.attacher.runtime.application.metrics.nchf  # ocs_nchf_requests_total
        labels = [("create", "201"), ("update", "200"), ("release", "204"), ("update", "404")]
        before = {k: counted.labels(*k)._value.get() for k in labels}
        created = await post(
            client, served.base, charging_request(0, units=[usage(10, want=2 * MB, upf="upf-a")])
        )
        assert created.status_code == 201, created.text
        assert created.http_version == "HTTP/2"
        location = created.headers["location"]
        assert location.startswith(served.base + "/")
        body = created.json()
        conforms(body)
        (info,) = body["multipleUnitInformation"]
        assert info["resultCode"] == "SUCCESS"
        assert info["grantedUnit"] == {"totalVolume": 2 * MB}
        assert info["uPFID"] == "upf-a"
        assert info["validityTime"] == config.validity_time
        assert info["volumeQuotaThreshold"] == 2 * MB * config.threshold_percent // 100
        kinds = {t["triggerType"] for t in info["triggers"]}
        assert {"QUOTA_THRESHOLD", "QUOTA_EXHAUSTED", "VALIDITY_TIME"} <= kinds
        assert body["invocationSequenceNumber"] == 0
        assert (await bucket(store, ACME_POOL, "acme-pool")).reserved == 2 * MB
        # the resource's state, tenant in its key, with the consumer's notifyUri (docs/nchf.md)
        ref = location.rsplit("/", 1)[1]
        state = await store.redis.hgetall(nchf_key("demo", ref))
        assert state[b"notifyUri"] == b"http://127.0.0.1:9/notify"
        assert state[b"imsi"] == b"262010000000001"
        assert state[b"rg:10"] == ACME_POOL.encode()
        index = nchf_subscriber_key("demo", "262010000000001")
        assert await store.redis.smembers(index) == {ref.encode()}

        reported = 0
        for n, used in ((1, 1_500_000), (2, 1_700_000)):
            # the update leaves out the PDU session information: the session's is used
            doc = charging_request(n, units=[usage(10, used=used, want=2 * MB)], apn=None)
            answer = await post(client, f"{location}/update", doc)
            assert answer.status_code == 200, answer.text
            conforms(answer.json())
            assert granted_of(answer.json()) == {10: 2 * MB}
            reported += used
        pool = await bucket(store, ACME_POOL, "acme-pool")
        assert (pool.used - start.used, pool.reserved) == (reported, 2 * MB)

        release = charging_request(3, units=[usage(10, used=300_000, want=None)])
        done = await post(client, f"{location}/release", release)
        assert (done.status_code, done.content) == (204, b"")
        reported += 300_000
        pool = await bucket(store, ACME_POOL, "acme-pool")
        assert (pool.used - start.used, pool.reserved) == (reported, 0)
        assert pool.available == start.available - reported
        assert await store.redis.smembers(index) == set()
        # released: the resource is gone for updates
        gone = await post(client, f"{location}/update", charging_request(4, units=[usage(10)]))
        assert gone.status_code == 404
        conforms(gone.json(), "ProblemDetails")
        assert gone.json()["cause"] == "CONTEXT_NOT_FOUND"
        after = {k: counted.labels(*k)._value.get() for k in labels}
        assert {k: after[k] - before[k] for k in labels} == dict(
            zip(labels, (1, 2, 1, 1), strict=True)
        )
    await assert_conserved(store, ACME_POOL)
    records = [r for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]
    contexts = [json.loads(r.fields["ctx"]) for r in records]
    assert [c["n"] for c in contexts] == [1, 2, 3]
    assert {c["interface"] for c in contexts} == {"nchf"}
    assert all(c["imsi"] == "262010000000001" and c["rg"] == 10 for c in contexts)
    assert sum(units(r) for r in records) == reported


async def test_a_repeated_invocation_sequence_number_charges_nothing(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        create = charging_request(0, units=[usage(10)])
        created = await post(client, served.base, create)
        location = created.headers["location"]
        reserved = (await bucket(store, ACME_POOL, "acme-pool")).reserved
        retried = await post(client, served.base, create)  # the create's answer was lost
        assert (retried.status_code, retried.headers["location"]) == (201, location)
        assert retried.content == created.content
        assert (await bucket(store, ACME_POOL, "acme-pool")).reserved == reserved
        doc = charging_request(1, units=[usage(10, used=1_000_000)])
        first = await post(client, f"{location}/update", doc)
        after_first = await bucket(store, ACME_POOL, "acme-pool")
        for _ in range(3):  # the consumer retries (a lost answer, a failover)
            again = await post(
                client, f"{location}/update", doc | {"retransmissionIndicator": True}
            )
            assert (again.status_code, again.content) == (first.status_code, first.content)
        assert await bucket(store, ACME_POOL, "acme-pool") == after_first
        release = charging_request(2, units=[usage(10, used=10, want=None)])
        assert (await post(client, f"{location}/release", release)).status_code == 204
        after_release = await bucket(store, ACME_POOL, "acme-pool")
        assert (await post(client, f"{location}/release", release)).status_code == 204
        assert await bucket(store, ACME_POOL, "acme-pool") == after_release
        assert after_release.reserved == 0
    await assert_conserved(store, ACME_POOL)
    usage_records = [r for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]
    assert sum(units(r) for r in usage_records) == 1_000_010


async def test_refusals_are_problem_details_with_the_causes_of_ts_32_291(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        cases: list[tuple[bytes, int, str]] = [
            (b"{not json", 400, "INVALID_MSG_FORMAT"),
            (b"[]", 400, "INVALID_MSG_FORMAT"),
            (json.dumps({"invocationSequenceNumber": 1}).encode(), 400, "MANDATORY_IE_INCORRECT"),
            (
                json.dumps(charging_request(0, imsi="999990000000001", units=[usage(1)])).encode(),
                404,
                "USER_UNKNOWN",
            ),
            (
                json.dumps(charging_request(0, imsi=SUSPENDED_IMSI, units=[usage(10)])).encode(),
                403,
                "END_USER_REQUEST_DENIED",
            ),
            (
                json.dumps(charging_request(0, units=[usage(10), usage(10)])).encode(),
                400,
                "MANDATORY_IE_INCORRECT",
            ),
            (b"[" * 10_000 + b"]" * 10_000, 400, "INVALID_MSG_FORMAT"),
        ]
        for body, status, cause in cases:
            answer = await client.post(served.base, content=body, headers=JSON)
            assert answer.status_code == status, (body[:80], answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            problem = answer.json()
            conforms(problem, "ProblemDetails")
            assert (problem["status"], problem["cause"]) == (status, cause), problem
        missing = await post(client, served.base, {"invocationSequenceNumber": 1})
        assert missing.json()["invalidParams"][0]["param"] == "/invocationTimeStamp"
        unknown = await post(client, f"{served.base}/{'0' * 32}-demo/update", charging_request(1))
        assert (unknown.status_code, unknown.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")
        foreign = await post(client, f"{served.base}/nonsense/update", charging_request(1))
        assert foreign.status_code == 404
        too_large = await client.post(served.base, content=b" " * 70_000, headers=JSON)
        assert too_large.status_code == 413
        wrong_type = await client.post(served.base, content=b"{}", headers={"content-type": "x"})
        assert wrong_type.status_code == 415
        # the server still answers on the same connection
        ok = await post(client, served.base, charging_request(0))
        assert ok.status_code == 201
    await assert_conserved(store, ACME_POOL)


async def test_http_1_1_is_served_too(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    async with (
        nchf_served(settings_for(redis_url, config)) as served,
        httpx.AsyncClient(timeout=10.0) as client,
    ):
        created = await post(client, served.base, charging_request(0, units=[usage(10, want=MB)]))
        assert (created.status_code, created.http_version) == (201, "HTTP/1.1")
        location = created.headers["location"]
        release = charging_request(1, units=[usage(10, used=5, want=None)])
        assert (await post(client, f"{location}/release", release)).status_code == 204
    assert (await bucket(store, ACME_POOL, "acme-pool")).reserved == 0


async def test_slow_or_broken_requests_are_cut_off_never_hang(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    settings = settings_for(redis_url, config, nchf_timeout=0.5)
    async with nchf_served(settings) as served:
        # a body that never arrives whole: 408
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST /nchf-convergedcharging/v3/chargingdata HTTP/1.1\r\nHost: x\r\n"
            b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        writer.close()
        # a head that never ends: the connection is closed
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"POST /nchf-convergedcharging/v3/chargingdata HTTP/1.1\r\nHost: x\r\n")
        assert not (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 2")
        writer.close()
        # a broken HTTP/2 frame after the preface: the connection is closed
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64)
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        # and the server still serves
        async with h2_client() as client:
            ok = await post(client, served.base, charging_request(0))
            assert ok.status_code == 201


async def test_one_pool_charged_by_gy_and_nchf_at_once_keeps_the_invariant(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    """20 Nchf and 20 Gy sessions of fleet SIMs on the shared pool, interleaved: the pool's
    used units are what both reported, nothing stays reserved, every unit has its record."""
    start = await bucket(store, ACME_POOL, "acme-pool")
    sessions, steps, step_used = 20, 3, 123_457
    async with (
        nchf_served(settings_for(redis_url, config), gy=True) as served,
        h2_client() as client,
    ):
        gy = served.gy
        assert gy is not None

        async def nchf_session(i: int) -> int:
            imsi = f"26201000000{i + 100:04d}"
            created = await post(
                client, served.base, charging_request(0, imsi=imsi, units=[usage(10, want=MB)])
            )
            assert created.status_code == 201, created.text
            location = created.headers["location"]
            for n in range(1, steps + 1):
                doc = charging_request(n, imsi=imsi, units=[usage(10, used=step_used, want=MB)])
                answer = await post(client, f"{location}/update", doc)
                assert granted_of(answer.json()) == {10: MB}
            final = charging_request(steps + 1, imsi=imsi, units=[usage(10, used=7, want=None)])
            assert (await post(client, f"{location}/release", final)).status_code == 204
            return steps * step_used + 7

        async def gy_session(i: int) -> int:
            imsi, msisdn = f"26201000000{i + 300:04d}", f"4917000{i + 300:05d}"
            sid = f"gy-mixed-{i}"

            def ccr(rtype: int, n: int, spec: tuple[int, int | None, int]) -> Any:
                return wire(
                    build_ccr(
                        sid, request_type=rtype, number=n, imsi=imsi, msisdn=msisdn, msccs=[spec]
                    )
                )

            answer = await gy.send_request(ccr(1, 0, (10, MB, 0)), timeout=10)
            assert granted(msccs(answer)[10]) == MB
            for n in range(1, steps + 1):
                answer = await gy.send_request(ccr(2, n, (10, MB, step_used)), timeout=10)
                assert answer.get(A.AVP_RESULT_CODE) == 2001
            answer = await gy.send_request(ccr(3, steps + 1, (10, -1, 7)), timeout=10)
            assert answer.get(A.AVP_RESULT_CODE) == 2001
            return steps * step_used + 7

        jobs = [nchf_session(i) for i in range(sessions)] + [gy_session(i) for i in range(sessions)]
        reported = sum(await asyncio.gather(*jobs))
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert pool.used - start.used == reported == 2 * sessions * (steps * step_used + 7)
    assert pool.reserved == 0
    assert pool.available == start.available - reported
    await assert_conserved(store, ACME_POOL)
    records = [r for r in await store.records(ACME_POOL) if r.fields["kind"] == "usage"]
    by_interface: dict[str, int] = {}
    for record in records:
        ctx = json.loads(record.fields["ctx"])
        by_interface[ctx["interface"]] = by_interface.get(ctx["interface"], 0) + units(record)
        # one shape: the fields drain and bill run read are there, whichever interface
        assert {"session", "n", "rg", "imsi", "twin", "subscription", "levels"} <= set(ctx)
    assert by_interface == {"nchf": reported // 2, "gy": reported // 2}


async def test_free_rating_groups_and_exhaustion_per_rating_group(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        created = await post(
            client, served.base, charging_request(0, units=[usage(99), usage(10, want=MB)])
        )
        assert created.status_code == 201
        codes = {
            u["ratingGroup"]: u["resultCode"] for u in created.json()["multipleUnitInformation"]
        }
        assert codes == {99: "QUOTA_MANAGEMENT_NOT_APPLICABLE", 10: "SUCCESS"}
        conforms(created.json())
        only_free = await post(client, served.base, charging_request(0, units=[usage(99)]))
        assert (only_free.status_code, only_free.json()["cause"]) == (
            403,
            "CHARGING_NOT_APPLICABLE",
        )


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=ocs.test", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_http2_over_tls_with_alpn(
    store: BalanceStore, config: ChargingConfig, redis_url: str, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    settings = settings_for(redis_url, config, nchf_tls_cert=cert, nchf_tls_key=key)
    async with (
        nchf_served(settings) as served,
        httpx.AsyncClient(http2=True, verify=ssl.create_default_context(cafile=cert)) as client,
    ):
        url = served.base.replace("http://", "https://")
        created = await post(client, url, charging_request(0, units=[usage(10, want=MB)]))
        assert (created.status_code, created.http_version) == (201, "HTTP/2"), created.text
        location = created.headers["location"]
        assert location.startswith(url + "/")
        release = charging_request(1, units=[usage(10, used=1, want=None)])
        assert (await post(client, f"{location}/release", release)).status_code == 204


async def test_a_consumer_that_sends_the_same_number_every_time_is_charged_each_time(
    store: BalanceStore, config: ChargingConfig, redis_url: str
) -> None:
    """free5GC's SMF sends invocationSequenceNumber 0 in every request: a number repeated
    with another body is a new request, charged; the same body again is a retry, not."""
    start = await bucket(store, ACME_POOL, "acme-pool")
    async with nchf_served(settings_for(redis_url, config)) as served, h2_client() as client:
        created = await post(client, served.base, charging_request(0, units=[usage(10)]))
        location = created.headers["location"]
        first = charging_request(0, units=[usage(10, used=1000)])
        assert (await post(client, f"{location}/update", first)).status_code == 200
        second = charging_request(0, units=[usage(10, used=2000)])
        assert (await post(client, f"{location}/update", second)).status_code == 200
        again = await post(client, f"{location}/update", second)  # the same bytes: a retry
        assert again.status_code == 200
        release = charging_request(0, units=[usage(10, used=4000, want=None)])
        assert (await post(client, f"{location}/release", release)).status_code == 204
    pool = await bucket(store, ACME_POOL, "acme-pool")
    assert (pool.used - start.used, pool.reserved) == (7000, 0)
    await assert_conserved(store, ACME_POOL)


def test_a_body_is_strict_json_nested_at_most_max_depth() -> None:
    """orjson parses the body (RFC 8259 strictly); the nesting limit counts every value."""
    from ocs.charging.nchf.request import MAX_DEPTH, InvalidRequest, parse

    def nested(levels: int) -> dict[str, Any]:
        doc = charging_request(0)
        inner: Any = 1
        for _ in range(levels - 1):  # the value at depth ``levels`` is the scalar 1
            inner = [inner]
        doc["vendorSpecific"] = inner  # a field nobody reads: only its depth counts
        return doc

    assert parse(json.dumps(nested(MAX_DEPTH)).encode()).sequence == 0
    emptied = json.dumps(nested(MAX_DEPTH + 1)).replace("[1]", "[]")  # no value below MAX_DEPTH
    assert parse(emptied.encode()).sequence == 0
    for body in (
        json.dumps(nested(MAX_DEPTH + 1)).encode(),
        b'{"invocationSequenceNumber": NaN}',  # not JSON (Python's json takes it)
        b'{"invocationSequenceNumber": 1, "x": "\\ud800"}',  # a lone surrogate
        b"[" * 2000 + b"]" * 2000,
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse(body)
        assert caught.value.param == "body", body[:60]
