"""Typed CCR views on real captured CCRs, and the CCA builders round-tripped by the codec."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter.answers import Identity
from ocs.diameter.codec import Message, decode
from ocs.diameter.constants import Application, Command, FinalUnitAction, RedirectAddressType
from ocs.diameter.dcca import (
    CreditControlRequest,
    RedirectServer,
    cost_information,
    credit_control_answer,
    final_unit_indication,
    granted_service_unit,
    mscc_answer,
)
from ocs.diameter.errors import InvalidAvpValue, MissingAvp
from tests.charging.ccr import build_ccr

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _gy_ccrs(name: str) -> list[CreditControlRequest]:
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"{name} not extracted yet")
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        msg = decode(bytes.fromhex(line.split()[-1]))
        if (
            msg.command == Command.CREDIT_CONTROL
            and msg.is_request
            and msg.app_id == Application.CREDIT_CONTROL
        ):
            out.append(CreditControlRequest(msg))
    return out


def test_open5gs_smf_ccr_initial_and_update_fields() -> None:
    ccrs = _gy_ccrs("lbo-charging-artifact_T1-MOD1_baseline-gy.hex")
    initial, update = ccrs[0], ccrs[1]
    assert (initial.request_type, initial.request_number) == (1, 0)
    assert initial.imsi == "001010000000001"
    assert initial.apn == "internet"
    [mscc] = initial.mscc
    assert mscc.rating_group == 9
    assert mscc.requested is not None and mscc.requested.octets == 1_000_000
    ps = initial.ps_information
    assert ps is not None
    assert ps.sgsn_mcc_mnc == "00101"
    assert ps.charging_id == 1
    assert ps.pdp_addresses == [IPv4Address("10.45.0.2")]
    assert initial.event_timestamp is not None
    assert (update.request_type, update.request_number) == (2, 1)
    [used] = update.mscc
    assert used.used_total("octets") == 1_049_076
    assert used.reporting_reason == 0  # THRESHOLD


def test_magma_ccr_with_four_rating_groups_and_user_equipment() -> None:
    ccrs = [c for c in _gy_ccrs("magma_gx_gy_combined_03_210505_132953-1.hex") if c.mscc]
    first = ccrs[0]
    assert [m.rating_group for m in first.mscc] == [9, 3, 2, 1]
    assert all(m.requested is not None and m.requested.octets == 200_000 for m in first.mscc)
    assert first.msisdn == "1234567810"
    assert first.imsi == "999991234567810"
    assert first.user_equipment is not None and first.user_equipment.type == 0
    ps = first.ps_information
    assert ps is not None
    assert ps.threegpp_rat_type == 6  # EUTRAN
    assert ps.user_location_info is not None and ps.user_location_info[0] == 0x82


def test_every_captured_gy_ccr_reads_without_error() -> None:
    names = sorted(p.name for p in VECTORS.glob("*.hex")) if VECTORS.exists() else []
    seen = 0
    for name in names:
        for ccr in _gy_ccrs(name):
            seen += 1
            assert ccr.session_id
            assert ccr.request_type in (1, 2, 3, 4)
            for mscc in ccr.mscc:
                assert mscc.used_total("octets") >= 0
    if not seen:
        pytest.skip("no captured vectors")
    assert seen > 10


def test_built_ccr_fields_and_missing_mandatory_avps() -> None:
    msg = build_ccr(
        "s1",
        request_type=2,
        number=3,
        imsi="262010000000001",
        msisdn="491700000001",
        msccs=[(10, 5_000, 1_234), (20, None, 0)],
        sgsn_mcc_mnc="26201",
        rat_type=1004,
        apn="iot.demo",
    )
    ccr = CreditControlRequest(decode(msg.encode()))
    assert ccr.session_id == "s1"
    assert ccr.msisdn == "491700000001"
    assert [(m.rating_group, m.used_total("octets")) for m in ccr.mscc] == [(10, 1_234), (20, 0)]
    assert ccr.mscc[1].requested is not None and ccr.mscc[1].requested.empty
    ps = ccr.ps_information
    assert ps is not None and (ps.rat_type, ps.called_station_id) == (1004, "iot.demo")
    bare = CreditControlRequest(Message(272, 4, 0x80, 1, 1, []))
    with pytest.raises(MissingAvp):
        _ = bare.request_type


def test_cca_builders_round_trip() -> None:
    request = build_ccr("s9", request_type=1, number=0, imsi="262010000000001", msccs=[])
    fui = final_unit_indication(
        FinalUnitAction.REDIRECT, redirect=RedirectServer("http://topup.example/")
    )
    mscc = mscc_answer(
        2001,
        rating_group=10,
        granted=granted_service_unit(total_octets=1_000, time=60),
        validity_time=600,
        volume_quota_threshold=200,
        final_unit=fui,
    )
    answer = credit_control_answer(
        request, Identity("ocs.test", "test"), 2001, msccs=[mscc], extra=[cost_information(45, 978)]
    )
    decoded = decode(answer.encode())
    assert decoded.get(A.AVP_RESULT_CODE) == 2001
    assert decoded.get(A.AVP_CC_REQUEST_TYPE) == 1
    assert decoded.get(A.AVP_CC_REQUEST_NUMBER) == 0
    assert decoded.get(A.AVP_AUTH_APPLICATION_ID) == 4
    got = decoded.find(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    assert got is not None
    gsu = got.find(A.AVP_GRANTED_SERVICE_UNIT)
    assert gsu is not None and gsu.get(A.AVP_CC_TOTAL_OCTETS) == 1_000
    assert got.get(A.AVP_VALIDITY_TIME) == 600
    assert got.get(A.AVP_VOLUME_QUOTA_THRESHOLD) == 200
    fu = got.find(A.AVP_FINAL_UNIT_INDICATION)
    assert fu is not None and fu.get(A.AVP_FINAL_UNIT_ACTION) == FinalUnitAction.REDIRECT
    server = fu.find(A.AVP_REDIRECT_SERVER)
    assert server is not None
    assert server.get(A.AVP_REDIRECT_ADDRESS_TYPE) == RedirectAddressType.URL
    restrict = final_unit_indication(
        FinalUnitAction.RESTRICT_ACCESS, restriction_rules=["permit out ip from any to 10.0.0.1"]
    )
    assert restrict.get(A.AVP_RESTRICTION_FILTER_RULE) == "permit out ip from any to 10.0.0.1"
    with pytest.raises(InvalidAvpValue):
        final_unit_indication(FinalUnitAction.REDIRECT)
