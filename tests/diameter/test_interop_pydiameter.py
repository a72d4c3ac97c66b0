"""Interop with python-diameter 0.9 (the reference stack): what we encode it reads with equal
values, what it encodes we read with equal values, and our dictionary agrees with its one on
the data type of every AVP both know (with a commented list of deliberate disagreements)."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter import codec
from ocs.diameter.codec import Avp
from ocs.diameter.constants import (
    VENDOR_3GPP,
    Application,
    CcRequestType,
    FinalUnitAction,
    ResultCode,
)
from ocs.diameter.dictionary import DICTIONARY, AvpType

from .conftest import (
    HOST,
    PGW,
    REALM,
    SESSION,
    WHEN,
    our_cca,
    our_ccr,
    our_cea,
    our_cer,
    our_dwa,
    our_dwr,
)

pd_message = pytest.importorskip("diameter.message", reason="python-diameter not installed")
from diameter.message.avp import avp as pd_avp  # noqa: E402
from diameter.message.avp import dictionary as pd_dictionary  # noqa: E402
from diameter.message.avp import grouped as pd_grouped  # noqa: E402
from diameter.message.commands import capabilities_exchange as pd_ce  # noqa: E402
from diameter.message.commands import credit_control as pd_cc  # noqa: E402
from diameter.message.commands import device_watchdog as pd_dw  # noqa: E402

pytestmark = pytest.mark.interop

PdMessage: Any = pd_message.Message


# -- comparing trees ------------------------------------------------------------------------


def _same_value(ours: Any, theirs: Any) -> bool:
    """Our decoded value equals python-diameter's, across the two stacks' Python types."""
    if isinstance(ours, IPv4Address | IPv6Address):
        return bool(theirs == (1 if ours.version == 4 else 2, str(ours)))
    if isinstance(ours, datetime):  # they give naive UTC datetimes
        return bool(theirs == ours.astimezone(UTC).replace(tzinfo=None))
    if isinstance(ours, str) and isinstance(theirs, bytes):  # DiameterIdentity, URI
        return ours.encode() == theirs
    if isinstance(ours, int) and isinstance(theirs, bytes):  # 3GPP-Charging-Id (allow-listed)
        return ours.to_bytes(len(theirs), "big") == theirs
    return bool(ours == theirs)


def assert_same_tree(ours: list[Avp], theirs: list[Any], path: str = "") -> None:
    assert len(ours) == len(theirs), path
    for o, t in zip(ours, theirs, strict=True):
        where = f"{path}/{o.name}"
        assert (o.code, o.vendor, o.flags) == (t.code, t.vendor_id, t.flags), where
        if o.children is not None:
            assert isinstance(t, pd_avp.AvpGrouped), where
            assert_same_tree(o.children, t.value, where)
        else:
            assert o.payload == t.payload, where
            assert _same_value(o.value, t.value), (where, o.value, t.value)


def assert_same_message(raw: bytes) -> tuple[codec.Message, Any]:
    """Both stacks decode ``raw`` to the same header and AVP tree; returns both decodings."""
    ours = codec.decode(raw)
    plain = PdMessage.from_bytes(raw, plain_msg=True)
    h = plain.header
    assert (h.command_code, h.application_id, h.command_flags) == (
        ours.command,
        ours.app_id,
        ours.flags,
    )
    assert (h.hop_by_hop_identifier, h.end_to_end_identifier) == (ours.hbh_id, ours.e2e_id)
    assert h.length == len(raw)
    assert_same_tree(ours.avps, plain.avps)
    return ours, PdMessage.from_bytes(raw)


def test_python_diameter_reads_our_cer_and_cea() -> None:
    _, cer = assert_same_message(our_cer())
    assert type(cer) is pd_ce.CapabilitiesExchangeRequest
    assert cer.origin_host == PGW.encode()
    assert cer.host_ip_address == [(1, "192.0.2.10"), (2, "2001:db8::10")]
    assert cer.supported_vendor_id == [VENDOR_3GPP]
    assert cer.auth_application_id == [4]
    (vsai,) = cer.vendor_specific_application_id
    assert (vsai.vendor_id, vsai.auth_application_id) == (VENDOR_3GPP, 4)
    assert cer.firmware_revision == 1
    _, cea = assert_same_message(our_cea())
    assert type(cea) is pd_ce.CapabilitiesExchangeAnswer
    assert cea.result_code == ResultCode.DIAMETER_SUCCESS
    assert cea.product_name == "ocs"


def test_python_diameter_reads_our_dwr_and_dwa() -> None:
    _, dwr = assert_same_message(our_dwr())
    assert type(dwr) is pd_dw.DeviceWatchdogRequest
    assert dwr.origin_state_id == 7
    _, dwa = assert_same_message(our_dwa())
    assert type(dwa) is pd_dw.DeviceWatchdogAnswer
    assert (dwa.result_code, dwa.origin_host, dwa.origin_realm) == (
        2001,
        HOST.encode(),
        b"example.org",
    )


@pytest.mark.parametrize("request_type", list(CcRequestType)[:3], ids=["CCR-I", "CCR-U", "CCR-T"])
def test_python_diameter_reads_our_ccr(request_type: CcRequestType) -> None:
    ours, ccr = assert_same_message(our_ccr(request_type, int(request_type)))
    assert type(ccr) is pd_cc.CreditControlRequest
    assert ccr.session_id == SESSION
    assert (ccr.cc_request_type, ccr.cc_request_number) == (request_type, request_type)
    assert ccr.event_timestamp == WHEN.replace(tzinfo=None)
    assert [(s.subscription_id_type, s.subscription_id_data) for s in ccr.subscription_id] == [
        (0, "491701234567"),
        (1, "001011234567890"),
    ]
    assert [m.rating_group for m in ccr.multiple_services_credit_control] == [10, 20]
    for mscc in ccr.multiple_services_credit_control:
        if request_type == CcRequestType.INITIAL_REQUEST:
            assert mscc.used_service_unit == []
        else:
            (usu,) = mscc.used_service_unit
            assert usu.cc_output_octets == 2**40 + mscc.rating_group
            assert usu.reporting_reason == 3
    ps = ccr.service_information.ps_information
    assert ps.called_station_id == "iot.m2m"
    assert ps.tgpp_rat_type == b"\x06"
    assert ps.ggsn_address == [(2, "2001:db8::13")]
    assert ps.qos_information.qos_class_identifier == 9
    assert ccr.user_equipment_info.user_equipment_info_value == b"3534900698733190"
    assert ours.get(A.AVP_CC_REQUEST_TYPE) == request_type


def test_python_diameter_reads_our_cca_with_gsu_and_final_unit_indication() -> None:
    _, cca = assert_same_message(our_cca())
    assert type(cca) is pd_cc.CreditControlAnswer
    first, second = cca.multiple_services_credit_control
    assert first.granted_service_unit.cc_total_octets == 10_485_760
    assert first.granted_service_unit.cc_time == 3600
    assert (first.validity_time, first.result_code, first.volume_quota_threshold) == (
        1800,
        2001,
        1_048_576,
    )
    assert first.final_unit_indication is None
    fui = second.final_unit_indication
    assert fui.final_unit_action == FinalUnitAction.REDIRECT
    assert fui.redirect_server.redirect_server_address == "https://topup.example.org/"


# -- python-diameter's messages -------------------------------------------------------------


def pd_cer() -> bytes:
    m = pd_ce.CapabilitiesExchangeRequest()
    m.header.hop_by_hop_identifier, m.header.end_to_end_identifier = 5, 6
    m.origin_host = PGW.encode()
    m.origin_realm = REALM.encode()
    m.host_ip_address = ["192.0.2.10", "2001:db8::10"]
    m.vendor_id = 10415
    m.product_name = "pgw"
    m.origin_state_id = 99
    m.supported_vendor_id = [VENDOR_3GPP]
    m.auth_application_id = [4]
    m.vendor_specific_application_id = [
        pd_grouped.VendorSpecificApplicationId(vendor_id=VENDOR_3GPP, auth_application_id=4)
    ]
    return bytes(m.as_bytes())


def pd_cea() -> bytes:
    m = pd_ce.CapabilitiesExchangeAnswer()
    m.result_code = 2001
    m.origin_host = HOST.encode()
    m.origin_realm = REALM.encode()
    m.host_ip_address = ["192.0.2.1"]
    m.vendor_id = 0
    m.product_name = "ocs"
    m.auth_application_id = [4]
    return bytes(m.as_bytes())


def pd_dwr() -> bytes:
    m = pd_dw.DeviceWatchdogRequest()
    m.origin_host = PGW.encode()
    m.origin_realm = REALM.encode()
    m.origin_state_id = 3
    return bytes(m.as_bytes())


def pd_dwa() -> bytes:
    m = pd_dw.DeviceWatchdogAnswer()
    m.result_code = 2001
    m.origin_host = HOST.encode()
    m.origin_realm = REALM.encode()
    return bytes(m.as_bytes())


def pd_ccr() -> bytes:
    m = pd_cc.CreditControlRequest()
    m.header.hop_by_hop_identifier, m.header.end_to_end_identifier = 0x1234, 0x5678
    m.header.application_id = Application.CREDIT_CONTROL  # not set by python-diameter
    m.session_id = SESSION
    m.origin_host = PGW.encode()
    m.origin_realm = REALM.encode()
    m.destination_realm = REALM.encode()
    m.auth_application_id = 4
    m.service_context_id = "32251@3gpp.org"
    m.cc_request_type = 2
    m.cc_request_number = 3
    m.event_timestamp = WHEN.replace(tzinfo=None)
    m.subscription_id = [
        pd_grouped.SubscriptionId(subscription_id_type=0, subscription_id_data="491701234567"),
        pd_grouped.SubscriptionId(subscription_id_type=1, subscription_id_data="001011234567890"),
    ]
    m.multiple_services_indicator = 1
    # keyword arguments only: MultipleServicesCreditControl's positional order is not ours
    m.multiple_services_credit_control = [
        pd_grouped.MultipleServicesCreditControl(
            requested_service_unit=pd_grouped.RequestedServiceUnit(),
            used_service_unit=[
                pd_grouped.UsedServiceUnit(
                    cc_total_octets=2**33, cc_input_octets=2**32, cc_output_octets=2**32
                )
            ],
            rating_group=10,
            service_identifier=[1010],
            reporting_reason=[3],
        )
    ]
    m.service_information = pd_grouped.ServiceInformation(
        ps_information=pd_grouped.PsInformation(
            tgpp_charging_id=b"\x0c\x0f\xfe\xe1",
            tgpp_pdp_type=0,
            pdp_address=["10.45.0.17"],
            sgsn_address=["172.16.1.9"],
            ggsn_address=["2001:db8::13"],
            tgpp_imsi_mcc_mnc="00101",
            called_station_id="iot.m2m",
            tgpp_rat_type=b"\x06",
            tgpp_user_location_info=bytes.fromhex("8200f110000100f110000a1b2c"),
        )
    )
    return bytes(m.as_bytes())


def pd_cca() -> bytes:
    m = pd_cc.CreditControlAnswer()
    m.header.application_id = Application.CREDIT_CONTROL
    m.session_id = SESSION
    m.result_code = 2001
    m.origin_host = HOST.encode()
    m.origin_realm = REALM.encode()
    m.auth_application_id = 4
    m.cc_request_type = 2
    m.cc_request_number = 3
    mscc = pd_grouped.MultipleServicesCreditControl()
    mscc.granted_service_unit = pd_grouped.GrantedServiceUnit(cc_total_octets=10_485_760)
    mscc.rating_group = 10
    mscc.validity_time = 1800
    mscc.result_code = 2001
    mscc.final_unit_indication = pd_grouped.FinalUnitIndication(final_unit_action=0)
    m.multiple_services_credit_control = [mscc]
    return bytes(m.as_bytes())


@pytest.mark.parametrize(
    "make", [pd_cer, pd_cea, pd_dwr, pd_dwa, pd_ccr, pd_cca], ids=lambda f: f.__name__
)
def test_we_read_python_diameter_messages(make: Any) -> None:
    raw = make()
    ours, _ = assert_same_message(raw)
    assert ours.encode() == raw  # python-diameter pads with zeros too: byte-exact


def test_we_read_python_diameter_ccr_values() -> None:
    m = codec.decode(pd_ccr())
    assert (m.command, m.app_id, m.is_request, m.hbh_id, m.e2e_id) == (272, 4, True, 0x1234, 0x5678)
    assert m.get(A.AVP_SESSION_ID) == SESSION
    assert m.get(A.AVP_CC_REQUEST_TYPE) == CcRequestType.UPDATE_REQUEST
    assert m.get(A.AVP_EVENT_TIMESTAMP) == WHEN
    subs = [
        (s.get(A.AVP_SUBSCRIPTION_ID_TYPE), s.get(A.AVP_SUBSCRIPTION_ID_DATA))
        for s in m.find_all(A.AVP_SUBSCRIPTION_ID)
    ]
    assert subs == [(0, "491701234567"), (1, "001011234567890")]
    (mscc,) = m.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    assert mscc.get(A.AVP_RATING_GROUP) == 10
    assert mscc.get(A.AVP_SERVICE_IDENTIFIER) == 1010
    usu = mscc.find(A.AVP_USED_SERVICE_UNIT)
    assert usu is not None
    assert usu.get(A.AVP_CC_TOTAL_OCTETS) == 2**33
    assert mscc.get(A.AVP_3GPP_REPORTING_REASON) == 3
    service = m.find(A.AVP_SERVICE_INFORMATION)
    assert service is not None
    ps = service.find(A.AVP_PS_INFORMATION)
    assert ps is not None
    assert ps.get(A.AVP_3GPP_CHARGING_ID) == 0x0C0FFEE1
    assert ps.get(A.AVP_PDP_ADDRESS) == IPv4Address("10.45.0.17")
    assert ps.get(A.AVP_GGSN_ADDRESS) == IPv6Address("2001:db8::13")
    assert ps.get(A.AVP_3GPP_RAT_TYPE) == b"\x06"
    assert codec.find_unknown_mandatory(m.avps) is None


def test_we_read_python_diameter_cca_values() -> None:
    m = codec.decode(pd_cca())
    assert not m.is_request
    assert m.get(A.AVP_RESULT_CODE) == 2001
    assert m.get(A.AVP_ORIGIN_HOST) == HOST
    (mscc,) = m.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    gsu = mscc.find(A.AVP_GRANTED_SERVICE_UNIT)
    fui = mscc.find(A.AVP_FINAL_UNIT_INDICATION)
    assert gsu is not None
    assert fui is not None
    assert gsu.get(A.AVP_CC_TOTAL_OCTETS) == 10_485_760
    assert (mscc.get(A.AVP_VALIDITY_TIME), mscc.get(A.AVP_RESULT_CODE)) == (1800, 2001)
    assert fui.get(A.AVP_FINAL_UNIT_ACTION) == FinalUnitAction.TERMINATE


# -- dictionaries agree ---------------------------------------------------------------------

# python-diameter has no class for these types; on the wire they are octets.
_WIRE_CLASS = {
    AvpType.OCTET_STRING: "AvpOctetString",
    AvpType.INTEGER32: "AvpInteger32",
    AvpType.ENUMERATED: "AvpInteger32",  # its AvpEnumerated *is* AvpInteger32
    AvpType.INTEGER64: "AvpInteger64",
    AvpType.UNSIGNED32: "AvpUnsigned32",
    AvpType.UNSIGNED64: "AvpUnsigned64",
    AvpType.FLOAT32: "AvpFloat32",
    AvpType.FLOAT64: "AvpFloat64",
    AvpType.GROUPED: "AvpGrouped",
    AvpType.ADDRESS: "AvpAddress",
    AvpType.TIME: "AvpTime",
    AvpType.UTF8_STRING: "AvpUtf8String",
    AvpType.DIAMETER_IDENTITY: "AvpOctetString",
    AvpType.DIAMETER_URI: "AvpOctetString",
    AvpType.IP_FILTER_RULE: "AvpOctetString",
    AvpType.QOS_FILTER_RULE: "AvpOctetString",
}

# Where we deliberately differ from python-diameter. Each entry: our AVP name -> its class.
KNOWN_DISAGREEMENTS = {
    # RFC 6733 4.5 / 7.1: Result-Code is Unsigned32; python-diameter has Enumerated (Integer32).
    # Same 4 bytes; only values >= 2**31 would read differently (none are defined).
    "Result-Code": "AvpInteger32",
    # RFC 6733 8.17, 8.9, 6.11: Unsigned32 in the RFC; Integer32 in python-diameter.
    "Session-Binding": "AvpInteger32",
    "Authorization-Lifetime": "AvpInteger32",
    "Inband-Security-Id": "AvpInteger32",
    # RFC 6733 6.13: DiameterURI (ASCII text); python-diameter reads it as UTF8String.
    "Redirect-Host": "AvpUtf8String",
    # TS 29.061 16.4.7.2: the Charging ID is a 4-octet unsigned integer; python-diameter (and
    # Wireshark) keep the raw octets. Same bytes; we give the charging layer an int.
    "3GPP-Charging-Id": "AvpOctetString",
    # TS 29.061 16.4.7.2: "a single octet ... 0xFF" - octets, not text.
    "3GPP-Session-Stop-Indicator": "AvpUtf8String",
    # TS 32.299 7.2.7: Access-Network-Information is OctetString.
    "Access-Network-Information": "AvpUtf8String",
}


def _pd_dictionary() -> dict[int, Any]:
    table: dict[int, Any] = dict(pd_dictionary.AVP_DICTIONARY)
    for vendor, entries in pd_dictionary.AVP_VENDOR_DICTIONARY.items():
        for code, info in entries.items():
            table[code | vendor << 32] = info
    return table


def test_avp_types_agree_with_python_diameter() -> None:
    theirs = _pd_dictionary()
    compared = 0
    disagreements = {}
    for key, ours in DICTIONARY.items():
        info = theirs.get(key)
        if info is None:
            continue
        compared += 1
        their_class = info["type"].__name__
        if their_class != _WIRE_CLASS[ours.type]:
            disagreements[ours.name] = their_class
    assert disagreements == KNOWN_DISAGREEMENTS
    assert compared > 250  # nearly our whole dictionary is known to python-diameter


def test_avp_names_agree_with_python_diameter() -> None:
    theirs = _pd_dictionary()
    renamed = {
        d.name: theirs[k]["name"]
        for k, d in DICTIONARY.items()
        if k in theirs and theirs[k]["name"].lower() != d.name.lower()
    }
    # spelling differences only; the RFC / TS names are on our side
    assert renamed == {
        "Acct-Multi-Session-Id": "Accounting-Multi-Session-Id",  # RFC 6733 9.8.5 spelling
        "3GPP-IPv6-DNS-Servers": "3GPP-IPv6-DNS-Server",  # TS 29.061 16.4.7.2
        "SIP-Method": "3GPP-SIP-Method",  # TS 32.299 7.2.195
    }


def test_benchmark_workload_is_equivalent_in_both_stacks() -> None:
    """tools/bench_codec.py compares like with like: each stack reads the other's CCA and our
    CCR to the same values (the check the benchmark runs before timing)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "bench_codec.py"
    spec = importlib.util.spec_from_file_location("bench_codec", path)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ccr = bench.build_ccr().encode()
    bench.check_equivalence(ccr, bench.build_cca_ours(), bench.build_cca_pd())
    assert len(list(codec.decode(ccr).walk())) == 78
