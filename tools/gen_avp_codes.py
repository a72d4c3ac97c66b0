"""Generate ocs/diameter/avp_codes.py from ocs/diameter/avps.tsv.

Run after editing the TSV: ``python tools/gen_avp_codes.py``. A test checks the two agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TSV = ROOT / "ocs" / "diameter" / "avps.tsv"
OUT = ROOT / "ocs" / "diameter" / "avp_codes.py"


def constant_name(avp_name: str) -> str:
    return "AVP_" + re.sub(r"[^A-Za-z0-9]+", "_", avp_name).strip("_").upper()


def render() -> str:
    lines = [
        '"""AVP keys (``code | vendor << 32``), generated from avps.tsv by tools/gen_avp_codes.py.',
        "",
        "Do not edit by hand.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Final",
        "",
    ]
    for raw in TSV.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        code, vendor, _type, _m, name = raw.split("\t")
        key = int(code) | (int(vendor) << 32)
        lines.append(f"{constant_name(name)}: Final = {key}  # {code}/{vendor}")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        return 0 if OUT.read_text() == text else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
