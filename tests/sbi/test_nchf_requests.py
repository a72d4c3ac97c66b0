"""The requests our Nchf tests and tools/bench_nchf.py send are valid TS 32.291 requests."""

from __future__ import annotations

import pytest

from tests.sbi.nchf_requests import charging_data_request
from tests.sbi.oracle import SchemaError, specs_or_skip

NCHF = "TS32291_Nchf_ConvergedCharging.yaml"
REQUEST = "/components/schemas/ChargingDataRequest"


def test_create_update_and_release_requests_conform() -> None:
    specs = specs_or_skip()
    imsi, msisdn = "262010000000001", "491700000001"
    uri = "http://127.0.0.1:9/nsmf-callback/notify_1"
    for body in (
        charging_data_request(imsi, 0, msisdn=msisdn, notify_uri=uri),
        charging_data_request(imsi, 1, used=5_000, triggers=["QUOTA_THRESHOLD"]),
        charging_data_request(imsi, 2, requested=None, used=7, triggers=["FINAL"]),
    ):
        specs.check(body, NCHF, REQUEST, what="our ChargingDataRequest")


def test_the_oracle_rejects_what_breaks_the_schema() -> None:
    specs = specs_or_skip()
    body = charging_data_request("262010000000001", 0)
    body["invocationSequenceNumber"] = -1  # Uint32
    body["multipleUnitUsage"][0].pop("ratingGroup")  # required
    with pytest.raises(SchemaError) as caught:
        specs.check(body, NCHF, REQUEST)
    message = str(caught.value)
    assert "/invocationSequenceNumber" in message and "ratingGroup" in message
