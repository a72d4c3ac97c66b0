"""The client side of the 5G service-based interface (TS 29.500): what ``ocs`` sends to other
network functions (NRF registration, Nchf charging notifications to an SMF).

HTTP/2 only, as TS 29.500 5.2 requires: over ``http://`` with prior knowledge (h2c, what
free5GC's and Open5GS's NFs serve), over ``https://`` negotiated by ALPN. Every request has a
time limit, and an answer's body is read up to :data:`MAX_BODY` bytes, never more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import httpx

MAX_BODY: Final = 256 * 1024  # bytes of an answer's body read at most (an NFProfile is ~2 KB)
JSON: Final = "application/json"
JSON_PATCH: Final = "application/json-patch+json"
USER_AGENT: Final = "CHF"  # TS 29.500 5.2.2.2: the NF type of the sender


@dataclass(frozen=True, slots=True)
class SbiAnswer:
    status: int
    headers: httpx.Headers
    body: Any  # the decoded JSON body, None when empty or not JSON


class SbiError(Exception):
    """The request got no answer: connection refused or lost, time limit, oversized body."""


def sbi_client(timeout: float) -> httpx.AsyncClient:
    """An HTTP/2 client whose every request ends within ``timeout`` seconds (connect, each
    read and write). No proxy from the environment: NFs talk to each other directly."""
    return httpx.AsyncClient(
        http1=False,
        http2=True,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    body: Any = None,
    *,
    content_type: str = JSON,
) -> SbiAnswer:
    """Send ``body`` (JSON) and return the answer; :class:`SbiError` when there is none."""
    headers = {"accept": f"{JSON}, application/problem+json"}
    content = None
    if body is not None:
        content = json.dumps(body, separators=(",", ":")).encode()
        headers["content-type"] = content_type
    try:
        async with client.stream(method, url, content=content, headers=headers) as response:
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_BODY:
                    raise SbiError(f"{method} {url}: answer body over {MAX_BODY} bytes")
            return SbiAnswer(response.status_code, response.headers, _decode(bytes(data)))
    except httpx.TimeoutException as exc:
        raise SbiError(f"{method} {url}: no answer in time ({type(exc).__name__})") from None
    except (httpx.HTTPError, OSError) as exc:
        raise SbiError(f"{method} {url}: {type(exc).__name__}: {exc}") from None


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None
