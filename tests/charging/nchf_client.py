"""A served ``ocs`` with Nchf on, an HTTP/2 (h2c prior knowledge) client, request builders,
and the Rel-17 schemas of TS 32.291 as a cheap response check (nchf-ext runs the full
conformance suite)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ocs.config import Settings
from ocs.diameter.node import Node
from ocs.diameter.peer import LocalConfig
from ocs.diameter.transport import DiameterProtocol, connect
from ocs.process import Runtime, start
from ocs.wiring import ChargingAttacher
from tests.charging.conftest import CLIENT
from tests.conftest import free_ports

ROOT = Path(__file__).resolve().parents[2]
# ../shared/specs beside the repository (or beside the folder of a worktree under wt/)
SPECS = next(
    (
        p / "shared" / "specs" / "3gpp-rel17"
        for p in (ROOT.parent, ROOT.parents[1])
        if (p / "shared" / "specs" / "3gpp-rel17").is_dir()
    ),
    ROOT.parent / "shared" / "specs" / "3gpp-rel17",
)
NCHF_YAML = "TS32291_Nchf_ConvergedCharging.yaml"
COLLECTION = "/nchf-convergedcharging/v3/chargingdata"


@dataclass
class NchfServer:
    runtime: Runtime
    attacher: ChargingAttacher
    port: int
    gy: DiameterProtocol | None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{COLLECTION}"


@contextlib.asynccontextmanager
async def nchf_served(settings: Settings, *, gy: bool = False) -> AsyncIterator[NchfServer]:
    """``ocs.process.start`` with Nchf on a free port (no HTTP API, no metrics) and, ``gy``,
    a Diameter client connected to the same process."""
    (port,) = free_ports(1)
    settings = settings.model_copy(update={"nchf_port": port, "http_port": 0, "metrics_port": 0})
    attacher = ChargingAttacher(None, with_http=True)
    runtime = await start(settings, attacher)
    client = None
    try:
        if gy:
            client = await connect(
                Node(CLIENT), LocalConfig(identity=CLIENT), "127.0.0.1", runtime.server.port
            )
        yield NchfServer(runtime, attacher, port, client)
    finally:
        if client is not None and client.peer.is_open:
            await client.disconnect(2.0)
        await runtime.stop()


def h2_client() -> httpx.AsyncClient:
    """HTTP/2 with prior knowledge over cleartext, as an SMF speaks it."""
    return httpx.AsyncClient(http1=False, http2=True, timeout=10.0)


def charging_request(
    n: int,
    *,
    imsi: str | None = "262010000000001",
    units: list[dict[str, Any]] | None = None,
    apn: str | None = "iot.demo",
    notify: str | None = "http://127.0.0.1:9/notify",
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": "smf-test"},
        "invocationTimeStamp": datetime.now(UTC).isoformat(),
        "invocationSequenceNumber": n,
    }
    if imsi is not None:
        doc["subscriberIdentifier"] = f"imsi-{imsi}"
    if notify is not None:
        doc["notifyUri"] = notify
    if units is not None:
        doc["multipleUnitUsage"] = units
    if apn is not None:
        doc["pDUSessionChargingInformation"] = {
            "chargingId": 7,
            "pduSessionInformation": {
                "pduSessionID": 1,
                "dnnId": apn,
                "ratType": "NR",
                "networkSlicingInfo": {"sNSSAI": {"sst": 1}},
                "servingCNPlmnId": {"mcc": "262", "mnc": "01"},
            },
        }
    return doc | extra


def usage(
    rg: int, *, used: int | None = None, want: int | None = -1, upf: str | None = None, seq: int = 1
) -> dict[str, Any]:
    """One multipleUnitUsage; ``want`` -1: an empty requestedUnit (the default quota),
    None: no requestedUnit."""
    item: dict[str, Any] = {"ratingGroup": rg}
    if want is not None:
        item["requestedUnit"] = {} if want < 0 else {"totalVolume": want}
    if used is not None:
        item["usedUnitContainer"] = [{"localSequenceNumber": seq, "totalVolume": used}]
    if upf is not None:
        item["uPFID"] = upf
    return item


def granted_of(body: dict[str, Any]) -> dict[int, int]:
    return {
        u["ratingGroup"]: u.get("grantedUnit", {}).get("totalVolume", 0)
        for u in body.get("multipleUnitInformation", [])
    }


# -- the Rel-17 schemas as a response check -------------------------------------------------
@cache
def _document(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SPECS / name).read_text())
    return data


def _inline(node: Any, doc: str, stack: tuple[str, ...]) -> Any:
    """The schema with every $ref replaced by its target (a cycle becomes {}), OpenAPI 3.0's
    ``nullable`` turned into JSON Schema."""
    if isinstance(node, list):
        return [_inline(item, doc, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        file, _, pointer = ref.partition("#")
        target_doc = file or doc
        key = f"{target_doc}#{pointer}"
        if key in stack or len(stack) > 40:
            return {}
        target: Any = _document(target_doc)
        for part in pointer.strip("/").split("/"):
            target = target[part]
        return _inline(target, target_doc, (*stack, key))
    out = {k: _inline(v, doc, stack) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _validator(schema_name: str) -> Any:
    import jsonschema_rs

    schema = _inline({"$ref": f"#/components/schemas/{schema_name}"}, NCHF_YAML, ())
    return jsonschema_rs.Draft4Validator(schema)


@cache
def _problem_validator() -> Any:
    import jsonschema_rs

    ref = {"$ref": "TS29571_CommonData.yaml#/components/schemas/ProblemDetails"}
    return jsonschema_rs.Draft4Validator(_inline(ref, NCHF_YAML, ()))


def conforms(body: dict[str, Any], schema: str = "ChargingDataResponse") -> None:
    """Fails the test if ``body`` is not a valid ``schema`` of TS 32.291 Rel-17 (or a TS
    29.571 ProblemDetails); skips when ../shared/specs is absent."""
    if not (SPECS / NCHF_YAML).exists():
        pytest.skip(f"the Rel-17 OpenAPI files are not at {SPECS}")
    validator = _problem_validator() if schema == "ProblemDetails" else _validator(schema)
    errors = [str(e) for e in validator.iter_errors(body)]
    assert not errors, f"{schema}: {errors}\n{json.dumps(body)[:2000]}"


@contextlib.contextmanager
def no_traceback() -> Iterator[None]:
    yield
