"""The deployment files, checked without a Docker engine: the compose file (services,
volumes, health checks, every file it references, every `ocs` command it runs parses), the
Dockerfile (its sources exist, non-root, health check), the Grafana dashboard and
provisioning, the Prometheus configuration and alert rules (their shape, and every metric
name their PromQL uses is one our code exports), and promtool's own checks when it is
installed (Debian package `prometheus`)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from prometheus_client import CollectorRegistry

from ocs.cli import build_parser
from ocs.config import Settings
from ocs.observability.metrics import register_all
from ocs.observability.multiproc import supervisor_metrics

ROOT: Final = Path(__file__).resolve().parents[2]
DOCKER: Final = ROOT / "docker"
COMPOSE: Final = DOCKER / "compose.yaml"
DOCKERFILE: Final = DOCKER / "Dockerfile"
DASHBOARD: Final = DOCKER / "grafana" / "dashboards" / "ocs.json"
PROMETHEUS: Final = ROOT / "config" / "prometheus.yml"
ALERTS: Final = ROOT / "config" / "alerts.yml"
ALERT_TESTS: Final = ROOT / "config" / "alerts.test.yml"
OCS_IMAGE: Final = "ocs:local"
PROMQL_BUILTINS: Final = {"up"}  # series Prometheus makes itself
IDENT: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name our metrics produce, from the real collectors on a fresh registry
    (the per-process ones and the supervisor's of ``ocs serve --workers``)."""
    registry = CollectorRegistry()
    register_all(registry)
    names = _series_names(registry)
    supervisor = supervisor_metrics(tmp_path_factory.mktemp("multiproc"))
    return names | _series_names(supervisor.registry)


@pytest.fixture(scope="module")
def labels_of(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Series name -> the label names our collectors declare for it (``le`` on buckets)."""
    registry = CollectorRegistry()
    register_all(registry)
    supervisor = supervisor_metrics(tmp_path_factory.mktemp("labels"))
    out: dict[str, set[str]] = {}
    for reg in (registry, supervisor.registry):
        for collector, names in reg._collector_to_names.items():
            declared = set(getattr(collector, "_labelnames", ()))
            for name in names:
                out[name] = declared | ({"le"} if name.endswith("_bucket") else set())
    return out


def check_labels(expr: str, labels_of: dict[str, set[str]]) -> list[str]:
    """Label names the expression groups by or matches on that none of its series has
    (``job`` and ``instance`` come from the scrape)."""
    known = {"job", "instance"}
    for name in metric_names(expr):
        known |= labels_of.get(name, set())
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    used: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", without_strings):
        used |= {x.strip() for x in group.split(",") if x.strip()}
    for selector in re.findall(r"\{([^}]*)\}", without_strings):
        used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    return sorted(used - known)


def _series_names(registry: CollectorRegistry) -> set[str]:
    out: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            out.add(f"{family.name}_total")
        elif family.type == "histogram":
            out |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            out.add(family.name)
    return out


def default(setting: str) -> Any:
    """A setting's default (not what this environment's OCS_* variables make of it)."""
    return Settings.model_fields[setting].default


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression reads: identifiers that are ours (``ocs_``) or the
    built-in ``up``; label names, functions and keywords are none of these."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    return {
        name
        for name in IDENT.findall(without_labels)
        if name.startswith("ocs_") or name in PROMQL_BUILTINS
    }


# -- compose --------------------------------------------------------------------------------
def test_compose_runs_the_stack(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "postgres", "ocs", "drain", "prometheus", "grafana"} <= set(services)
    redis = services["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    postgres = services["postgres"]
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    for name in ("ocs", "drain"):
        env = services[name]["environment"]
        assert env["OCS_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["OCS_DATABASE_URL"]
        assert services[name]["image"] == OCS_IMAGE
    assert services["ocs"]["command"] == ["serve"]
    assert services["drain"]["command"][:3] == ["cdr", "drain", "--follow"]


def test_compose_ports_are_the_ones_ocs_listens_on(services: dict[str, dict[str, Any]]) -> None:
    env = services["ocs"]["environment"]
    published = {str(p).split(":")[-1] for p in services["ocs"]["ports"]}
    metrics_port = int(env.get("OCS_METRICS_PORT", default("metrics_port")))
    assert published == {str(default("port")), str(default("http_port")), str(metrics_port)}
    assert env["OCS_HOST"] == "0.0.0.0"  # reachable from the other containers


def test_every_ocs_command_in_compose_parses(services: dict[str, dict[str, Any]]) -> None:
    """The image's entrypoint is `ocs`: each service's command must be a valid invocation."""
    parser = build_parser()
    commands = {n: s["command"] for n, s in services.items() if s.get("image") == OCS_IMAGE}
    assert {"ocs", "drain", "catalog", "billrun"} <= set(commands)
    for name, command in commands.items():
        args = parser.parse_args(command)
        assert args.command is not None, name


def test_compose_health_checks_and_dependencies(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        one_shot = service.get("restart") == "no"
        if one_shot:
            assert check == {"disable": True}, f"{name}: a one-shot command has no port"
            continue
        assert check is not None and check["test"], f"{name}: no health check"
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            wanted = "service_healthy" if "healthcheck" in services[dep] else "service_started"
            if services[dep].get("restart") == "no":
                wanted = "service_completed_successfully"
            assert how["condition"] == wanted, f"{name} -> {dep}"
    for name in ("ocs", "drain"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])


def test_compose_volumes_and_referenced_files_exist(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            assert target.startswith("/"), f"{name}: {volume}"
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: {source} does not exist"
            else:
                used.add(source)
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()
    assert used == declared, "every named volume is declared and used"
    assert {"redis-data", "pg-data"} <= used


def test_compose_with_docker_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        pytest.skip(
            f"docker compose plugin not available: {version.stderr.strip().splitlines()[0]}"
        )
    got = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert got.returncode == 0, got.stderr


# -- Dockerfile -----------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _target = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
                assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, source
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = " ".join(rest for word, rest in steps if word == "HEALTHCHECK")
    assert f":{default('metrics_port')}/healthz" in health
    exposed = " ".join(rest for word, rest in steps if word == "EXPOSE").split()
    assert set(exposed) == {"3868", "8080", str(default("metrics_port"))}
    assert "pip install" in " ".join(rest for word, rest in steps if word == "RUN")
    assert ("ENTRYPOINT", '["ocs"]') in steps


# -- Grafana --------------------------------------------------------------------------------
def dashboard_panels() -> list[dict[str, Any]]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [p for p in data["panels"] if p["type"] != "row"]


def test_dashboard_has_the_panels_the_issue_lists() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard_panels())
    for wanted in (
        "ccr rate by type and result-code",
        "latency percentiles",
        "active sessions",
        "reservations",
        "quota exhausted",
        "final-unit-indication",
        "top-ups",
        "redis and postgresql errors",
        "bill run progress",
        "drain",
        "readiness by check",
        "failed bill runs",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_use_exported_metrics(
    exported: set[str], labels_of: dict[str, set[str]]
) -> None:
    datasource = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yaml")
    uid = datasource["datasources"][0]["uid"]
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            unknown = names - exported - PROMQL_BUILTINS
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not exported"
            wrong = check_labels(target["expr"], labels_of)
            assert not wrong, f"{panel['title']}: no series has the labels {wrong}"


def test_grafana_provisioning_points_at_the_mounts(services: dict[str, dict[str, Any]]) -> None:
    mounts = dict(str(v).split(":")[:2] for v in services["grafana"]["volumes"])
    provider = load_yaml(DOCKER / "grafana/provisioning/dashboards/ocs.yaml")
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboards"] == path
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yaml")
    url = datasource["datasources"][0]["url"]
    assert url == "http://prometheus:9090" and "prometheus" in services


# -- Prometheus -----------------------------------------------------------------------------
def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(ALERTS)
    assert set(data) == {"groups"}
    rules: list[dict[str, Any]] = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        rules += group["rules"]
    return rules


def test_alert_rules_shape_and_coverage(exported: set[str], labels_of: dict[str, set[str]]) -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    for wanted in (
        "OcsCcrErrorRateHigh",
        "OcsCcrLatencyP99High",
        "OcsRedisUnavailable",
        "OcsDrainLagging",
        "OcsWorkerDown",
        "OcsNotReady",
        "OcsBillRunFailed",
    ):
        assert wanted in names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert not used - exported - PROMQL_BUILTINS, (rule["alert"], used - exported)
        assert not check_labels(rule["expr"], labels_of), rule["alert"]


def test_new_series_are_exported_with_their_labels(
    exported: set[str], labels_of: dict[str, set[str]]
) -> None:
    """What the issue-7 alerts and panels read: readiness by check, Redis errors by
    component (one name for charging, API and offline), bill runs by outcome."""
    assert "ocs_ready" in exported and labels_of["ocs_ready"] == {"check"}
    assert labels_of["ocs_redis_errors_total"] == {"component"}
    assert labels_of["ocs_billrun_runs_finished_total"] == {"outcome"}


def test_label_check_catches_a_typo(labels_of: dict[str, set[str]]) -> None:
    good = 'sum by (payer_kind) (rate(ocs_quota_exhausted_total{payer_kind="wallet"}[5m]))'
    assert check_labels(good, labels_of) == []
    assert check_labels("sum by (payer) (rate(ocs_quota_exhausted_total[5m]))", labels_of) == [
        "payer"
    ]
    assert check_labels('up{job="ocs"} == 0', labels_of) == []


def test_prometheus_scrapes_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    config = load_yaml(PROMETHEUS)
    mounts = dict(str(v).split(":")[:2] for v in services["prometheus"]["volumes"])
    assert mounts["../config/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert config["rule_files"] == [mounts["../config/alerts.yml"]]
    for job in config["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.rsplit(":", 1)
            if host == "localhost":
                continue
            assert host in services, f"{job['job_name']}: {host} is no compose service"
            env = services[host]["environment"]
            command = services[host]["command"]
            port_of = (
                command[command.index("--metrics-port") + 1]
                if "--metrics-port" in command
                else env["OCS_METRICS_PORT"]
            )
            assert port == str(port_of), job["job_name"]


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    return tool


def test_promtool_checks_rules_and_config(tmp_path: Path) -> None:
    tool = _promtool()
    rules = subprocess.run(
        [tool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # the config names the rule file by its path in the container: point it at ours
    config = load_yaml(PROMETHEUS)
    config["rule_files"] = [str(ALERTS)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [tool, "check", "config", str(local)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_alert_unit_tests() -> None:
    tool = _promtool()
    got = subprocess.run(
        [tool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, check=False
    )
    assert got.returncode == 0, got.stdout + got.stderr
    assert "SUCCESS" in got.stdout


# -- config/ocs.toml ------------------------------------------------------------------------
def test_sample_config_lists_every_setting_with_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README points at config/ocs.toml for every setting: it loads, and holds each setting
    (set to its default, or commented out when there is none)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"OCS_{name.upper()}", raising=False)  # the file's values only
    sample = ROOT / "config" / "ocs.toml"
    loaded = Settings.load(sample, data_dir=tmp_path)
    text = sample.read_text(encoding="utf-8")
    with sample.open("rb") as fh:
        values = tomllib.load(fh)["ocs"]
    for name, field in Settings.model_fields.items():
        mentioned = re.search(rf"^#? ?{name} = ", text, re.MULTILINE)
        assert mentioned, f"config/ocs.toml: add the setting {name!r}"
        if name in values:
            default = field.get_default(call_default_factory=True)
            assert getattr(loaded, name) == default, f"{name}: not the default"


# -- what the image installs ----------------------------------------------------------------
def test_every_data_file_of_the_package_is_shipped() -> None:
    """The image installs the package from a wheel (`pip install .`), which holds only the
    files `[tool.setuptools.package-data]` names: every non-Python file under ocs/ must match
    one of its patterns (the Diameter dictionary avps.tsv once did not)."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["*"]
    built = {".py", ".pyc", ".so", ".c", ".h"}
    data = [
        p
        for p in (ROOT / "ocs").rglob("*")
        if p.is_file() and p.suffix not in built and "__pycache__" not in p.parts
    ]
    assert data, "no data files found: the walk is wrong"
    missing = [str(p.relative_to(ROOT)) for p in data if not any(p.match(g) for g in patterns)]
    assert not missing, f"not in package-data, so not in the image: {missing}"


def test_every_ocs_container_shares_the_data_volume(services: dict[str, dict[str, Any]]) -> None:
    """The offline master key is a file in the data directory: a drain, bill run or setup
    container with a data directory of its own would make a key of its own."""
    mounts = set()
    for name, service in services.items():
        if service.get("image") != OCS_IMAGE:
            continue
        data_dir = service["environment"]["OCS_DATA_DIR"]
        shared = [v for v in service.get("volumes", []) if str(v).endswith(f":{data_dir}")]
        assert len(shared) == 1, f"{name}: {data_dir} is not on a volume"
        mounts.add(shared[0])
    assert len(mounts) == 1


def test_the_demo_catalogue_is_in_the_built_package(tmp_path: Path) -> None:
    """setup.py's build copies policies/demo into the package (ocs/demo_catalog), and an
    installed ocs finds it there, wherever it runs (`ocs demo` outside the repository)."""
    build = tmp_path / "build"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "OCS_PURE_PYTHON"},
    )
    shipped = build / "ocs" / "demo_catalog"
    assert sorted(p.name for p in shipped.iterdir()) == sorted(
        p.name for p in (ROOT / "policies" / "demo").iterdir()
    )
    found = subprocess.run(
        [sys.executable, "-c", "import ocs.config as c; print(c.demo_catalog())"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(build)},
        check=True,
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == str(shipped)
