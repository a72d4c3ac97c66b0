"""A real HTTP/2 server over cleartext with prior knowledge (h2c, as 5GC network functions
serve), for tests that play the NRF or an SMF's notifyUri: it records every request and
answers with the test's handler. Built on the h2 state machine (the one httpx's client uses)
over an asyncio socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Reply]]


async def until(check: Callable[[], bool], timeout: float = 30.0, every: float = 0.02) -> None:
    """Return once ``check()`` holds; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polls what another task changes, no event
            await asyncio.sleep(every)


class H2Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.Transport] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> H2Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for transport in list(self._transports):
                transport.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(
        self, predicate: Callable[[list[Request]], bool], timeout: float = 30.0
    ) -> list[Request]:
        """The requests once ``predicate`` holds for them (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.requests))
        return self.requests

    async def _record(self, request: Request) -> Reply:
        reply = await self.handler(request)
        async with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
        return reply


class _Protocol(asyncio.Protocol):
    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, Request] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server._transports.add(self.transport)
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, RequestReceived):
                headers = {str(k): str(v) for k, v in event.headers}
                self.streams[event.stream_id] = Request(
                    headers.get(":method", ""), headers.get(":path", ""), headers
                )
            elif isinstance(event, DataReceived):
                self.streams[event.stream_id].body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                request = self.streams.pop(event.stream_id)
                task = asyncio.get_running_loop().create_task(
                    self._answer(event.stream_id, request)
                )
                self.server._tasks.add(task)
                task.add_done_callback(self.server._tasks.discard)
            elif isinstance(event, ConnectionTerminated) and self.transport is not None:
                self.transport.close()
        self._flush()

    async def _answer(self, stream_id: int, request: Request) -> None:
        reply = await self.server._record(request)
        body = reply.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        headers = [(":status", str(reply.status)), ("content-length", str(len(data)))]
        if data and "content-type" not in reply.headers:
            headers.append(("content-type", "application/json"))
        headers += list(reply.headers.items())
        if self.transport is None or self.transport.is_closing():
            return
        self.conn.send_headers(stream_id, headers, end_stream=not data)
        if data:
            self.conn.send_data(stream_id, data, end_stream=True)
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())
