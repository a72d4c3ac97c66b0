"""Liveness and readiness on the HTTP API (no token): ``/healthz`` and ``/readyz``.

``/readyz`` runs the checks the process's components registered (``ocs serve``: Redis,
catalogue, Diameter listener; see :mod:`ocs.observability.health`) and the API's own Redis
connection. Not ready is a 503 problem document whose ``checks`` member names each check's
state. The same answers are on the metrics port (:mod:`ocs.observability.endpoint`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ocs.api.problems import problem_response
from ocs.observability.health import default_health, redis_check

router = APIRouter(tags=["health"])


class Alive(BaseModel):
    status: str = "alive"


class Ready(BaseModel):
    status: str = "ready"
    checks: dict[str, str]


@router.get("/healthz", response_model=Alive, summary="Liveness: the process answers")
async def healthz() -> Alive:
    return Alive()


@router.get(
    "/readyz",
    response_model=Ready,
    summary="Readiness: Redis, catalogue, Diameter listener (whatever this process runs)",
    responses={503: {"description": "a check failed; `checks` names it"}},
)
async def readyz(request: Request) -> Any:
    api = getattr(request.app.state, "api", None)
    extra = {"api_redis": redis_check(api.redis)} if api is not None else {}
    got = await default_health().ready(extra)
    if got.ready:
        return Ready(checks=got.checks)
    failing = ", ".join(f"{n}: {r}" for n, r in got.checks.items() if r != "ok")
    response: JSONResponse = problem_response(
        503, "not-ready", "Not ready", failing, request.url.path, checks=got.checks
    )
    return response
