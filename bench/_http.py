"""A lean HTTP/1.1 client for the load generators: one keep-alive connection, JSON in and out.

httpx spent about 2 ms of CPU per request at N=50 (its pools, its models, its hooks), as
much as the server it was measuring; this one writes the request by hand and parses the
response with httptools (the parser uvicorn serves with), so the bench's own share of the
two cores stays small and the figures are the servers'. It keeps the connection open and
opens a new one when the server has closed it, as a real client's pool does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools


class TransportError(Exception):
    """The request may not have reached the server, or its response did not come back;
    ``kind`` names what happened (the underlying error's class, or "Timeout")."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass
class Response:
    status_code: int
    content: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json.loads(self.content)


class _Reader:
    """httptools callbacks, collecting one response."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.done = False
        self.keep_alive = False
        self.headers_done = False
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # only known while parsing

    def ends_at_close(self) -> bool:
        """A response with neither a length nor chunks: its body is all that comes before the
        server closes the connection (RFC 9112 6.3), as some servers answer `Connection:
        close`."""
        return (
            self.headers_done
            and b"content-length" not in self.headers
            and b"chunked" not in self.headers.get(b"transfer-encoding", b"").lower()
        )

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class Client:
    """``await client.post(path, json=...)`` / ``get(path)`` on one connection to the server at
    ``base_url`` (``http://host:port``), with ``headers`` on every request. A ``Connection:
    close`` header among them makes it a connection per request."""

    def __init__(self, base_url: str, *, headers: dict[str, str], timeout: float = 60) -> None:
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        self.host, self.port, self.timeout = host, port, timeout
        fixed = {"Host": f"{host}:{port}", "Accept": "application/json", **headers}
        # Asked for, the close is ours to make: a server may close without saying so.
        self._close_each = headers.get("Connection", "").lower() == "close"
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> Response:
        return await self.request("GET", path)

    async def post(self, path: str, *, json: Any = None) -> Response:
        return await self.request("POST", path, json)

    async def request(self, method: str, path: str, payload: Any = None) -> Response:
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._head
        if payload is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
        try:
            return await asyncio.wait_for(self._exchange(head + b"\r\n" + body), self.timeout)
        except (OSError, asyncio.IncompleteReadError, httptools.HttpParserError) as error:
            await self.aclose()
            raise TransportError(type(error).__name__, str(error)) from error
        except TimeoutError as error:
            await self.aclose()
            raise TransportError("Timeout", f"no response within {self.timeout:g} s") from error

    async def _exchange(self, request: bytes) -> Response:
        if self._streams is not None and self._streams[0].at_eof():
            await self.aclose()  # closed by the server while idle: as a pool does, open another
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(request)
        await writer.drain()
        collected = _Reader()
        while not collected.done:
            chunk = await reader.read(65536)
            if not chunk and collected.ends_at_close():
                collected.done, collected.keep_alive = True, False
            elif not chunk:  # the server closed the connection before (or while) answering
                raise asyncio.IncompleteReadError(b"", None)
            else:
                collected.parser.feed_data(chunk)
        if self._close_each or not collected.keep_alive:
            await self.aclose()
        status = collected.parser.get_status_code()
        return Response(status, b"".join(collected.body), collected.headers)

    async def aclose(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
