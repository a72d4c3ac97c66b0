"""One source of truth for what is in force: ``ocs catalog apply``, the API and CRM import
change the same tenant state, so no apply, restart or import drops what another front door
created; an identity of another tenant is refused at every door; a SIM changes tenant only
by ``ocs identity transfer``."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ocs.charging import create_charging
from ocs.cli import main as ocs_main
from ocs.config import Settings
from ocs.diameter import avp_codes as A
from ocs.errors import CommandError
from ocs.provisioning import identity
from ocs.provisioning.cli import main_identity
from ocs.provisioning.identity import owner_key
from ocs.provisioning.keys import state_key
from ocs.redis_client import RedisClient
from tests.api.conftest import DEMO, Api
from tests.charging.test_outcomes import data_ccr

GLOBEX = DEMO.parent / "globex"
API_IMSI, API_MSISDN = "262017777777701", "491707777701"
IMPORTED_IMSI = "262017777777702"


async def apply_catalog_cli(settings: Settings, path: str) -> int:
    """`ocs catalog apply PATH` on the test's Redis and data dir (in this process)."""
    argv = ["catalog", "apply", path, "--redis-url", str(settings.redis_url)]
    argv += ["--data-dir", str(settings.data_dir), "--log-level", "WARNING"]
    return await asyncio.to_thread(ocs_main, argv)


async def _code(settings: Settings, sid: str, imsi: str) -> int:
    """Result-Code of a CCR-I for ``imsi`` on a freshly started charging runtime (a
    restart of ``ocs serve``)."""
    runtime = await create_charging(settings, registry=CollectorRegistry(), start=False)
    try:
        answer = await runtime.application.handle_ccr(data_ccr(sid, imsi), None)
        return int(answer.get(A.AVP_RESULT_CODE))
    finally:
        await runtime.close()


async def test_api_and_imported_sims_keep_charging_after_catalog_apply_and_restart(
    api: Api, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await apply_catalog_cli(settings, str(DEMO)) == 0
    r = await api.request(
        "POST",
        "/v1/subscriptions",
        json={
            "imsi": API_IMSI,
            "msisdn": API_MSISDN,
            "account": "acme-iot",
            "plan": "iot-pool",
            "payer": {"kind": "prepaid_pool", "id": "acme-pool"},
        },
    )
    assert r.status_code == 201, r.text
    r = await api.request(
        "POST",
        "/v1/imports/subscriptions",
        content=f"imsi,account,plan,payer\n{IMPORTED_IMSI},acme-iot,iot-pool,"
        "prepaid_pool:acme-pool\n",
        headers={"Content-Type": "text/csv"},
    )
    assert r.json()["created"] == 1, r.text
    for imsi in (API_IMSI, IMPORTED_IMSI):
        assert await _code(settings, f"before;{imsi}", imsi) == 2001
    # the folder again (an operator's routine re-apply) under a running node, then restarts
    running = await create_charging(settings, registry=CollectorRegistry(), start=False)
    try:
        assert await apply_catalog_cli(settings, str(DEMO)) == 0
        assert await running.reload_if_applied() is True
        for imsi in (API_IMSI, IMPORTED_IMSI):
            answer = await running.application.handle_ccr(data_ccr(f"run;{imsi}", imsi), None)
            assert answer.get(A.AVP_RESULT_CODE) == 2001
    finally:
        await running.close()
    summary = json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")
    assert summary["sims"] == summary["from_folder"]["sims"] + 2
    for imsi in (API_IMSI, IMPORTED_IMSI, "262019999999999"):
        assert await _code(settings, f"after;{imsi}", imsi) == 2001
    r = await api.request("GET", f"/v1/subscriptions/{API_IMSI}")
    assert r.status_code == 200


async def test_a_folder_owns_what_it_declares_and_keeps_the_rest(
    api: Api, settings: Settings, redis: RedisClient, tmp_path: Path
) -> None:
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder)
    assert await apply_catalog_cli(settings, str(folder)) == 0
    r = await api.request("POST", "/v1/subscriptions/262019999999999/suspend")
    assert r.status_code == 200, r.text
    r = await api.request(
        "POST",
        "/v1/subscriptions",
        json={
            "imsi": API_IMSI,
            "account": "bob",
            "plan": "consumer-data",
            "payer": {"kind": "wallet", "id": "bob-wallet"},
        },
    )
    assert r.status_code == 201, r.text
    # bob's SIM leaves the folder: gone on the next apply; the API's SIM stays
    subscribers = folder / "subscribers.yaml"
    text = subscribers.read_text()
    start = text.index("  # B2C subscriber on a wallet")
    end = text.index("  # One vehicle SIM")
    subscribers.write_text(text[:start] + text[end:])
    assert await apply_catalog_cli(settings, str(folder)) == 0
    sims = json.loads(await redis.get(state_key("demo")))["sims"]
    assert "262019999999999" not in sims and API_IMSI in sims
    # and its identities are free again
    assert await redis.hget(owner_key("imsi"), "262019999999999") is None
    assert await redis.hget(owner_key("imsi"), API_IMSI) == b"demo"


async def test_catalog_apply_of_another_tenants_imsi_names_file_identity_and_owner(
    settings: Settings, redis: RedisClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await apply_catalog_cli(settings, str(DEMO)) == 0
    demo_state = await redis.get(state_key("demo"))
    rival = tmp_path / "rival"
    shutil.copytree(GLOBEX, rival)
    subscribers = rival / "subscribers.yaml"
    subscribers.write_text(subscribers.read_text().replace("262029999999999", "262019999999999"))
    capsys.readouterr()
    assert await apply_catalog_cli(settings, str(rival)) == 1
    err = capsys.readouterr().err
    assert err.startswith("ocs: error: "), err
    assert f"{rival / 'subscribers.yaml'}: sims[0].imsi" in err
    assert "IMSI 262019999999999 belongs to tenant 'demo'" in err
    assert await redis.get(state_key("globex")) is None  # nothing written
    assert await redis.get(state_key("demo")) == demo_state
    assert await redis.hget(owner_key("imsi"), "262020000000000") is None  # rolled back
    # the folder with its own SIMs goes in beside demo's
    assert await apply_catalog_cli(settings, str(GLOBEX)) == 0
    assert await redis.hget(owner_key("imsi"), "262020000000000") == b"globex"


async def test_a_sim_changes_tenant_only_by_transfer(
    api: Api, settings: Settings, redis: RedisClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await apply_catalog_cli(settings, str(DEMO)) == 0
    assert await apply_catalog_cli(settings, str(GLOBEX)) == 0
    sim = {
        "imsi": API_IMSI,
        "msisdn": API_MSISDN,
        "iccid": "8949000000000077701",
        "account": "bob",
        "plan": "consumer-data",
        "payer": {"kind": "wallet", "id": "bob-wallet"},
    }
    assert (await api.request("POST", "/v1/subscriptions", json=sim)).status_code == 201
    other_sim = {**sim, "account": "carol", "payer": {"kind": "wallet", "id": "carol-wallet"}}
    # globex's admin may not take it
    token = await _token(redis, "globex")
    r = await api.client.post(
        "/v1/subscriptions", json=other_sim, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 409, r.text
    assert r.json()["identity"]["value"] in (API_IMSI, API_MSISDN, sim["iccid"])

    def args(**kw: str) -> argparse.Namespace:
        return argparse.Namespace(identity_command="transfer", **kw)

    # a SIM declared by demo's folder is refused: the folder owns it
    capsys.readouterr()
    with pytest.raises(CommandError, match="declared by"):
        await main_identity(settings, args(imsi="262019999999999", source="demo", target="globex"))
    assert await main_identity(settings, args(imsi=API_IMSI, source="demo", target="globex")) == 0
    moved = json.loads(capsys.readouterr().out)
    assert sorted(moved["identities"]) == [
        "iccid:8949000000000077701",
        f"imsi:{API_IMSI}",
        f"msisdn:{API_MSISDN}",
    ]
    assert await redis.hget(owner_key("imsi"), API_IMSI) == b"globex"
    await asyncio.sleep(1.1)  # the API process trusts its compiled catalogue for 1 s
    assert (await api.request("GET", f"/v1/subscriptions/{API_IMSI}")).status_code == 404
    # demo cannot take it back; globex creates it with its own account and payer
    assert (await api.request("POST", "/v1/subscriptions", json=sim)).status_code == 409
    r = await api.client.post(
        "/v1/subscriptions", json=other_sim, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 201, r.text
    assert await _code(settings, "moved", API_IMSI) == 2001  # charged as globex's SIM now


async def _token(redis: RedisClient, tenant: str) -> str:
    from ocs.api.auth import Scope, create_token

    return await create_token(redis, tenant, Scope.ADMIN)


async def test_a_claim_refused_in_a_later_chunk_releases_the_earlier_chunks(
    redis: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity, "CHUNK", 2)
    held = await identity.claim(redis, "a", ["imsi:001010000000009"])
    await held.commit()
    wanted = [f"imsi:00101000000000{i}" for i in range(10)]  # ...09 is a's, in the last chunk
    with pytest.raises(identity.IdentityTaken) as refused:
        await identity.claim(redis, "b", wanted)
    assert (refused.value.value, refused.value.owner) == ("001010000000009", "a")
    assert await redis.hgetall(identity.owner_key("imsi")) == {b"001010000000009": b"a"}
    assert await redis.smembers(identity.tenant_key("b")) == set()
    # without the conflict, b claims all; dropping some releases exactly those
    held = await identity.claim(redis, "b", wanted[:9])
    await held.commit()
    held = await identity.claim(redis, "b", wanted[:3])
    assert len(held.dropped) == 6
    await held.commit()
    owners = await redis.hgetall(identity.owner_key("imsi"))
    assert sorted(k.decode() for k, v in owners.items() if v == b"b") == [
        w.split(":")[1] for w in wanted[:3]
    ]
