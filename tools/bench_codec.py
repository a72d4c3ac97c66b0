"""Codec benchmark: our Diameter codec against python-diameter 0.9, side by side in one run.

    .venv/bin/python tools/bench_codec.py [--quick]

Workload: a realistic Gy CCR-U (two Subscription-Id, three MSCCs with RSU/USU, full
PS-Information) and its CCA (three MSCCs with GSU, Validity-Time, Result-Code,
Volume-Quota-Threshold, one with Final-Unit-Indication). Before timing, each stack decodes the
other's bytes and the values are compared, so both sides do the same work.

Measured (median per operation, microseconds, over many batches):

* ``decode``: ours ``codec.decode(raw)`` (whole AVP tree, leaf values lazy) vs
  python-diameter ``Message.from_bytes(raw)`` (whole tree, every value decoded);
* ``decode_all_values``: ours decode plus reading ``.value`` of every AVP;
* ``encode``: building the CCA from values and serialising it: ours with the codec builders and
  ``Message.encode()``, python-diameter with its message and grouped classes and ``as_bytes()``;
* ``reencode``: serialising an already decoded CCR.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diameter.message import Message as PdMessage
from diameter.message.avp.grouped import (
    FinalUnitIndication,
    GrantedServiceUnit,
    MultipleServicesCreditControl,
)
from diameter.message.commands.credit_control import CreditControlAnswer

from ocs.diameter import avp_codes as A
from ocs.diameter import codec
from ocs.diameter.codec import avp, build_message, grouped, i32, octets, text, u32, u64
from ocs.diameter.constants import (
    Application,
    CcRequestType,
    Command,
    FinalUnitAction,
    ReportingReason,
    ResultCode,
    SubscriptionIdType,
)

SESSION_ID = "pgw01.epc.mnc001.mcc001.3gppnetwork.org;1620246696;42;0x3a2f"
ORIGIN_HOST = "ocs01.epc.mnc001.mcc001.3gppnetwork.org"
ORIGIN_REALM = "epc.mnc001.mcc001.3gppnetwork.org"
HBH, E2E = 0x1234ABCD, 0x9ABC0001
RATING_GROUPS = (10, 20, 30)
GSU_OCTETS = 10_485_760
GSU_TIME = 3600
VALIDITY = 1800
THRESHOLD = 1_048_576


def build_ccr() -> codec.Message:
    """A CCR-U as a PGW sends it mid-session."""
    msccs = []
    for i, rg in enumerate(RATING_GROUPS):
        msccs.append(
            grouped(
                A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
                [
                    grouped(A.AVP_REQUESTED_SERVICE_UNIT, []),
                    grouped(
                        A.AVP_USED_SERVICE_UNIT,
                        [
                            u64(A.AVP_CC_INPUT_OCTETS, 1_000_000 + i),
                            u64(A.AVP_CC_OUTPUT_OCTETS, 4_000_000 + i),
                            u64(A.AVP_CC_TOTAL_OCTETS, 5_000_000 + 2 * i),
                            u32(A.AVP_CC_TIME, 600 + i),
                            i32(A.AVP_3GPP_REPORTING_REASON, ReportingReason.QUOTA_EXHAUSTED),
                        ],
                    ),
                    u32(A.AVP_SERVICE_IDENTIFIER, 1000 + rg),
                    u32(A.AVP_RATING_GROUP, rg),
                ],
            )
        )
    qos = grouped(
        A.AVP_QOS_INFORMATION,
        [
            i32(A.AVP_QOS_CLASS_IDENTIFIER, 9),
            u32(A.AVP_MAX_REQUESTED_BANDWIDTH_UL, 50_000_000),
            u32(A.AVP_MAX_REQUESTED_BANDWIDTH_DL, 150_000_000),
            grouped(
                A.AVP_ALLOCATION_RETENTION_PRIORITY,
                [
                    u32(A.AVP_PRIORITY_LEVEL, 8),
                    i32(A.AVP_PRE_EMPTION_CAPABILITY, 1),
                    i32(A.AVP_PRE_EMPTION_VULNERABILITY, 0),
                ],
            ),
            u32(A.AVP_APN_AGGREGATE_MAX_BITRATE_UL, 50_000_000),
            u32(A.AVP_APN_AGGREGATE_MAX_BITRATE_DL, 150_000_000),
        ],
    )
    ps = grouped(
        A.AVP_PS_INFORMATION,
        [
            u32(A.AVP_3GPP_CHARGING_ID, 0x0C0FFEE1),
            i32(A.AVP_3GPP_PDP_TYPE, 0),
            avp(A.AVP_PDP_ADDRESS, IPv4Address("10.45.0.17")),
            qos,
            avp(A.AVP_SGSN_ADDRESS, IPv4Address("172.16.1.9")),
            avp(A.AVP_GGSN_ADDRESS, IPv4Address("172.16.1.13")),
            text(A.AVP_3GPP_IMSI_MCC_MNC, "00101"),
            text(A.AVP_3GPP_GGSN_MCC_MNC, "00101"),
            octets(A.AVP_3GPP_NSAPI, b"5"),
            text(A.AVP_CALLED_STATION_ID, "iot.m2m"),
            text(A.AVP_3GPP_SELECTION_MODE, "0"),
            text(A.AVP_3GPP_CHARGING_CHARACTERISTICS, "0800"),
            text(A.AVP_3GPP_SGSN_MCC_MNC, "00101"),
            octets(A.AVP_3GPP_MS_TIMEZONE, b"\x40\x00"),
            octets(
                A.AVP_3GPP_USER_LOCATION_INFO,
                bytes.fromhex("8200f1100001" + "00f110000a1b2c"),
            ),
            octets(A.AVP_3GPP_RAT_TYPE, b"\x06"),
        ],
    )
    avps = [
        text(A.AVP_SESSION_ID, SESSION_ID),
        text(A.AVP_ORIGIN_HOST, "pgw01.epc.mnc001.mcc001.3gppnetwork.org"),
        text(A.AVP_ORIGIN_REALM, ORIGIN_REALM),
        text(A.AVP_DESTINATION_REALM, ORIGIN_REALM),
        u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
        text(A.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
        i32(A.AVP_CC_REQUEST_TYPE, CcRequestType.UPDATE_REQUEST),
        u32(A.AVP_CC_REQUEST_NUMBER, 7),
        text(A.AVP_DESTINATION_HOST, ORIGIN_HOST),
        u32(A.AVP_ORIGIN_STATE_ID, 1620246696),
        avp(A.AVP_EVENT_TIMESTAMP, 3829235496),
        grouped(
            A.AVP_SUBSCRIPTION_ID,
            [
                i32(A.AVP_SUBSCRIPTION_ID_TYPE, SubscriptionIdType.END_USER_E164),
                text(A.AVP_SUBSCRIPTION_ID_DATA, "491701234567"),
            ],
        ),
        grouped(
            A.AVP_SUBSCRIPTION_ID,
            [
                i32(A.AVP_SUBSCRIPTION_ID_TYPE, SubscriptionIdType.END_USER_IMSI),
                text(A.AVP_SUBSCRIPTION_ID_DATA, "001011234567890"),
            ],
        ),
        i32(A.AVP_MULTIPLE_SERVICES_INDICATOR, 1),
        *msccs,
        grouped(
            A.AVP_USER_EQUIPMENT_INFO,
            [
                i32(A.AVP_USER_EQUIPMENT_INFO_TYPE, 0),
                octets(A.AVP_USER_EQUIPMENT_INFO_VALUE, b"3534900698733190"),
            ],
        ),
        grouped(A.AVP_SERVICE_INFORMATION, [ps]),
    ]
    return build_message(
        Command.CREDIT_CONTROL, Application.CREDIT_CONTROL, avps, hbh_id=HBH, e2e_id=E2E
    )


def build_cca_ours() -> bytes:
    """Our CCA for the CCR above, built from values and serialised."""
    msccs = []
    last = RATING_GROUPS[-1]
    for rg in RATING_GROUPS:
        children = [
            grouped(
                A.AVP_GRANTED_SERVICE_UNIT,
                [u64(A.AVP_CC_TOTAL_OCTETS, GSU_OCTETS), u32(A.AVP_CC_TIME, GSU_TIME)],
            ),
            u32(A.AVP_RATING_GROUP, rg),
            u32(A.AVP_VALIDITY_TIME, VALIDITY),
            u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS),
            u32(A.AVP_VOLUME_QUOTA_THRESHOLD, THRESHOLD),
        ]
        if rg == last:
            children.append(
                grouped(
                    A.AVP_FINAL_UNIT_INDICATION,
                    [i32(A.AVP_FINAL_UNIT_ACTION, FinalUnitAction.TERMINATE)],
                )
            )
        msccs.append(grouped(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, children))
    message = build_message(
        Command.CREDIT_CONTROL,
        Application.CREDIT_CONTROL,
        [
            text(A.AVP_SESSION_ID, SESSION_ID),
            u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS),
            text(A.AVP_ORIGIN_HOST, ORIGIN_HOST),
            text(A.AVP_ORIGIN_REALM, ORIGIN_REALM),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
            i32(A.AVP_CC_REQUEST_TYPE, CcRequestType.UPDATE_REQUEST),
            u32(A.AVP_CC_REQUEST_NUMBER, 7),
            *msccs,
        ],
        request=False,
        hbh_id=HBH,
        e2e_id=E2E,
    )
    return message.encode()


def build_cca_pd() -> bytes:
    """The same CCA built with python-diameter's message and grouped AVP classes."""
    answer = CreditControlAnswer()
    answer.header.command_flags = 0x40  # proxiable answer, like ours
    answer.header.application_id = Application.CREDIT_CONTROL
    answer.header.hop_by_hop_identifier = HBH
    answer.header.end_to_end_identifier = E2E
    answer.session_id = SESSION_ID
    answer.result_code = ResultCode.DIAMETER_SUCCESS
    answer.origin_host = ORIGIN_HOST.encode()
    answer.origin_realm = ORIGIN_REALM.encode()
    answer.auth_application_id = Application.CREDIT_CONTROL
    answer.cc_request_type = CcRequestType.UPDATE_REQUEST
    answer.cc_request_number = 7
    msccs = []
    last = RATING_GROUPS[-1]
    for rg in RATING_GROUPS:
        # keyword/attribute assignment: the positional order of these dataclasses is not
        # the wire order
        mscc = MultipleServicesCreditControl()
        mscc.granted_service_unit = GrantedServiceUnit(cc_total_octets=GSU_OCTETS, cc_time=GSU_TIME)
        mscc.rating_group = rg
        mscc.validity_time = VALIDITY
        mscc.result_code = ResultCode.DIAMETER_SUCCESS
        mscc.volume_quota_threshold = THRESHOLD
        if rg == last:
            mscc.final_unit_indication = FinalUnitIndication(
                final_unit_action=FinalUnitAction.TERMINATE
            )
        msccs.append(mscc)
    answer.multiple_services_credit_control = msccs
    return bytes(answer.as_bytes())


# -- equivalence checks ----------------------------------------------------------------------


def _cca_values_ours(raw: bytes) -> dict[str, Any]:
    m = codec.decode(raw)
    msccs = []
    for mscc in m.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL):
        gsu = mscc.find(A.AVP_GRANTED_SERVICE_UNIT)
        fui = mscc.find(A.AVP_FINAL_UNIT_INDICATION)
        assert gsu is not None
        msccs.append(
            (
                mscc.get(A.AVP_RATING_GROUP),
                gsu.get(A.AVP_CC_TOTAL_OCTETS),
                gsu.get(A.AVP_CC_TIME),
                mscc.get(A.AVP_VALIDITY_TIME),
                mscc.get(A.AVP_RESULT_CODE),
                mscc.get(A.AVP_VOLUME_QUOTA_THRESHOLD),
                None if fui is None else fui.get(A.AVP_FINAL_UNIT_ACTION),
            )
        )
    return {
        "header": (m.command, m.app_id, m.flags, m.hbh_id, m.e2e_id),
        "session_id": m.get(A.AVP_SESSION_ID),
        "result_code": m.get(A.AVP_RESULT_CODE),
        "origin_host": m.get(A.AVP_ORIGIN_HOST),
        "origin_realm": m.get(A.AVP_ORIGIN_REALM),
        "cc_request_type": m.get(A.AVP_CC_REQUEST_TYPE),
        "cc_request_number": m.get(A.AVP_CC_REQUEST_NUMBER),
        "msccs": msccs,
    }


def _cca_values_pd(raw: bytes) -> dict[str, Any]:
    m: Any = PdMessage.from_bytes(raw)
    h = m.header
    msccs = []
    for mscc in m.multiple_services_credit_control:
        gsu = mscc.granted_service_unit
        fui = mscc.final_unit_indication
        msccs.append(
            (
                mscc.rating_group,
                gsu.cc_total_octets,
                gsu.cc_time,
                mscc.validity_time,
                mscc.result_code,
                mscc.volume_quota_threshold,
                None if fui is None else fui.final_unit_action,
            )
        )
    return {
        "header": (
            h.command_code,
            h.application_id,
            h.command_flags,
            h.hop_by_hop_identifier,
            h.end_to_end_identifier,
        ),
        "session_id": m.session_id,
        "result_code": m.result_code,
        "origin_host": m.origin_host.decode(),
        "origin_realm": m.origin_realm.decode(),
        "cc_request_type": m.cc_request_type,
        "cc_request_number": m.cc_request_number,
        "msccs": msccs,
    }


def check_equivalence(ccr_raw: bytes, cca_ours: bytes, cca_pd: bytes) -> None:
    # CCA: each stack reads both encodings to the same values
    reference = _cca_values_ours(cca_ours)
    for reader in (_cca_values_ours, _cca_values_pd):
        for raw in (cca_ours, cca_pd):
            got = reader(raw)
            if got != reference:
                raise SystemExit(f"CCA mismatch ({reader.__name__}): {got} != {reference}")
    if len(cca_ours) != len(cca_pd):
        raise SystemExit(f"CCA sizes differ: {len(cca_ours)} != {len(cca_pd)}")
    # CCR: python-diameter reads our CCR to the same values
    pd: Any = PdMessage.from_bytes(ccr_raw)
    ours = codec.decode(ccr_raw)
    if type(pd).__name__ != "CreditControlRequest" or pd.session_id != SESSION_ID:
        raise SystemExit("python-diameter did not read our CCR")
    pd_rgs = [m.rating_group for m in pd.multiple_services_credit_control]
    pd_used = [m.used_service_unit[0].cc_total_octets for m in pd.multiple_services_credit_control]
    our_msccs = ours.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    our_used = []
    for mscc in our_msccs:
        usu = mscc.find(A.AVP_USED_SERVICE_UNIT)
        assert usu is not None
        our_used.append(usu.get(A.AVP_CC_TOTAL_OCTETS))
    if pd_rgs != list(RATING_GROUPS) or pd_used != our_used:
        raise SystemExit(f"CCR MSCC mismatch: {pd_rgs} {pd_used} vs {our_used}")
    ps = pd.service_information.ps_information
    if (
        ps.called_station_id != "iot.m2m"
        or ps.tgpp_sgsn_mcc_mnc != "00101"
        or [s.subscription_id_data for s in pd.subscription_id]
        != ["491701234567", "001011234567890"]
    ):
        raise SystemExit("CCR PS-Information / Subscription-Id mismatch")


# -- timing ----------------------------------------------------------------------------------


def measure(fn: Callable[[], object], batch: int, batches: int) -> float:
    """Median over ``batches`` of the mean time per call in a batch, in microseconds."""
    for _ in range(max(1, batch // 4)):  # warm-up
        fn()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(batches):
        start = clock()
        for _ in range(batch):
            fn()
        samples.append((clock() - start) / batch / 1000)
    return statistics.median(samples)


def _read_all_values(raw: bytes) -> int:
    n = 0
    for a in codec.decode(raw).walk():
        _ = a.value
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description="Diameter codec benchmark vs python-diameter")
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    args = parser.parse_args()
    batches = 5 if args.quick else 31
    fast, slow = (50, 5) if args.quick else (500, 30)

    ccr_message = build_ccr()
    ccr = ccr_message.encode()
    cca_ours = build_cca_ours()
    cca_pd = build_cca_pd()
    check_equivalence(ccr, cca_ours, cca_pd)
    decoded_ccr = codec.decode(ccr)

    results: dict[str, float] = {
        "decode_ours_us": measure(lambda: codec.decode(ccr), fast, batches),
        "decode_all_values_ours_us": measure(lambda: _read_all_values(ccr), fast, batches),
        "decode_pd_us": measure(lambda: PdMessage.from_bytes(ccr), slow, batches),
        "encode_ours_us": measure(build_cca_ours, fast, batches),
        "encode_pd_us": measure(build_cca_pd, slow, batches),
        "reencode_ours_us": measure(decoded_ccr.encode, fast, batches),
    }
    pd_decoded: Any = PdMessage.from_bytes(ccr)
    results["reencode_pd_us"] = measure(pd_decoded.as_bytes, slow, batches)
    out: dict[str, Any] = {k: round(v, 2) for k, v in results.items()}
    out["decode_ratio"] = round(results["decode_pd_us"] / results["decode_ours_us"], 1)
    out["decode_all_values_ratio"] = round(
        results["decode_pd_us"] / results["decode_all_values_ours_us"], 1
    )
    out["encode_ratio"] = round(results["encode_pd_us"] / results["encode_ours_us"], 1)
    out["reencode_ratio"] = round(results["reencode_pd_us"] / results["reencode_ours_us"], 1)
    out.update(
        ccr_bytes=len(ccr),
        ccr_avps=sum(1 for _ in decoded_ccr.walk()),
        cca_bytes=len(cca_ours),
        compiled=codec.__file__.endswith(".so"),
        python=platform.python_version(),
        nproc=os.cpu_count(),
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
