"""schemathesis against the live server's /openapi.json: no 5xx, every response conforms
to the schema (problem documents included), with an admin token of a provisioned tenant."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.api.conftest import Api

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.skipif(
    not SCHEMATHESIS.exists() and not shutil.which("schemathesis"),
    reason="schemathesis is not installed",
)
async def test_schemathesis_finds_no_server_error(demo: Api, tmp_path: Path) -> None:
    base = str(demo.client.base_url).rstrip("/")
    cmd = [
        str(SCHEMATHESIS) if SCHEMATHESIS.exists() else "schemathesis",
        "run",
        f"{base}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--header",
        f"Authorization: Bearer {demo.tokens['admin']}",
        "--max-examples",
        "5",
        "--seed",
        "1",
        "--workers",
        "1",
        "--phases",
        "coverage,fuzzing",
        "--max-time",
        "20",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
        "--no-shrink",
        "--exclude-path-regex",
        "/sessions/(re-auth|abort)$",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 110)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
