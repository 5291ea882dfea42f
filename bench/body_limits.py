"""Oversized anonymous bodies against a real `rlhf serve`: its memory must stay flat.

Starts the web app (uvicorn, as `rlhf serve` runs it) on a fresh SQLite database, then sends
ROUNDS rounds of CONCURRENCY requests at once, each announcing SIZE MB: a JSON POST to the
labeling API without a token, a form POST to /logout and a multipart upload to an import page
without a session. Each body is streamed in 1 MB pieces from a socket and stops as soon as
the server answers, so the client never holds a body in memory. Prints per route the status,
the time to the answer and the bytes the server let in before answering, and the server's
resident memory before, at its peak (sampled every 50 ms) and after.
Usage: python -m bench.body_limits [--size-mb 500] [--concurrency 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import select
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from bench._server import serving

PIECE = b"x" * 1024**2
ROUTES = {
    "api (no token)": ("/api/v1/tasks/1/submit", "application/json"),
    "form (/logout)": ("/logout", "application/x-www-form-urlencoded"),
    "upload (no session)": ("/admin/projects/1/import", "multipart/form-data; boundary=b"),
}


def send(port: int, path: str, content_type: str, size: int) -> tuple[int, float, int]:
    """(status, seconds to the answer, bytes sent before it) for one oversized POST."""
    started = time.perf_counter()
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        while sent < size:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(PIECE)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(PIECE)
        sock.settimeout(60)
        answer = sock.recv(4096).split(b" ", 2)
    return int(answer[1]) if len(answer) > 1 else 0, time.perf_counter() - started, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp)) as server:
        process = psutil.Process(server.pid)
        before = process.memory_info().rss
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        size = args.size_mb * 1024**2
        print(f"{args.rounds} rounds x {args.concurrency} concurrent x {args.size_mb} MB bodies")
        print(f"{'route':<22}{'status':>8}{'answer s':>11}{'MB let in':>11}")
        with ThreadPoolExecutor(args.concurrency) as pool:
            for name, (path, content_type) in ROUTES.items():
                results = []
                for _ in range(args.rounds):
                    batch = [
                        pool.submit(send, server.port, path, content_type, size)
                        for _ in range(args.concurrency)
                    ]
                    results += [future.result() for future in batch]
                statuses = sorted({r[0] for r in results})
                slowest = max(r[1] for r in results)
                let_in = max(r[2] for r in results) / 1024**2
                print(f"{name:<22}{statuses!s:>8}{slowest:>11.2f}{let_in:>11.0f}")
        done.set()
        sampler.join()
        after = process.memory_info().rss
        mb = 1024**2
        print(
            f"server memory: {before / mb:.0f} MB before, {peak / mb:.0f} MB peak, "
            f"{after / mb:.0f} MB after"
        )


if __name__ == "__main__":
    main()
