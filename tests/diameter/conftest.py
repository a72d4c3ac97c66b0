"""Shared helpers for the Diameter codec tests: the extracted capture vectors and a padding
normaliser that walks the *original* bytes (independently of the codec under test)."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Avp, avp, build_message, grouped, i32, octets, text, u32, u64
from ocs.diameter.constants import (
    AVP_FLAG_VENDOR,
    HEADER_LENGTH,
    VENDOR_3GPP,
    Application,
    CcRequestType,
    Command,
    FinalUnitAction,
    ResultCode,
    SubscriptionIdType,
)
from ocs.diameter.dictionary import GROUPED_KEYS

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"
HOST, REALM = "ocs.example.org", "example.org"
PGW = "pgw01.example.org"
SESSION = f"{PGW};1620246696;42"
WHEN = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)


def vector_files() -> list[Path]:
    return sorted(VECTORS_DIR.glob("*.hex"))


def load_vector_file(path: Path) -> list[bytes]:
    return [bytes.fromhex(line) for line in path.read_text().split()]


def all_vectors() -> list[tuple[str, int, bytes]]:
    """(capture name, index in capture, message bytes) for every extracted message."""
    return [
        (path.stem, i, raw)
        for path in vector_files()
        for i, raw in enumerate(load_vector_file(path))
    ]


def zero_padding(raw: bytes) -> bytes:
    """``raw`` with every AVP padding byte set to zero.

    Recurses into the grouped AVPs our dictionary knows (those the codec re-encodes from their
    children); unknown AVPs are opaque to the codec, so their payload, padding included, is kept.
    """
    out = bytearray(raw)
    _zero_avps(out, HEADER_LENGTH, len(out))
    return bytes(out)


def _zero_avps(buf: bytearray, start: int, end: int) -> None:
    off = start
    while off < end:
        code = int.from_bytes(buf[off : off + 4], "big")
        flags = buf[off + 4]
        length = int.from_bytes(buf[off + 5 : off + 8], "big")
        if flags & AVP_FLAG_VENDOR:
            vendor = int.from_bytes(buf[off + 8 : off + 12], "big")
            data_start = off + 12
        else:
            vendor = 0
            data_start = off + 8
        data_end = off + length
        if (code | vendor << 32) in GROUPED_KEYS:
            _zero_avps(buf, data_start, data_end)
        padded_end = min(end, data_end + (-length & 3))
        buf[data_end:padded_end] = bytes(padded_end - data_end)
        off = padded_end


# -- sample messages built with our codec (interop and dissector tests) ------------------------


def _origin(host: str = HOST) -> list[Avp]:
    return [text(A.AVP_ORIGIN_HOST, host), text(A.AVP_ORIGIN_REALM, REALM)]


def our_cer() -> bytes:
    return build_message(
        Command.CAPABILITIES_EXCHANGE,
        Application.COMMON,
        [
            *_origin(PGW),
            avp(A.AVP_HOST_IP_ADDRESS, IPv4Address("192.0.2.10")),
            avp(A.AVP_HOST_IP_ADDRESS, IPv6Address("2001:db8::10")),
            u32(A.AVP_VENDOR_ID, 0),
            text(A.AVP_PRODUCT_NAME, "ocs"),
            u32(A.AVP_ORIGIN_STATE_ID, 1700000000),
            u32(A.AVP_SUPPORTED_VENDOR_ID, VENDOR_3GPP),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
            grouped(
                A.AVP_VENDOR_SPECIFIC_APPLICATION_ID,
                [
                    u32(A.AVP_VENDOR_ID, VENDOR_3GPP),
                    u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
                ],
            ),
            u32(A.AVP_FIRMWARE_REVISION, 1),
        ],
        proxiable=False,
        hbh_id=0x11,
        e2e_id=0x22,
    ).encode()


def our_cea() -> bytes:
    return build_message(
        Command.CAPABILITIES_EXCHANGE,
        Application.COMMON,
        [
            u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS),
            *_origin(),
            avp(A.AVP_HOST_IP_ADDRESS, "192.0.2.1"),
            u32(A.AVP_VENDOR_ID, 0),
            text(A.AVP_PRODUCT_NAME, "ocs"),
            u32(A.AVP_SUPPORTED_VENDOR_ID, VENDOR_3GPP),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
        ],
        request=False,
        proxiable=False,
        hbh_id=0x11,
        e2e_id=0x22,
    ).encode()


def our_dwr() -> bytes:
    return build_message(
        Command.DEVICE_WATCHDOG,
        Application.COMMON,
        [*_origin(PGW), u32(A.AVP_ORIGIN_STATE_ID, 7)],
        proxiable=False,
        hbh_id=0x33,
        e2e_id=0x44,
    ).encode()


def our_dwa() -> bytes:
    return build_message(
        Command.DEVICE_WATCHDOG,
        Application.COMMON,
        [u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS), *_origin()],
        request=False,
        proxiable=False,
        hbh_id=0x33,
        e2e_id=0x44,
    ).encode()


def _subscription(kind: int, data: str) -> Avp:
    return grouped(
        A.AVP_SUBSCRIPTION_ID,
        [i32(A.AVP_SUBSCRIPTION_ID_TYPE, kind), text(A.AVP_SUBSCRIPTION_ID_DATA, data)],
    )


def _service_information() -> Avp:
    qos = grouped(
        A.AVP_QOS_INFORMATION,
        [
            i32(A.AVP_QOS_CLASS_IDENTIFIER, 9),
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
            avp(A.AVP_GGSN_ADDRESS, IPv6Address("2001:db8::13")),
            text(A.AVP_3GPP_IMSI_MCC_MNC, "00101"),
            text(A.AVP_3GPP_GGSN_MCC_MNC, "00101"),
            octets(A.AVP_3GPP_NSAPI, b"5"),
            text(A.AVP_CALLED_STATION_ID, "iot.m2m"),
            text(A.AVP_3GPP_SELECTION_MODE, "0"),
            text(A.AVP_3GPP_CHARGING_CHARACTERISTICS, "0800"),
            text(A.AVP_3GPP_SGSN_MCC_MNC, "00101"),
            octets(A.AVP_3GPP_MS_TIMEZONE, b"\x40\x00"),
            octets(A.AVP_3GPP_USER_LOCATION_INFO, bytes.fromhex("8200f110000100f110000a1b2c")),
            octets(A.AVP_3GPP_RAT_TYPE, b"\x06"),
        ],
    )
    return grouped(A.AVP_SERVICE_INFORMATION, [ps])


def our_ccr(request_type: int, number: int) -> bytes:
    msccs = []
    for rg in (10, 20):
        children: list[Avp] = []
        if request_type != CcRequestType.TERMINATION_REQUEST:
            children.append(grouped(A.AVP_REQUESTED_SERVICE_UNIT, []))
        if request_type != CcRequestType.INITIAL_REQUEST:
            children.append(
                grouped(
                    A.AVP_USED_SERVICE_UNIT,
                    [
                        u64(A.AVP_CC_INPUT_OCTETS, 1000 + rg),
                        u64(A.AVP_CC_OUTPUT_OCTETS, 2**40 + rg),
                        u64(A.AVP_CC_TOTAL_OCTETS, 2**40 + 1000 + 2 * rg),
                        u32(A.AVP_CC_TIME, 60),
                        i32(A.AVP_3GPP_REPORTING_REASON, 3),
                    ],
                )
            )
        children += [u32(A.AVP_SERVICE_IDENTIFIER, 1000 + rg), u32(A.AVP_RATING_GROUP, rg)]
        msccs.append(grouped(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, children))
    avps = [
        text(A.AVP_SESSION_ID, SESSION),
        *_origin(PGW),
        text(A.AVP_DESTINATION_REALM, REALM),
        u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
        text(A.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
        i32(A.AVP_CC_REQUEST_TYPE, request_type),
        u32(A.AVP_CC_REQUEST_NUMBER, number),
        avp(A.AVP_EVENT_TIMESTAMP, WHEN),
        _subscription(SubscriptionIdType.END_USER_E164, "491701234567"),
        _subscription(SubscriptionIdType.END_USER_IMSI, "001011234567890"),
        i32(A.AVP_MULTIPLE_SERVICES_INDICATOR, 1),
        *msccs,
        grouped(
            A.AVP_USER_EQUIPMENT_INFO,
            [
                i32(A.AVP_USER_EQUIPMENT_INFO_TYPE, 0),
                octets(A.AVP_USER_EQUIPMENT_INFO_VALUE, b"3534900698733190"),
            ],
        ),
        _service_information(),
    ]
    if request_type == CcRequestType.TERMINATION_REQUEST:
        avps.append(i32(A.AVP_TERMINATION_CAUSE, 1))
    return build_message(
        Command.CREDIT_CONTROL, Application.CREDIT_CONTROL, avps, hbh_id=number, e2e_id=0xE2E
    ).encode()


def our_cca() -> bytes:
    msccs = [
        grouped(
            A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
            [
                grouped(
                    A.AVP_GRANTED_SERVICE_UNIT,
                    [u64(A.AVP_CC_TOTAL_OCTETS, 10_485_760), u32(A.AVP_CC_TIME, 3600)],
                ),
                u32(A.AVP_RATING_GROUP, 10),
                u32(A.AVP_VALIDITY_TIME, 1800),
                u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS),
                u32(A.AVP_VOLUME_QUOTA_THRESHOLD, 1_048_576),
            ],
        ),
        grouped(
            A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
            [
                grouped(A.AVP_GRANTED_SERVICE_UNIT, [u64(A.AVP_CC_TOTAL_OCTETS, 4096)]),
                u32(A.AVP_RATING_GROUP, 20),
                u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS),
                grouped(
                    A.AVP_FINAL_UNIT_INDICATION,
                    [
                        i32(A.AVP_FINAL_UNIT_ACTION, FinalUnitAction.REDIRECT),
                        grouped(
                            A.AVP_REDIRECT_SERVER,
                            [
                                i32(A.AVP_REDIRECT_ADDRESS_TYPE, 2),
                                text(A.AVP_REDIRECT_SERVER_ADDRESS, "https://topup.example.org/"),
                            ],
                        ),
                    ],
                ),
            ],
        ),
    ]
    return build_message(
        Command.CREDIT_CONTROL,
        Application.CREDIT_CONTROL,
        [
            text(A.AVP_SESSION_ID, SESSION),
            u32(A.AVP_RESULT_CODE, ResultCode.DIAMETER_SUCCESS),
            *_origin(),
            u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
            i32(A.AVP_CC_REQUEST_TYPE, CcRequestType.UPDATE_REQUEST),
            u32(A.AVP_CC_REQUEST_NUMBER, 1),
            *msccs,
        ],
        request=False,
        hbh_id=1,
        e2e_id=0xE2E,
    ).encode()
