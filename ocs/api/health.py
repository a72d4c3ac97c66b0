"""Liveness and readiness on the HTTP API (no token): ``/healthz`` and ``/readyz``.

``/readyz`` runs the checks the process's components registered (``ocs serve``: Redis,
catalogue, Diameter listener; see :mod:`ocs.observability.health`) and the API's own Redis
connection. Not ready is a 503 problem document whose ``checks`` member gives each check's
state, ``ok`` or ``failing``: the API faces tenants, so the reasons (host names, error
texts) are only on the metrics port (:mod:`ocs.observability.endpoint`), which faces the
operator.
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
    states = {name: "ok" if reason == "ok" else "failing" for name, reason in got.checks.items()}
    failing = ", ".join(name for name, state in states.items() if state != "ok")
    response: JSONResponse = problem_response(
        503, "not-ready", "Not ready", f"failing: {failing}", request.url.path, checks=states
    )
    return response
