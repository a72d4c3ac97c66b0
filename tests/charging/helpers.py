from __future__ import annotations

from ocs.balance import BalanceStore, BucketState
from ocs.diameter import avp_codes as A
from ocs.diameter.codec import Avp, Message, decode

ACME_IMSI = "262010000000001"
ACME_MSISDN = "491700000001"
ACME_POOL = "demo:prepaid_pool:acme-pool"
ACME_EVENTS = "demo:prepaid_pool:acme-events"
BOB_IMSI = "262019999999999"
BOB_MSISDN = "491709999999"
BOB_WALLET = "demo:wallet:bob-wallet"
SUSPENDED_IMSI = "262010000999001"


def wire(msg: Message) -> Message:
    """Through bytes, as the server will see it (and as a socket variant will send it)."""
    return decode(msg.encode())


def msccs(answer: Message) -> dict[int, Avp]:
    return {
        int(m.get(A.AVP_RATING_GROUP, 0)): m
        for m in answer.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    }


def granted(mscc: Avp) -> int | None:
    gsu = mscc.find(A.AVP_GRANTED_SERVICE_UNIT)
    if gsu is None:
        return None
    for key in (A.AVP_CC_TOTAL_OCTETS, A.AVP_CC_SERVICE_SPECIFIC_UNITS, A.AVP_CC_TIME):
        value = gsu.get(key)
        if value is not None:
            return int(value)
    return None


async def bucket(store: BalanceStore, payer: str, bucket_id: str) -> BucketState:
    return {b.id: b for b in await store.buckets(payer)}[bucket_id]
