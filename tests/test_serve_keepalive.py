"""`rlhf serve` keeps an idle connection open for RLHF_KEEP_ALIVE_SECONDS (uvicorn's own 5 s
equals httpx's, so a client reused a connection as the server closed it: issue 22), and
bench.queue goes on past a request lost that way."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
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


def _response(conn: socket.socket) -> bytes:
    """One whole /healthz answer (its body is the last thing it sends)."""
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = conn.recv(4096)
        assert chunk, f"the server closed the connection mid-answer: {answer!r}"
        answer += chunk
    return answer


def test_the_running_server_closes_an_idle_connection_after_the_setting(tmp_path: Path) -> None:
    """A real `rlhf serve` with RLHF_KEEP_ALIVE_SECONDS=1: a connection idle for a moment
    still takes a request, and one idle past a second is closed by the server (at uvicorn's
    default it would stay open 5 s)."""
    env = rlhf_env(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "data")
    env["RLHF_KEEP_ALIVE_SECONDS"] = "1"
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], env=env, cwd=CWD,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert process.poll() is None, "rlhf serve exited early"
                assert time.monotonic() < deadline, "rlhf serve did not come up"
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=4) as conn:
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
    from bench.queue import Tally, labeler

    calls: list[str] = []

    def app(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/submit"):
            if calls.count(request.url.path) == 1:
                raise httpx.ReadError("connection closed by the server")
            return httpx.Response(201, json={"id": 1})
        if len(calls) > 3:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response")
        return httpx.Response(200, json={"task_id": 5, "completions": [{"id": 1}, {"id": 2}]})

    tally = Tally()
    transport = httpx.MockTransport(app)
    async with httpx.AsyncClient(base_url="http://bench", transport=transport) as client:
        await labeler(client, project_id=1, count=2, tally=tally)
    assert calls == ["/api/v1/projects/1/tasks/next", *["/api/v1/tasks/5/submit"] * 2,
                     *["/api/v1/projects/1/tasks/next"] * 2]  # fmt: skip
    assert (tally.accepted, tally.unsure, tally.retries) == (1, 0, 2)
    assert tally.errors == {"lease: RemoteProtocolError": 1}
