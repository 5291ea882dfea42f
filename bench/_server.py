"""A real `rlhf serve` on a fresh SQLite database in a temporary folder, for the benchmarks
that probe the running app (bench.body_limits, bench.schemathesis)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

CLI = [sys.executable, "-m", "app.cli"]


@dataclass
class Server:
    port: int
    pid: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by `rlhf serve` and its web worker processes."""
        main = psutil.Process(self.pid)
        total = 0.0
        for process in [main, *main.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:  # a worker that uvicorn has just replaced
                continue
            total += times.user + times.system
        return total

    def cli(self, *args: str) -> str:
        """`rlhf ARGS` against this server's database; its standard output."""
        done = subprocess.run(
            [*CLI, *args], env=self.env, check=True, capture_output=True, text=True
        )
        return done.stdout


@contextmanager
def serving(
    tmp: Path, *, demo: bool = False, database_url: str | None = None, workers: int = 1
) -> Iterator[Server]:
    """Start the web app (``workers`` processes) on a free port with its data dir under
    ``tmp``, wait until it answers /healthz, and stop it afterwards. Its database is
    ``database_url`` as the caller prepared it, or else a new SQLite file under ``tmp``,
    migrated (and with ``demo`` the demo seeded into it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
    env.update(
        RLHF_DATABASE_URL=database_url or f"sqlite:///{tmp}/bench.db", RLHF_DATA_DIR=f"{tmp}/var",
        RLHF_SECRET_KEY="bench-server-secret-0123456789abcdef", RLHF_DEMO_MODE="1",
    )  # fmt: skip
    if database_url is None:
        subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    if demo:
        subprocess.run([*CLI, "demo", "--feedback"], env=env, check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--workers", str(workers)], env=env, cwd=tmp,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        else:
            raise RuntimeError("rlhf serve did not answer /healthz within a minute")
        yield Server(port=port, pid=process.pid, env=env)
    finally:
        process.terminate()
        process.wait(timeout=30)
