"""An HTTP/2 (h2c, prior knowledge) client of the Nchf endpoint that holds every answer to
TS 32.291 (Release 17): the status must be one the operation names (or its ``default``),
the body must match that status's schema with every reference it makes (ChargingDataResponse,
TS 29.571 ProblemDetails; an error left to ``default``, which names no schema, must be a
ProblemDetails as TS 29.500 5.2.7.2 asks), in the media type the spec gives, and a 201 must
carry the ``Location`` of the new charging data resource. :attr:`NchfConformance.seen`
counts what was
checked, by operation and status, so a test can show it covered what it meant to."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx

from tests.sbi.nchf_requests import API, CREATE, release_path, update_path
from tests.sbi.oracle import SchemaError, Specs

NCHF = "TS32291_Nchf_ConvergedCharging.yaml"
CREATE_OP = "/chargingdata"
UPDATE_OP = "/chargingdata/{ChargingDataRef}/update"
RELEASE_OP = "/chargingdata/{ChargingDataRef}/release"
PROBLEM = "/components/schemas/ProblemDetails"


class NchfConformance:
    def __init__(self, specs: Specs, port: int, host: str = "127.0.0.1") -> None:
        self.specs = specs
        self.base = f"http://{host}:{port}"
        self.client = httpx.AsyncClient(
            base_url=self.base, http1=False, http2=True, timeout=10.0, trust_env=False
        )
        self.seen: Counter[tuple[str, int]] = Counter()

    async def __aenter__(self) -> NchfConformance:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    # -- the three operations ------------------------------------------------------------------
    async def create(self, body: Any) -> tuple[httpx.Response, str | None]:
        """POST .../chargingdata; the response and the ChargingDataRef of its Location."""
        response = await self.post(CREATE_OP, CREATE, body)
        ref = None
        if response.status_code == 201:
            ref = response.headers["location"].rstrip("/").rsplit("/", 1)[1]
        return response, ref

    async def update(self, ref: str, body: Any) -> httpx.Response:
        return await self.post(UPDATE_OP, update_path(ref), body)

    async def release(self, ref: str, body: Any) -> httpx.Response:
        return await self.post(RELEASE_OP, release_path(ref), body)

    async def post(
        self,
        operation: str,
        path: str,
        body: Any,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        """POST ``body`` (JSON; ``raw`` bytes instead) to ``path`` and check the answer
        against ``operation`` of the spec; SchemaError says what does not conform."""
        content = raw if raw is not None else json.dumps(body).encode()
        response = await self.client.post(
            path, content=content, headers={"content-type": content_type}
        )
        self.conform(operation, response)
        return response

    # -- the checks ------------------------------------------------------------------------------
    def conform(self, operation: str, response: httpx.Response) -> None:
        status = response.status_code
        what = f"POST {operation} -> {status}"
        if response.http_version != "HTTP/2":
            raise SchemaError(f"{what}: answered over {response.http_version}, not HTTP/2")
        where = self.specs.response(NCHF, operation, "post", status)
        self.seen[operation, status] += 1
        if where is None and status >= 400 and response.content:
            # a status the operation leaves to ``default`` (no schema): TS 29.500 5.2.7.2
            # says an error carries a ProblemDetails of TS 29.571
            where = ("TS29571_CommonData.yaml", PROBLEM, "application/problem+json")
        if where is None:
            if response.content:
                raise SchemaError(f"{what}: the spec names no body, got {response.content!r}")
            return
        file, pointer, media = where
        got = response.headers.get("content-type", "").split(";")[0].strip()
        if got != media.replace(" ", ""):  # the spec writes "application/ json" once
            raise SchemaError(f"{what}: content-type {got!r}, the spec says {media!r}")
        try:
            body = response.json()
        except ValueError:
            raise SchemaError(f"{what}: the body is not JSON: {response.content!r}") from None
        self.specs.check(body, file, pointer, what=what)
        if status == 201:
            location = response.headers.get("location", "")
            if f"{API}/chargingdata/" not in location:
                raise SchemaError(f"{what}: Location {location!r} names no charging data")
        problem = media == "application/problem+json" and isinstance(body, dict)
        if problem and body.get("status", status) != status:
            raise SchemaError(f"{what}: the problem says status {body.get('status')}")
