"""NRF registration (TS 29.510) against a real HTTP/2 server playing the NRF, every request
body checked against the Release 17 schemas (NFProfile, PatchItem)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ocs.config import ConfigError, Settings
from ocs.network.nrf import NFM_PATH, NrfRegistration, instance_id
from ocs.observability.metrics import NrfMetrics
from tests.sbi.h2server import H2Server, Reply, Request, until
from tests.sbi.oracle import specs_or_skip

NFM = "TS29510_Nnrf_NFManagement.yaml"
PROFILE = "/components/schemas/NFProfile"
DOCUMENT = "/paths/~1nf-instances~1{nfInstanceID}"
PATCH_BODY = f"{DOCUMENT}/patch/requestBody/content/application~1json-patch+json/schema"


def settings(nrf_url: str, **more: Any) -> Settings:
    return Settings(
        nrf_url=nrf_url,
        origin_host="chf-1.ocs.test",
        sbi_address="10.0.0.5",
        chf_supi_ranges=[{"start": "262010000000000", "end": "262010000000999"}],
        chf_gpsi_ranges=[{"pattern": "^msisdn-4917000[0-9]{5}$"}],
        **more,
    )


def sample(registry: CollectorRegistry, op: str, outcome: str) -> float:
    value = registry.get_sample_value("ocs_nrf_requests_total", {"op": op, "outcome": outcome})
    return value or 0.0


class FakeNrf:
    """Holds profiles like an NRF; ``forget_on_patch`` answers that heartbeat 404 (an NRF
    that restarted and lost us)."""

    def __init__(self, heartbeat: int = 1, forget_on_patch: int = 2) -> None:
        self.heartbeat = heartbeat
        self.forget_on_patch = forget_on_patch
        self.profiles: dict[str, Any] = {}
        self.patches = 0

    async def __call__(self, request: Request) -> Reply:
        assert request.path.startswith(NFM_PATH + "/")
        nf_id = request.path.rsplit("/", 1)[1]
        if request.method == "PUT":
            created = nf_id not in self.profiles
            self.profiles[nf_id] = request.json() | {"heartBeatTimer": self.heartbeat}
            location = {"location": f"http://nrf{request.path}"} if created else {}
            return Reply(201 if created else 200, self.profiles[nf_id], location)
        if request.method == "PATCH":
            self.patches += 1
            if self.patches == self.forget_on_patch:
                self.profiles.pop(nf_id, None)
            if nf_id not in self.profiles:
                return Reply(404, {"status": 404, "cause": "RESOURCE_NOT_FOUND"})
            return Reply(204)
        if request.method == "DELETE":
            return Reply(204 if self.profiles.pop(nf_id, None) is not None else 404)
        return Reply(405)


def methods(requests: list[Request]) -> list[str]:
    return [r.method for r in requests]


async def test_register_heartbeat_reregister_on_404_and_deregister() -> None:
    specs = specs_or_skip()
    nrf = FakeNrf()
    server = await H2Server(nrf).start()
    registry = CollectorRegistry()
    reg = NrfRegistration(settings(server.url), nchf_port=8008, metrics=NrfMetrics(registry))
    reg.start()
    try:
        # PUT, PATCH (204), PATCH (404: the NRF forgot us), PUT again, PATCH (204)
        await server.wait_for(lambda rs: methods(rs) == ["PUT", "PATCH", "PATCH", "PUT", "PATCH"])
        assert reg.registered and reg.heartbeat == 1  # the NRF's heartBeatTimer, not ours (30)
    finally:
        await reg.stop()
        await server.stop()
    assert methods(server.requests)[-1] == "DELETE"
    assert nrf.profiles == {}
    nf_id = instance_id(settings(server.url))
    for request in server.requests:
        assert request.path == f"{NFM_PATH}/{nf_id}"
        assert request.headers["user-agent"] == "CHF"
        if request.method == "PUT":
            assert request.headers["content-type"] == "application/json"
            specs.check(request.json(), NFM, PROFILE, what="the NFProfile we register")
        elif request.method == "PATCH":
            assert request.headers["content-type"] == "application/json-patch+json"
            specs.check(request.json(), NFM, PATCH_BODY, what="the heartbeat")
            assert request.json() == [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]
    profile = server.requests[0].json()
    assert profile["nfType"] == "CHF" and profile["nfInstanceId"] == nf_id
    assert profile["ipv4Addresses"] == ["10.0.0.5"]
    assert profile["chfInfo"] == {
        "supiRangeList": [{"start": "262010000000000", "end": "262010000000999"}],
        "gpsiRangeList": [{"pattern": "^msisdn-4917000[0-9]{5}$"}],
    }
    (service,) = profile["nfServices"]
    assert profile["nfServiceList"] == {service["serviceInstanceId"]: service}
    assert service["serviceName"] == "nchf-convergedcharging"
    assert service["versions"][0]["apiVersionInUri"] == "v3"
    assert service["ipEndPoints"] == [{"transport": "TCP", "port": 8008, "ipv4Address": "10.0.0.5"}]
    assert service["apiPrefix"] == "http://10.0.0.5:8008"  # free5GC's SMF: the apiRoot
    assert sample(registry, "register", "ok") == 2
    assert sample(registry, "heartbeat", "not_found") == 1
    assert sample(registry, "deregister", "ok") == 1
    assert registry.get_sample_value("ocs_nrf_registered") == 0


async def test_an_nrf_that_is_down_is_retried_until_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = CollectorRegistry()
    reg = NrfRegistration(
        settings(f"http://127.0.0.1:{port}", nrf_timeout=1.0),
        nchf_port=8008,
        metrics=NrfMetrics(registry),
        backoff_first=0.05,
    )
    caplog.set_level(logging.INFO, logger="ocs")
    reg.start()
    server = None
    try:
        await until(lambda: sample(registry, "register", "unreachable") >= 3)
        assert not reg.registered
        server = await H2Server(FakeNrf(heartbeat=60)).start(port=port)
        await server.wait_for(lambda rs: "PUT" in methods(rs))
        await until(lambda: reg.registered)
    finally:
        await reg.stop()
        if server is not None:
            await server.stop()
    down = [r for r in caplog.records if "NRF unreachable" in r.getMessage()]
    assert len(down) == 1  # one line per outage, not one per attempt
    assert any("NRF reachable again" in r.getMessage() for r in caplog.records)


async def test_an_nrf_that_never_answers_costs_a_bounded_wait() -> None:
    async def hang(request: Request) -> Reply:
        await asyncio.sleep(3600)
        return Reply(500)

    server = await H2Server(hang).start()
    registry = CollectorRegistry()
    reg = NrfRegistration(
        settings(server.url, nrf_timeout=0.2),
        nchf_port=8008,
        metrics=NrfMetrics(registry),
        backoff_first=0.05,
    )
    reg.start()
    try:
        await until(lambda: sample(registry, "register", "unreachable") >= 2)
    finally:
        await reg.stop()  # the DELETE has its own time limit too
        await server.stop()
    assert sample(registry, "deregister", "unreachable") == 1
    assert not reg.registered


async def test_an_nrf_refusal_is_counted_and_retried() -> None:
    async def refuse(request: Request) -> Reply:
        detail = {"status": 400, "cause": "MANDATORY_IE_MISSING", "detail": "no"}
        return Reply(400, detail, {"content-type": "application/problem+json"})

    server = await H2Server(refuse).start()
    registry = CollectorRegistry()
    reg = NrfRegistration(
        settings(server.url), nchf_port=8008, metrics=NrfMetrics(registry), backoff_first=0.05
    )
    reg.start()
    try:
        await server.wait_for(lambda rs: methods(rs).count("PUT") >= 2)
    finally:
        await reg.stop()
        await server.stop()
    assert sample(registry, "register", "refused") >= 2 and not reg.registered


def test_the_instance_id_is_stable_per_node_and_can_be_set() -> None:
    one = instance_id(Settings(origin_host="chf-1.example"))
    assert one == instance_id(Settings(origin_host="CHF-1.example"))
    assert one != instance_id(Settings(origin_host="chf-2.example"))
    fixed = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64"
    assert instance_id(Settings(nf_instance_id=fixed)) == fixed


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"nrf_url": "nrf:8000"}, "nrf_url (--nrf-url, OCS_NRF_URL)"),
        ({"nrf_url": "ftp://nrf"}, "is not an NRF apiRoot"),
        ({"chf_supi_ranges": [{"start": "2"}]}, "give start and end"),
        ({"chf_supi_ranges": [{"start": "9", "end": "10"}]}, "start and end of one length"),
        ({"chf_gpsi_ranges": [{"pattern": "("}]}, "pattern '('"),
        ({"chf_gpsi_ranges": [{"start": "1", "end": "2", "pattern": "x"}]}, "not both"),
    ],
)
def test_bad_nrf_settings_are_named(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError, match="settings: .*" + re.escape(reason)):
        Settings.load(**values)


def test_nrf_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCS_NRF_URL", "http://nrf.5gc:8000/")
    monkeypatch.setenv("OCS_CHF_SUPI_RANGES", '[{"start": "001010000000000", "end": "001019"}]')
    with pytest.raises(ConfigError, match="chf_supi_ranges"):
        Settings.load()
    monkeypatch.setenv(
        "OCS_CHF_SUPI_RANGES", '[{"start": "001010000000000", "end": "001010000099999"}]'
    )
    loaded = Settings.load()
    assert loaded.nrf_url == "http://nrf.5gc:8000"
    assert loaded.chf_supi_ranges[0].end == "001010000099999"
