"""A pool's ``name`` (what invoices call it): set in a catalogue document, shown by
``GET /v1/pools/{id}``, and validated like every name of the catalogue (one line of at most
200 characters) on each path that writes one: ``POST /v1/catalogue`` and the folder
(``ocs catalog apply``) for pools and accounts, CRM import for accounts (pools come only
from the catalogue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ocs.rating.errors import CatalogueError
from ocs.rating.loader import load_catalogue
from tests.api.conftest import Api, demo_documents


def _with_pool_name(name: str) -> dict[str, Any]:
    docs = demo_documents()
    for pool in docs["subscribers.yaml"]["pools"]:
        if pool["id"] == "acme-pool":
            pool["name"] = name
    return docs


async def test_a_pool_name_is_applied_and_shown(demo: Api) -> None:
    r = await demo.request("POST", "/v1/catalogue", json={"documents": _with_pool_name("Flotte")})
    assert r.status_code == 200, r.text
    assert (await demo.request("GET", "/v1/pools/acme-pool")).json()["name"] == "Flotte"
    assert (await demo.request("GET", "/v1/pools/acme-events")).json()["name"] == ""


@pytest.mark.parametrize("bad", ["Flotte\x07", "two\nlines", "x" * 201])
async def test_a_bad_pool_or_account_name_is_refused_naming_it(demo: Api, bad: str) -> None:
    before = (await demo.request("GET", "/v1/pools/acme-pool")).json()
    r = await demo.request("POST", "/v1/catalogue", json={"documents": _with_pool_name(bad)})
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "name" in r.text and "pools" in r.text
    docs = demo_documents()
    docs["subscribers.yaml"]["accounts"][0]["name"] = bad
    r = await demo.request("POST", "/v1/catalogue", json={"documents": docs})
    assert r.status_code in (400, 422) and "name" in r.text, r.text
    assert (await demo.request("GET", "/v1/pools/acme-pool")).json() == before  # unchanged
    # CRM import: the row is rejected naming the column, the others are imported
    rows = f'id,name\ncrm-ok,Fine GmbH\ncrm-bad,"{bad}"\n'
    r = await demo.request(
        "POST", "/v1/imports/accounts", content=rows, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == 1
    assert [x["field"] for x in body["rejected"]] == ["name"]


def test_a_bad_pool_name_in_the_folder_names_file_and_field(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "policies" / "demo"
    for item in demo.glob("*.yaml"):
        (tmp_path / item.name).write_text(item.read_text())
    docs = _with_pool_name("bad\x00name")
    (tmp_path / "subscribers.yaml").write_text(yaml.safe_dump(docs["subscribers.yaml"]))
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(tmp_path)
    text = str(caught.value)
    assert "subscribers.yaml" in text and "name" in text and "control characters" in text
