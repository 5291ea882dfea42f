"""`rlhf serve` keeps an idle connection open for RLHF_KEEP_ALIVE_SECONDS (uvicorn's own 5 s
equals httpx's, so a client reused a connection as the server closed it: issue 22), and
bench.queue (with its own lean client, bench._http) goes on past a request lost that way."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from pydantic import ValidationError

from app.cli.serve import uvicorn_options
from app.config import Settings
from tests.conftest import make_settings
from tests.processes import CLI, CWD, free_port, rlhf_env

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_the_setting_reaches_uvicorn() -> None:
    options = uvicorn_options(make_settings(keep_alive_seconds=7), host="::", port=1, workers=1)
    assert uvicorn.Config(**options).timeout_keep_alive == 7


def test_by_default_the_server_outwaits_clients_and_proxies() -> None:
    """The client closes an idle connection first: httpx after 5 s, nginx's upstream
    keepalive_timeout and AWS ALB after 60 s, Go after 90 s."""
    assert make_settings().keep_alive_seconds > 90


@pytest.mark.parametrize("value", ["0", "-5", "120000", "2m"])
def test_a_bad_keep_alive_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RLHF_KEEP_ALIVE_SECONDS", value)
    with pytest.raises(ValidationError, match="keep_alive_seconds"):
        Settings(_env_file=None, secret_key="x" * 40)


async def test_requests_run_on_as_many_threads_as_the_setting(tmp_path: Path) -> None:
    """RLHF_WEB_THREADS caps the worker threads that plain `def` routes run on (anyio's
    default is 40), for the lifetime of the app."""
    import anyio.to_thread

    from app.main import create_app

    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", web_threads=3)
    app = create_app(settings)
    limiter = anyio.to_thread.current_default_thread_limiter()
    before = limiter.total_tokens  # this event loop's, which the other tests share
    try:
        async with app.router.lifespan_context(app):
            assert limiter.total_tokens == 3
    finally:
        limiter.total_tokens = before
    assert make_settings().web_threads == make_settings().db_pool_size


def test_a_bad_thread_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_WEB_THREADS", "0")
    with pytest.raises(ValidationError, match="web_threads"):
        Settings(_env_file=None, secret_key="x" * 40)


def _response(conn: socket.socket) -> bytes:
    """One whole /healthz answer (its body is the last thing it sends)."""
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = conn.recv(4096)
        assert chunk, f"the server closed the connection mid-answer: {answer!r}"
        answer += chunk
    return answer


def _serve(tmp_path: Path, *, keep_alive: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `rlhf serve` with RLHF_KEEP_ALIVE_SECONDS=``keep_alive``, once it answers; its URL."""
    env = rlhf_env(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "data")
    env["RLHF_KEEP_ALIVE_SECONDS"] = keep_alive
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], env=env, cwd=CWD,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("rlhf serve did not come up") from None
            time.sleep(0.1)


def test_the_running_server_closes_an_idle_connection_after_the_setting(tmp_path: Path) -> None:
    """A real `rlhf serve` with RLHF_KEEP_ALIVE_SECONDS=1: a connection idle for a moment
    still takes a request, and one idle past a second is closed by the server (at uvicorn's
    default it would stay open 5 s)."""
    process, url = _serve(tmp_path, keep_alive="1")
    try:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=4) as conn:
            conn.sendall(HEALTHZ)
            assert _response(conn).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)
            conn.sendall(HEALTHZ)  # the same connection, idle a moment: still served
            assert _response(conn).startswith(b"HTTP/1.1 200")
            idle_from = time.monotonic()
            assert conn.recv(4096) == b""  # closed by the server, within the 4 s timeout
            idle = time.monotonic() - idle_from
        assert 0.8 < idle < 3, f"closed after {idle:.1f} s idle"
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_the_queue_bench_retries_a_dropped_request_once_and_counts_the_rest() -> None:
    """bench.queue goes on past a request lost on a closing connection: retried once (a
    lease resumes the held task, a repeated submit answers with the stored one), counted as
    an error when the retry is lost too."""
    from bench._http import Response, TransportError
    from bench.queue import Tally, labeler

    calls: list[str] = []

    class DroppingClient:
        """The bench's client, as a server that drops some requests makes it behave."""

        async def post(self, path: str, *, json: object = None) -> Response:
            calls.append(path)
            if path.endswith("/submit"):
                if calls.count(path) == 1:
                    raise TransportError("IncompleteReadError", "connection closed by the server")
                return Response(201, b'{"id": 1}')
            if len(calls) > 3:
                raise TransportError("ConnectionResetError", "reset by the server")
            return Response(200, b'{"task_id": 5, "completions": [{"id": 1}, {"id": 2}]}')

    tally = Tally()
    await labeler(DroppingClient(), project_id=1, count=2, tally=tally)  # type: ignore[arg-type]
    assert calls == ["/api/v1/projects/1/tasks/next", *["/api/v1/tasks/5/submit"] * 2,
                     *["/api/v1/projects/1/tasks/next"] * 2]  # fmt: skip
    assert (tally.accepted, tally.unsure, tally.retries) == (1, 0, 2)
    assert tally.errors == {"lease: ConnectionResetError": 1}


async def test_the_bench_client_reuses_its_connection_and_reopens_one_the_server_closed(
    tmp_path: Path,
) -> None:
    """bench._http against a real `rlhf serve`: requests on one kept-alive connection, and
    after the server closed it (its keep-alive ran out) the next request opens another and
    gets its answer."""
    from bench._http import Client

    process, url = _serve(tmp_path, keep_alive="1")
    try:
        client = Client(url, headers={})
        first = await client.get("/healthz")
        connection = client._streams
        second = await client.get("/healthz")
        assert (first.status_code, second.status_code) == (200, 200)
        assert client._streams is connection and second.json() == {"status": "ok"}
        await asyncio.sleep(2)  # past the server's keep-alive: it closes the connection
        third = await client.get("/healthz")
        assert third.status_code == 200 and client._streams is not connection
        await client.aclose()
    finally:
        process.terminate()
        process.wait(timeout=30)
