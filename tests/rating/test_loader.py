"""Catalogue loading: the demo is clean, bad files give (file, path, reason) for every error,
never-matching twins give warnings, and hot reload swaps atomically or not at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocs.rating import (
    Catalogue,
    CatalogueError,
    CatalogueHolder,
    Severity,
    check_catalog,
    main_check,
)
from ocs.rating.loader import _StrictLoader, check_documents, parse_document

from .helpers import DEMO, base_document


def test_demo_loads_without_errors_or_warnings(demo: Catalogue) -> None:
    report = check_catalog(DEMO)
    assert report.ok
    assert report.issues == ()
    summary = demo.summary()
    assert summary["plans"] == 6 and summary["sims"] == 1004 and summary["warnings"] == 0
    assert demo.tenant.id == "demo" and demo.home_plmn == "26201"


def test_demo_sim_range_is_expanded(demo: Catalogue) -> None:
    first, last = demo.sims_by_imsi["262010000000000"], demo.sims_by_imsi["262010000000999"]
    assert (first.msisdn, last.msisdn) == ("491700000000", "491700000999")
    assert "262010000001000" not in demo.sims_by_imsi
    assert demo.sims_by_msisdn["491700000500"].imsi == "262010000000500"
    assert first.twins is last.twins  # one compiled twin set shared by the whole range
    assert demo.pools["acme-pool"].size == 10_000_000_000
    assert demo.wallets["bob-wallet"].balance == 1000
    assert demo.sims_by_msisdn["491709999999"].imsi == "262019999999999"


def test_main_check_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_check(str(DEMO)) == 0
    out = capsys.readouterr().out
    assert "tenant 'demo' OK" in out and "6 plans" in out and "1004 sims" in out


def write(folder: Path, name: str, data: Any) -> None:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (folder / name).write_text(text, encoding="utf-8")


def test_bad_files_report_every_error_with_file_and_path(tmp_path: Path) -> None:
    doc = base_document()
    plans = doc.pop("plans")
    plans[0]["versions"][0]["tariffs"][0]["rates"]["any"]["tiers"][0]["price"] = 0.1  # float
    plans.append(
        {
            "id": "p2",
            "currency": "EUR",
            "versions": [
                {"effective_from": "2024-01-01T00:00:00Z", "zone_set": "nope", "tariffs": []}
            ],
        }
    )
    plans.append(
        {
            "id": "p3",
            "currency": "EUR",
            "versions": [
                {
                    "effective_from": "2024-01-01T00:00:00Z",
                    "zone_set": "zs",
                    "tariffs": [
                        {
                            "service": "data",
                            "zone": "mars",
                            "rates": {"any": {"tiers": [{"from": 5, "price": "1"}]}},
                        }
                    ],
                }
            ],
        }
    )
    write(tmp_path, "a.yaml", doc)
    write(tmp_path, "b.yaml", {"plans": plans, "bogus": []})
    write(tmp_path, "c.yaml", "plans: [unclosed\n")
    report = check_catalog(tmp_path)
    assert not report.ok and report.catalogue is None
    found = {(i.file, i.path) for i in report.errors}
    assert ("b.yaml", "plans[0].versions[0].tariffs[0].rates.any.tiers[0].price") in found
    assert ("b.yaml", "plans[1].versions[0].zone_set") in found
    assert ("b.yaml", "plans[2].versions[0].tariffs[0].rates.any") in found  # first tier from 5
    assert ("b.yaml", "bogus") in found
    assert any(i.file == "c.yaml" and "cannot read YAML" in i.reason for i in report.errors)
    # the SIM's plan p1 failed validation: reported as a follow-up reference error
    assert ("a.yaml", "sims[0].twins[0].plans[0].plan") in found
    for issue in report.errors:
        assert issue.reason and issue.file
    float_error = next(i for i in report.errors if i.path.endswith("tiers[0].price"))
    assert "float" in float_error.reason


def test_cross_reference_errors(tmp_path: Path) -> None:
    doc = base_document()
    twin = doc["sims"][0]["twins"][0]
    twin["payer"] = {"kind": "prepaid_pool", "id": "post"}  # a postpaid pool
    doc["sims"][0]["twins"].append(
        {**twin, "id": "main", "payer": {"kind": "wallet", "id": "ghost"}}
    )
    doc["sims"].append({**doc["sims"][0]})  # same IMSI twice
    doc["accounts"].append({"id": "b", "parent": "nobody"})
    doc["wallets"].append({"id": "usd", "account": "a", "currency": "USD"})
    doc["sims"].append(
        {
            "imsi": "262010000000002",
            "account": "a",
            "twins": [
                {
                    "id": "x",
                    "payer": {"kind": "wallet", "id": "usd"},
                    "plans": [{"plan": "p1", "from": "2024-01-01T00:00:00Z"}],
                }
            ],
        }
    )
    write(tmp_path, "all.yaml", doc)
    report = check_catalog(tmp_path)
    reasons = {(i.path, i.reason.split(" ")[0]) for i in report.errors}
    assert ("sims[0].twins[0].payer.kind", "pool") in reasons
    assert ("sims[0].twins[1].id", "duplicate") in reasons
    assert ("sims[0].twins[1].priority", "priority") in reasons
    assert ("sims[0].twins[1].payer.id", "unknown") in reasons
    assert any("defined twice" in i.reason for i in report.errors)
    assert ("accounts[1].parent", "unknown") in reasons
    assert any("holds USD" in i.reason for i in report.errors)


def test_missing_tenant_and_empty_folder(tmp_path: Path) -> None:
    report = check_catalog(tmp_path)
    assert not report.ok and "no .yaml files" in report.errors[0].reason
    doc = base_document()
    del doc["tenant"]
    assert any(i.path == "tenant" for i in check_documents({"x.yaml": doc}).errors)


def test_strict_yaml_keeps_norway(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t.yaml",
        yaml.safe_dump({k: v for k, v in base_document().items() if k != "countries"}),
    )
    write(
        tmp_path,
        "c.yaml",
        "countries:\n  - {code: NO, mcc: ['242']}\n  - {code: DE, mcc: ['262']}\n",
    )
    report = check_catalog(tmp_path)
    assert report.ok, report.issues
    assert report.catalogue is not None and report.catalogue.mcc_country["242"] == "NO"


def twins_doc(filters: list[dict[str, Any]]) -> dict[str, Any]:
    doc = base_document()
    template = doc["sims"][0]["twins"][0]
    doc["sims"][0]["twins"] = [
        {**template, "id": f"t{i}", "priority": i, "filter": f} for i, f in enumerate(filters)
    ]
    return doc


@pytest.mark.parametrize(
    ("filters", "twin", "words"),
    [
        ([{}, {"apn": ["x"]}], "t1", "takes every usage"),  # catch-all first
        ([{"apn": ["x", "y"]}, {"apn": ["x"], "rat": ["NR"]}], "t1", "takes every usage"),
        ([{"apn": ["a"], "all": [{"apn": ["b"]}]}], "t0", "leave nothing"),
        ([{"rat": []}], "t0", "leave nothing"),
        ([{"not": {}}], "t0", "'not' of a filter"),
        ([{"any": [{"country": ["FR"], "region": ["nowhere-land"]}]}], "t0", "never match"),
        ([{"network": ["26201"], "country": ["FR"]}], "t0", "no 'network'"),
    ],
)
def test_warnings_for_twins_that_never_match(
    filters: list[dict[str, Any]], twin: str, words: str
) -> None:
    report = check_documents({"s.yaml": twins_doc(filters)})
    warnings = [w for w in report.warnings if f"twin {twin!r}" in w.reason]
    assert warnings and words in warnings[0].reason, report.issues
    assert warnings[0].severity is Severity.WARNING and warnings[0].path.startswith(
        "sims[0].twins["
    )


def test_no_warning_for_disjoint_twins() -> None:
    report = check_documents({"s.yaml": twins_doc([{"apn": ["a"]}, {"apn": ["b"]}, {}])})
    assert report.ok and report.warnings == ()


def test_hot_reload_swaps_only_valid_catalogues(tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    shutil.copytree(DEMO, folder)
    holder = CatalogueHolder.from_path(folder)
    before = holder.current
    plans = folder / "plans.yaml"
    good_text = plans.read_text()
    plans.write_text(good_text.replace('price: "0.5"}', "price: 0.5}"))  # a float price
    report = holder.reload()
    assert not report.ok and holder.current is before
    assert any(i.file == "plans.yaml" for i in report.errors)
    plans.write_text(good_text.replace('{from: 0, price: "9"}', '{from: 0, price: "11"}'))
    report = holder.reload()
    assert report.ok and holder.current is not before
    sms = holder.current.plans["consumer-data"].versions[-1].tariffs
    assert any(t.fallback is not None and t.fallback.numerators == (11,) for t in sms.values())


def test_load_catalogue_raises_with_all_errors(tmp_path: Path) -> None:
    from ocs.rating import load_catalogue

    write(tmp_path, "x.yaml", {"plans": [{"id": "p"}, {"id": "q"}]})
    with pytest.raises(CatalogueError) as info:
        load_catalogue(tmp_path)
    assert len(info.value.issues) >= 3  # two bad plans and no tenant
    assert main_check(str(tmp_path)) == 1


def test_unprovisioned_holder_takes_the_first_catalogue_then_keeps_its_tenant(
    tmp_path: Path,
) -> None:
    # A node started before any catalogue was applied serves a placeholder tenant; the first
    # `ocs catalog apply` must reach it without a restart, later ones may not switch tenant.
    placeholder = check_documents(
        {
            "tenant.yaml": {
                "tenant": {
                    "id": "unprovisioned",
                    "name": "none",
                    "home_network": "00101",
                    "time_zone": "UTC",
                    "currency": "EUR",
                }
            }
        }
    ).catalogue
    assert placeholder is not None
    holder = CatalogueHolder(placeholder)
    assert holder.reload(DEMO).ok
    assert holder.current.tenant.id == "demo"
    other = tmp_path / "other"
    shutil.copytree(DEMO, other)
    tenant_file = other / "tenant.yaml"
    tenant_file.write_text(tenant_file.read_text().replace("id: demo", "id: other", 1))
    report = holder.reload(other)
    assert not report.ok
    assert any(i.path == "tenant.id" for i in report.issues)
    assert holder.current.tenant.id == "demo"


def test_json_files_read_as_json_and_yaml_flow_style_still_yaml() -> None:
    """The API writes catalogue folders as JSON (which is YAML too); both parsers give the
    same document, a YAML flow mapping that is not JSON still parses as YAML, and the
    strict booleans hold on the libyaml parser (NO is Norway)."""
    for path in sorted(DEMO.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        document = parse_document(text)
        assert document == yaml.load(text, Loader=_StrictLoader)
        assert parse_document(json.dumps(document, indent=1)) == document
    assert parse_document("{code: NO, on: yes}") == {"code": "NO", "on": "yes"}
    assert parse_document('  ["NO", true]') == ["NO", True]


def test_sims_with_equal_twins_share_one_compiled_set() -> None:
    """Thousands of SIMs of one customer on the same twins hold one set of twin objects
    (memory per SIM, issue 13); a SIM whose twins differ gets its own, and each SIM still
    resolves to its own subscription."""
    from datetime import UTC, datetime

    from ocs.rating import UsageContext, resolve

    doc = base_document()
    first = doc["sims"][0]
    same = [{**first, "imsi": f"00101000000{n:04d}", "msisdn": None} for n in range(3)]
    other_twin = {**first["twins"][0], "properties": {"sensors": 7}}
    different = {**first, "imsi": "001010000009999", "msisdn": None, "twins": [other_twin]}
    doc["sims"] = [*same, different]
    for sim in doc["sims"]:
        if sim["msisdn"] is None:
            del sim["msisdn"]
    report = check_documents({"s.yaml": doc})
    assert report.ok and report.catalogue is not None, report.issues
    sims = [report.catalogue.sims_by_imsi[s["imsi"]] for s in doc["sims"]]
    assert sims[0].twins is sims[1].twins is sims[2].twins
    assert sims[0].by_apn is sims[2].by_apn and sims[0].apn_free is sims[2].apn_free
    assert sims[3].twins is not sims[0].twins
    assert sims[3].twins[0].spec.properties == {"sensors": 7}
    assert sims[0].twins[0].spec.properties == first["twins"][0].get("properties", {})
    at = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    for sim in sims:
        usage = UsageContext(tenant="t", imsi=sim.imsi, event_time=at, quantity=1)
        assert resolve(report.catalogue, usage).imsi == sim.imsi


def test_twins_with_issues_are_reported_for_every_sim() -> None:
    doc = base_document()
    first = doc["sims"][0]
    bad = {
        **first["twins"][0],
        "plans": [{"plan": "no-such-plan", "from": "2024-01-01T00:00:00+00:00"}],
    }
    doc["sims"] = [{**first, "imsi": f"00101000000{n:04d}", "twins": [bad]} for n in range(2)]
    for sim in doc["sims"]:
        sim.pop("msisdn", None)
    report = check_documents({"s.yaml": doc})
    paths = {i.path for i in report.errors if "no-such-plan" in i.reason}
    assert {p.split(".")[0] for p in paths} == {"sims[0]", "sims[1]"}, report.issues
