"""Message builders shared by the Diameter tests."""

from __future__ import annotations

from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Avp, Message, avp, build_message, grouped, text, u32, u64
from ocs.diameter.constants import Application, CcRequestType, Command

CLIENT_HOST = "pgw.test"
CLIENT_REALM = "test"


def cer(
    apps: tuple[int, ...] = (Application.CREDIT_CONTROL,),
    origin_host: str = CLIENT_HOST,
    extra: list[Avp] | None = None,
) -> Message:
    avps = [
        text(A.AVP_ORIGIN_HOST, origin_host),
        text(A.AVP_ORIGIN_REALM, CLIENT_REALM),
        avp(A.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
        u32(A.AVP_VENDOR_ID, 0),
        text(A.AVP_PRODUCT_NAME, "test-pgw"),
        *(u32(A.AVP_AUTH_APPLICATION_ID, a) for a in apps),
        *(extra or []),
    ]
    return build_message(
        Command.CAPABILITIES_EXCHANGE, 0, avps, proxiable=False, hbh_id=1, e2e_id=1
    )


def dwr(hbh: int = 2, origin_host: str = CLIENT_HOST) -> Message:
    avps = [text(A.AVP_ORIGIN_HOST, origin_host), text(A.AVP_ORIGIN_REALM, CLIENT_REALM)]
    return build_message(Command.DEVICE_WATCHDOG, 0, avps, proxiable=False, hbh_id=hbh, e2e_id=hbh)


def dpr(hbh: int = 3) -> Message:
    avps = [
        text(A.AVP_ORIGIN_HOST, CLIENT_HOST),
        text(A.AVP_ORIGIN_REALM, CLIENT_REALM),
        u32(A.AVP_DISCONNECT_CAUSE, 0),
    ]
    return build_message(Command.DISCONNECT_PEER, 0, avps, proxiable=False, hbh_id=hbh, e2e_id=hbh)


def ccr(
    session: str = "pgw.test;1;1",
    request_type: int = CcRequestType.INITIAL_REQUEST,
    number: int = 0,
    msisdn: str = "491700000001",
    hbh: int = 10,
    e2e: int | None = None,
    extra: list[Avp] | None = None,
    app_id: int = Application.CREDIT_CONTROL,
) -> Message:
    avps = [
        text(A.AVP_SESSION_ID, session),
        text(A.AVP_ORIGIN_HOST, CLIENT_HOST),
        text(A.AVP_ORIGIN_REALM, CLIENT_REALM),
        text(A.AVP_DESTINATION_REALM, "local"),
        u32(A.AVP_AUTH_APPLICATION_ID, Application.CREDIT_CONTROL),
        text(A.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
        u32(A.AVP_CC_REQUEST_TYPE, request_type),
        u32(A.AVP_CC_REQUEST_NUMBER, number),
        grouped(
            A.AVP_SUBSCRIPTION_ID,
            [u32(A.AVP_SUBSCRIPTION_ID_TYPE, 0), text(A.AVP_SUBSCRIPTION_ID_DATA, msisdn)],
        ),
        grouped(
            A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
            [
                grouped(A.AVP_REQUESTED_SERVICE_UNIT, [u64(A.AVP_CC_TOTAL_OCTETS, 1_000_000)]),
                u32(A.AVP_RATING_GROUP, 1),
            ],
        ),
        *(extra or []),
    ]
    return build_message(
        Command.CREDIT_CONTROL, app_id, avps, hbh_id=hbh, e2e_id=hbh if e2e is None else e2e
    )
