"""Generate a CRM export for ``ocs import``: accounts (enterprise customers, each with end
customers) and subscriptions on the demo catalogue (policies/demo), as CSV or JSON Lines.

    .venv/bin/python tools/gen_crm.py --out /tmp/crm --subscriptions 100000 --accounts 1000

Subscriptions are a mix: 70 % one plan and a pool payer (``plan``/``payer`` columns), 20 %
two SIM twins (events and data, ``twins`` JSON column), 10 % consumer SIMs on a wallet.
``--variant N`` changes the properties of every N-th subscription and the plan of every
(2N)-th (an update run); the same seed and variant always give the same files.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IMSI_BASE = 262_035_000_000_000
MSISDN_BASE = 491_750_000_000
ICCID_BASE = 8_949_000_000_000_000_000  # 19 digits (ITU-T E.118 without the check digit)
ACCOUNT_COLUMNS = ["id", "name", "parent", "kind", "payment", "currency", "tax_profile", "bill_day"]
SUB_COLUMNS = ["imsi", "msisdn", "iccid", "account", "plan", "payer", "properties", "twins"]
TWINS = [
    {
        "id": "events",
        "priority": 5,
        "filter": {"service": ["event"]},
        "payer": {"kind": "prepaid_pool", "id": "acme-events"},
        "plan": "iot-pool",
    },
    {
        "id": "data",
        "priority": 10,
        "filter": {"apn": ["iot.demo"]},
        "payer": {"kind": "prepaid_pool", "id": "acme-pool"},
        "plan": "iot-pool",
    },
]


def accounts(count: int) -> Iterator[dict[str, Any]]:
    """``count`` customers; every fourth has two end customers under it."""
    for i in range(count):
        ident = f"crm-{i:06d}"
        yield {
            "id": ident,
            "name": f"Customer {i} GmbH",
            "kind": "enterprise",
            "payment": "prepaid",
            "currency": "EUR",
            "tax_profile": "de-vat",
            "bill_day": 1 + i % 28,
        }
        if i % 4 == 0:
            for j in range(2):
                yield {
                    "id": f"{ident}-{j}",
                    "name": f"End customer {j} of {i}",
                    "parent": ident,
                    "kind": "enterprise",
                    "payment": "prepaid",
                    "currency": "EUR",
                    "bill_day": 1 + i % 28,
                }


def subscriptions(
    count: int, account_ids: list[str], seed: int, variant: int = 0
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(count):
        row: dict[str, Any] = {
            "imsi": str(IMSI_BASE + i),
            "msisdn": str(MSISDN_BASE + i),
            "iccid": str(ICCID_BASE + i),
            "account": account_ids[rng.randrange(len(account_ids))],
        }
        sensors = 1 + rng.randrange(8)
        if variant and i % variant == 0:
            sensors += 100
        kind = rng.random()
        if kind < 0.7:
            plan = "agri-retail" if variant and i % (2 * variant) == 0 else "iot-pool"
            row.update(plan=plan, payer="prepaid_pool:acme-pool", properties={"sensors": sensors})
        elif kind < 0.9:
            twins = [dict(t) for t in TWINS]
            twins[0]["properties"] = {"sensors": sensors}
            row["twins"] = twins
        else:
            row.update(account="bob", plan="consumer-data", payer="wallet:bob-wallet")
        yield row


def _cell(value: object) -> str:
    if isinstance(value, dict) and value and all(isinstance(v, int) for v in value.values()):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def write_csv(path: Path, columns: list[str], rows: Iterator[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[c]) if c in row else "" for c in columns])
            n += 1
    return n


def write_jsonl(path: Path, rows: Iterator[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
            n += 1
    return n


def generate(
    out: Path, n_subs: int, n_accounts: int, fmt: str = "csv", seed: int = 7, variant: int = 0
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    ext = "csv" if fmt == "csv" else "jsonl"
    acc_path, sub_path = out / f"accounts.{ext}", out / f"subscriptions.{ext}"
    ids = [a["id"] for a in accounts(n_accounts)]
    if fmt == "csv":
        write_csv(acc_path, ACCOUNT_COLUMNS, accounts(n_accounts))
        write_csv(sub_path, SUB_COLUMNS, subscriptions(n_subs, ids, seed, variant))
    else:
        write_jsonl(acc_path, accounts(n_accounts))
        write_jsonl(sub_path, subscriptions(n_subs, ids, seed, variant))
    return acc_path, sub_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--format", choices=["csv", "json"], default="csv")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variant", type=int, default=0, help="update every N-th row")
    args = parser.parse_args()
    acc, sub = generate(
        args.out, args.subscriptions, args.accounts, args.format, args.seed, args.variant
    )
    print(f"{acc}\n{sub}")


if __name__ == "__main__":
    main()
