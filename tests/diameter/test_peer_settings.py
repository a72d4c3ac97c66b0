"""Configured peers from the config file, the environment and `--peer`; `ocs demo` admits any
peer and says so, `ocs serve` does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocs.cli import build_parser, load_settings, main
from ocs.config import ConfigError, Settings
from ocs.process import peer_table


@pytest.fixture(autouse=True)
def _no_ocs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"OCS_{name.upper()}", raising=False)
    monkeypatch.delenv("OCS_CONFIG", raising=False)


def settings_of(*argv: str) -> Settings:
    return load_settings(build_parser().parse_args(list(argv)))


def test_serve_admits_no_unknown_peer_and_demo_does() -> None:
    assert settings_of("serve").accept_unknown_peers is False
    assert settings_of("serve", "--accept-unknown-peers").accept_unknown_peers is True
    assert settings_of("demo").accept_unknown_peers is True


def test_unknown_peers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCS_ACCEPT_UNKNOWN_PEERS", "1")
    assert settings_of("serve").accept_unknown_peers is True


def test_peer_flags_join_the_config_files_peers(tmp_path: Path) -> None:
    config = tmp_path / "ocs.toml"
    config.write_text(
        "[ocs]\n"
        'peers = [{ origin_host = "pgw1.example.org", realm = "example.org", '
        'addresses = ["192.0.2.10"], tenants = ["demo"] },\n'
        '         { origin_host = "pgw2.example.org", addresses = ["192.0.2.20"] }]\n'
    )
    settings = settings_of(
        "serve",
        *("--config", str(config)),
        *("--peer", "PGW2.example.org=198.51.100.0/28,203.0.113.5"),
        *("--peer", "dra.example.org=192.0.2.99"),
    )
    table = peer_table(settings)
    assert sorted(table.peers) == ["dra.example.org", "pgw1.example.org", "pgw2.example.org"]
    pgw1 = table.get("pgw1.example.org")
    assert pgw1 is not None and pgw1.realm == "example.org" and pgw1.tenants == {"demo"}
    pgw2 = table.get("pgw2.example.org")  # the flag replaced the file's entry
    assert pgw2 is not None and pgw2.allows_address("203.0.113.5")
    assert pgw2.allows_address("198.51.100.9") and not pgw2.allows_address("192.0.2.20")


def test_peers_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OCS_PEERS",
        '[{"origin_host": "pgw.test", "addresses": ["127.0.0.1"], "relays_for": ["x"]}]',
    )
    spec = peer_table(settings_of("serve")).get("pgw.test")
    assert spec is not None and spec.relays_for == {"x"}


@pytest.mark.parametrize(
    ("flag", "reason"),
    [
        ("pgw.test", "expected ORIGIN-HOST=ADDRESS"),
        ("pgw.test=", "expected ORIGIN-HOST=ADDRESS"),
        ("pgw.test=not-an-address", "'not-an-address' is not an IP address or network"),
    ],
)
def test_a_bad_peer_flag_is_one_line_naming_it(
    flag: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=reason):
        settings_of("serve", "--peer", flag)
    assert main(["serve", "--peer", flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ocs: error: --peer") and reason in err and err.count("\n") == 1
