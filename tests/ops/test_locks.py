"""The dependency locks: every requirement of pyproject.toml is pinned, the runtime and dev
locks agree on every version they share, and every pin carries hashes (pip --require-hashes)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    lines = lock.read_text().splitlines()
    for i, line in enumerate(lines):
        found = PIN.match(line)
        if found:
            assert "--hash=sha256:" in lines[i + 1], f"{lock.name}: {found[1]} has no hash"
            pins[_norm(found[1])] = found[2]
    return pins


def _names(requirements: list[str]) -> set[str]:
    return {_norm(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in requirements}


def test_every_requirement_is_pinned_in_the_locks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = _names(project["project"]["dependencies"])
    dev = _names(project["project"]["optional-dependencies"]["dev"])
    build = _names(project["build-system"]["requires"])
    runtime_pins = _pins(ROOT / "requirements" / "runtime.lock")
    dev_pins = _pins(ROOT / "requirements" / "dev.lock")
    assert runtime | build <= set(runtime_pins), runtime | build - set(runtime_pins)
    assert runtime | dev | build <= set(dev_pins), runtime | dev | build - set(dev_pins)


def test_runtime_and_dev_locks_agree() -> None:
    runtime_pins = _pins(ROOT / "requirements" / "runtime.lock")
    dev_pins = _pins(ROOT / "requirements" / "dev.lock")
    differ = {n: (v, dev_pins[n]) for n, v in runtime_pins.items() if dev_pins.get(n) != v}
    assert not differ, f"runtime.lock and dev.lock pin different versions: {differ}"
