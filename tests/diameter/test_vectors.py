"""Real traffic from equipment and stacks we did not write (../shared/vectors, extracted into
tests/vectors by tools/extract_vectors.py): every message decodes, re-encodes byte-exact except
for padding, and the fields the charging layer needs are readable."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ocs.diameter import avp_codes as A
from ocs.diameter import codec
from ocs.diameter.constants import Application, CcRequestType, Command
from ocs.diameter.framer import Framer

from .conftest import all_vectors, load_vector_file, vector_files, zero_padding

FILES = vector_files()
FILE_IDS = [p.stem for p in FILES]
VECTORS = {p.stem: p for p in FILES}
GO_DIAMETER = "hexvec_go-diameter_message_test"
MAGMA_04 = "magma_gx_gy_combined_04_210505_133027-1"

# (requests, answers) per capture, as printed by tools/extract_vectors.py and cross-checked
# against `tshark -Y diameter` counts of the same files.
EXPECTED_COUNTS = {
    GO_DIAMETER: (1, 0),
    "lbo-charging-artifact_T1-MOD1_baseline-gy": (9, 9),
    "lbo-charging-artifact_T4-MOD1_baseline_gy": (11, 11),
    "magma_gx_gy_combined_03_210505_132953-1": (62, 62),
    MAGMA_04: (644, 644),
    "magma_gx_gy_combined_05_210505_133111-1": (35, 35),
    "magma_gx_gy_combined_06_210505_133132-1": (32, 32),
    "ntop-nDPI_diameter": (3, 3),
}


def _is_ccr(message: codec.Message) -> bool:
    return message.is_request and message.command == Command.CREDIT_CONTROL


def test_every_capture_was_extracted() -> None:
    counts = {}
    for path in FILES:
        messages = load_vector_file(path)
        requests = sum(1 for raw in messages if raw[4] & 0x80)
        counts[path.stem] = (requests, len(messages) - requests)
    assert counts == EXPECTED_COUNTS


def test_magma_04_holds_the_documented_gy_sessions() -> None:
    """README: 32 sessions, 32 CCR-I, 368 CCR-U, 32 CCR-T (and their CCAs)."""
    kinds: Counter[int] = Counter()
    answers = 0
    for raw in load_vector_file(VECTORS[MAGMA_04]):
        message = codec.decode(raw)
        if message.app_id != Application.CREDIT_CONTROL or message.command != 272:
            continue
        if message.is_request:
            kinds[message.get(A.AVP_CC_REQUEST_TYPE)] += 1
        else:
            answers += 1
    assert kinds == {
        CcRequestType.INITIAL_REQUEST: 32,
        CcRequestType.UPDATE_REQUEST: 368,
        CcRequestType.TERMINATION_REQUEST: 32,
    }
    assert answers == 432


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_every_message_decodes_and_reencodes_exactly_except_padding(path: Path) -> None:
    messages = load_vector_file(path)
    assert messages
    mismatches = []
    for i, raw in enumerate(messages):
        message = codec.decode(raw)
        if message.encode() != zero_padding(raw):
            mismatches.append(i)
    assert mismatches == []


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_every_value_of_every_message_is_readable(path: Path) -> None:
    errors = []
    values = 0
    for i, raw in enumerate(load_vector_file(path)):
        for avp in codec.decode(raw).walk():
            try:
                _ = avp.value
            except Exception as exc:  # collect them all for one readable failure
                errors.append((i, avp.name, repr(exc)))
            values += 1
    assert errors == []
    assert values > 0


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_framer_splits_the_concatenated_capture_at_any_chunk_size(path: Path) -> None:
    messages = load_vector_file(path)
    stream = b"".join(messages)
    for chunk in (1, 7, 64, 1500, len(stream)):
        framer = Framer()
        out: list[bytes] = []
        for off in range(0, len(stream), chunk):
            out.extend(framer.feed(stream[off : off + chunk]))
        assert out == messages
        assert framer.buffered == 0


def test_go_diameter_vector_has_non_zero_padding_and_we_write_zeros() -> None:
    (raw,) = load_vector_file(VECTORS[GO_DIAMETER])
    canonical = zero_padding(raw)
    assert canonical != raw, "the go-diameter vector is the non-zero padding edge case"
    assert len(canonical) == len(raw)
    message = codec.decode(raw)
    assert message.encode() == canonical
    assert codec.decode(canonical).encode() == canonical
    # the padding does not leak into values
    assert message.get(A.AVP_SESSION_ID)
    assert message.get(A.AVP_CC_REQUEST_TYPE) == CcRequestType.INITIAL_REQUEST


def test_every_ccr_has_readable_session_request_type_and_mscc() -> None:
    ccrs = 0
    msccs = 0
    for name, i, raw in all_vectors():
        message = codec.decode(raw)
        if not _is_ccr(message):
            continue
        ccrs += 1
        where = f"{name}#{i}"
        session_id = message.get(A.AVP_SESSION_ID)
        assert isinstance(session_id, str), where
        assert session_id, where
        assert message.get(A.AVP_CC_REQUEST_TYPE) in set(CcRequestType), where
        assert isinstance(message.get(A.AVP_CC_REQUEST_NUMBER), int), where
        for mscc in message.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL):
            msccs += 1
            assert isinstance(mscc.value, list), where
            for child in mscc.walk():
                _ = child.value
            rating_group = mscc.get(A.AVP_RATING_GROUP)
            assert rating_group is None or isinstance(rating_group, int), where
    assert ccrs == 1 + 5 + 5 + 16 + 496 + 7 + 6 + 3
    assert msccs > 400


def test_gy_requests_carry_no_unknown_mandatory_avp() -> None:
    """Our dictionary covers everything a real PGW/SMF put in these Gy requests (no 5001)."""
    unknown = []
    for name, i, raw in all_vectors():
        message = codec.decode(raw)
        if message.is_request and message.app_id == Application.CREDIT_CONTROL:
            found = codec.find_unknown_mandatory(message.avps)
            if found is not None:
                unknown.append((name, i, found.name))
    assert unknown == []


def test_magma_ccr_u_reports_usage_per_rating_group() -> None:
    """Spot-check values against what tshark shows for the first CCR-U of capture 04."""
    for raw in load_vector_file(VECTORS[MAGMA_04]):
        message = codec.decode(raw)
        if (
            _is_ccr(message)
            and message.app_id == Application.CREDIT_CONTROL
            and message.get(A.AVP_CC_REQUEST_TYPE) == CcRequestType.UPDATE_REQUEST
        ):
            break
    else:
        pytest.fail("no CCR-U in capture 04")
    (mscc,) = message.find_all(A.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    assert mscc.get(A.AVP_RATING_GROUP) in {1, 2, 3, 9}
    usu = mscc.find(A.AVP_USED_SERVICE_UNIT)
    assert usu is not None
    total = usu.get(A.AVP_CC_TOTAL_OCTETS)
    assert total == usu.get(A.AVP_CC_INPUT_OCTETS) + usu.get(A.AVP_CC_OUTPUT_OCTETS)
    service_info = message.find(A.AVP_SERVICE_INFORMATION)
    assert service_info is not None
    ps = service_info.find(A.AVP_PS_INFORMATION)
    assert ps is not None
    assert isinstance(ps.get(A.AVP_3GPP_RAT_TYPE), bytes)
    assert isinstance(ps.get(A.AVP_CALLED_STATION_ID), str)


def test_fragmented_sctp_message_was_reassembled() -> None:
    """Capture 06 holds a 1,536-byte message sent over two SCTP DATA chunks."""
    sizes = [
        len(raw) for raw in load_vector_file(VECTORS["magma_gx_gy_combined_06_210505_133132-1"])
    ]
    assert max(sizes) > 1436
