"""Extract every Diameter message from the shared captures into ``tests/vectors/<name>.hex``.

One message per line, lower-case hex, in capture order. The tests read these files, so they do
not need tshark at run time. Run after the captures change::

    .venv/bin/python tools/extract_vectors.py [--pcap-dir DIR] [--out-dir DIR]

How messages are found:

* SCTP (pcapng, Magma): every user message with payload protocol id 46 (Diameter) is one whole
  Diameter message; tshark reassembles the few that are fragmented over several DATA chunks.
  Retransmitted chunks are dropped by (addresses, ports, TSN).
* TCP (pcap, incl. Linux cooked capture): the payload of each stream and direction is
  reassembled by sequence number (retransmissions and overlaps dropped) and split into messages
  with our own :class:`~ocs.diameter.framer.Framer`.

tshark does the packet parsing; we only ask it for raw fields.
"""

from __future__ import annotations

import argparse
import bisect
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ocs.diameter.framer import Framer  # noqa: E402

DEFAULT_PCAP_DIR = ROOT.parent / "shared" / "vectors" / "pcap"
DEFAULT_OUT_DIR = ROOT / "tests" / "vectors"
DIAMETER_PPID = "46"
DECODE_AS = ["-d", "tcp.port==3868,diameter", "-d", "sctp.port==3868,diameter"]


def _tshark(
    path: Path, fields: list[str], display_filter: str, extra: tuple[str, ...] = ()
) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), *DECODE_AS, *extra, "-Y", display_filter, "-T", "fields"]
    for field in fields:
        cmd += ["-e", field]
    cmd += ["-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def _split(value: str) -> list[str]:
    return value.split(",") if value else []


def sctp_messages(path: Path) -> list[bytes]:
    fields = [
        "ip.src",
        "ipv6.src",
        "sctp.srcport",
        "ip.dst",
        "ipv6.dst",
        "sctp.dstport",
        "sctp.data_tsn",
        "sctp.data_payload_proto_id",
        "sctp.data_e_bit",
        "data.data",
    ]
    seen: set[tuple[str, ...]] = set()
    out: list[bytes] = []
    # With the Diameter dissector off, the payload of each PPID 46 message shows up as data.data
    # (chunks of other protocols, e.g. S1AP, are still dissected and give no data.data). tshark
    # reassembles fragmented messages and shows the whole payload on the last fragment (E bit).
    rows = _tshark(path, fields, "sctp.data_payload_proto_id", ("--disable-protocol", "diameter"))
    for row in rows:
        src4, src6, sport, dst4, dst6, dport, tsns, ppids, ebits, datas = row
        direction = (src4 or src6, sport, dst4 or dst6, dport)
        last_fragments = [
            tsn
            for tsn, ppid, ebit in zip(_split(tsns), _split(ppids), _split(ebits), strict=True)
            if ppid == DIAMETER_PPID and ebit in {"1", "True"}
        ]
        for tsn, data in zip(last_fragments, _split(datas), strict=True):
            key = (*direction, tsn)
            if key in seen:  # retransmission
                continue
            seen.add(key)
            out.extend(Framer().feed(bytes.fromhex(data.replace(":", ""))))
    return out


def tcp_messages(path: Path) -> list[bytes]:
    fields = ["frame.number", "tcp.stream", "tcp.srcport", "tcp.seq", "tcp.payload"]
    segments: dict[tuple[str, str], dict[int, tuple[int, bytes]]] = defaultdict(dict)
    for frame, stream, sport, seq, payload in _tshark(path, fields, "tcp.len > 0"):
        data = bytes.fromhex(payload.replace(":", ""))
        segments[(stream, sport)].setdefault(int(seq), (int(frame), data))
    # (frame that completed the message, position in its direction, message): capture order
    found: list[tuple[int, int, bytes]] = []
    for segs in segments.values():
        stream_bytes = bytearray()
        ends: list[tuple[int, int]] = []  # (stream offset after this segment, frame)
        base = min(segs)
        for seq in sorted(segs):
            frame, data = segs[seq]
            have = base + len(stream_bytes)
            if seq + len(data) <= have:
                continue  # full retransmission
            stream_bytes += data[have - seq :] if seq < have else data
            ends.append((len(stream_bytes), frame))
        offset = 0
        for i, message in enumerate(Framer().feed(bytes(stream_bytes))):
            offset += len(message)
            done = bisect.bisect_left(ends, (offset, 0))
            found.append((ends[done][1], i, message))
    found.sort(key=lambda item: (item[0], item[1]))
    return [message for _, _, message in found]


def extract(path: Path) -> list[bytes]:
    if path.suffix == ".pcapng":
        return sctp_messages(path) + tcp_messages(path)
    return tcp_messages(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pcap-dir", type=Path, default=DEFAULT_PCAP_DIR)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args()
    if shutil.which("tshark") is None:
        print("tshark not installed: apt-get install tshark", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.pcap_dir.iterdir()):
        if path.suffix not in {".pcap", ".pcapng"}:
            continue
        messages = extract(path)
        requests = sum(1 for m in messages if m[4] & 0x80)
        target = args.out_dir / f"{path.stem}.hex"
        target.write_text("".join(m.hex() + "\n" for m in messages))
        print(
            f"{path.name}: {len(messages)} messages "
            f"({requests} requests, {len(messages) - requests} answers) -> {target.name}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
