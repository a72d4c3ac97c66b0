"""ChargingDataRequests as an SMF sends them (the fields free5GC's SMF fills, TS 32.291
6.1.6.2.1.1), for the Nchf tests and tools/bench_nchf.py. ``tests/sbi/test_nchf_requests.py``
checks each against the Release 17 schema, so a test never talks to the endpoint in a dialect
of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

API: Final = "/nchf-convergedcharging/v3"
CREATE: Final = f"{API}/chargingdata"
RATING_GROUP: Final = 100  # the demo catalogue's data rating group


def update_path(ref: str) -> str:
    return f"{API}/chargingdata/{ref}/update"


def release_path(ref: str) -> str:
    return f"{API}/chargingdata/{ref}/release"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def charging_data_request(
    imsi: str,
    sequence: int,
    *,
    msisdn: str | None = None,
    notify_uri: str | None = None,
    rating_group: int = RATING_GROUP,
    requested: int | None = 1_000_000,
    used: int | None = None,
    local_sequence: int = 1,
    triggers: list[str] | None = None,
    dnn: str = "iot.demo",
    charging_id: int = 1,
) -> dict[str, Any]:
    """One ChargingDataRequest for ``imsi``: ``requested`` octets asked for, ``used`` octets
    reported in one usedUnitContainer (``triggers`` its trigger types)."""
    usage: dict[str, Any] = {"ratingGroup": rating_group}
    if requested is not None:
        usage["requestedUnit"] = {"totalVolume": requested}
    if used is not None:
        container: dict[str, Any] = {
            "localSequenceNumber": local_sequence,
            "totalVolume": used,
            "uplinkVolume": used // 4,
            "downlinkVolume": used - used // 4,
        }
        if triggers:
            container["triggers"] = [
                {"triggerType": t, "triggerCategory": "IMMEDIATE_REPORT"} for t in triggers
            ]
        usage["usedUnitContainer"] = [container]
    user: dict[str, Any] = {}
    if msisdn is not None:
        user["servedGPSI"] = f"msisdn-{msisdn}"
    body: dict[str, Any] = {
        "subscriberIdentifier": f"imsi-{imsi}",
        "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": _SMF_ID},
        "invocationTimeStamp": _now(),
        "invocationSequenceNumber": sequence,
        "multipleUnitUsage": [usage],
        "pDUSessionChargingInformation": {
            "chargingId": charging_id,
            "userInformation": user,
            "pduSessionInformation": {
                "pduSessionID": 1,
                "networkSlicingInfo": {"sNSSAI": {"sst": 1, "sd": "010203"}},
                "pduType": "IPV4",
                "ratType": "NR",
                "dnnId": dnn,
                "servingNetworkFunctionID": {
                    "servingNetworkFunctionInformation": {"nodeFunctionality": "AMF"}
                },
            },
        },
    }
    if notify_uri is not None:
        body["notifyUri"] = notify_uri
    return body


_SMF_ID: Final = "6d2c5b8e-1f4a-4c1e-9a57-5f0c2b9e7a10"
