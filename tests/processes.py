"""Run the `rlhf` command and `rlhf serve` as real processes, as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import TEST_SECRET

ROOT = Path(__file__).resolve().parents[1]
# Not the repository root, so no developer's .env is read.
CWD = ROOT / "tests"
CLI = [sys.executable, "-m", "app.cli"]


def rlhf_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
    env.update(
        RLHF_DATABASE_URL=database_url,
        RLHF_DATA_DIR=str(data_dir),
        RLHF_SECRET_KEY=TEST_SECRET,
        **extra,
    )
    return env


#: how long one `rlhf` command may take before a test calls it hung: a training job with
#: --wait on a busy 2-core machine took over 120 s (a guard against hangs, not a speed check)
COMMAND_TIMEOUT = 300


def rlhf(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, input=stdin, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT, cwd=CWD,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    output: str = ""
    env: dict[str, str] = field(default_factory=dict)  # what `rlhf` needs to reach it


@contextmanager
def serve_with_worker(env: dict[str, str]) -> Iterator[Server]:
    """`rlhf serve --with-worker` in its own process group; on exit, Ctrl-C (SIGINT to the
    group, as a terminal sends it) and wait for both processes to stop."""
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--with-worker", "--port", str(port)],
        env=env, cwd=CWD, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    server = Server(url=f"http://127.0.0.1:{port}", process=process, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as r:
                    assert json.load(r) == {"status": "ok"}
                    break
            except OSError:
                assert time.monotonic() < deadline, "the web app did not come up"
                assert process.poll() is None, "rlhf serve exited early"
                time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        server.output, _ = process.communicate(timeout=60)
