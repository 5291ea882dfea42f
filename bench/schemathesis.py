"""Schemathesis against a real `rlhf serve`: no 500 and no schema violation, as an admin and
as a labeler.

Starts the web app on a fresh SQLite database with the demo seeded (users, a project with
rankings and demonstrations, so ids exist to probe), makes an API token for the demo admin
and for a demo labeler, and runs ``st run`` once per token against ``/api/v1/openapi.json``
with every check (server errors, status codes, headers, response schemas, positive data
accepted, negative data refused, ...) and every phase (examples, coverage, fuzzing,
stateful), bounded by ``--max-examples`` per operation. Schemathesis runs from its own
virtualenv, ``bench/.venv-schemathesis`` (made on first use from the package index), so its
packages never shift this project's. An export job is queued first (no worker runs it), so
``GET /jobs/{job_id}`` has an id to find.

Three rules depend on the stored rows or compare two fields, which no OpenAPI schema can
state, so for those three operations a 422 to schema-valid data is expected
(``positive_data_acceptance``): a submission must fit its task (a ranking task needs the
task's answers placed, a demonstration task a ``text``), the agreement filter ``since`` must
not be after ``until``, and a project's max overlap must be at least its overlap (the stored
one when the PATCH leaves it out). Every other operation, and every other check, is held to
the description as is.
Prints per role the test cases run and passed, each failure in full, and exits 1 on any.
Usage: python -m bench.schemathesis [--max-examples 30] [--seed 1] [--roles admin,labeler]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._server import serving

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-schemathesis"
SCHEMATHESIS = "schemathesis==4.32.5"
USERS = {"admin": "admin@demo.local", "labeler": "labeler1@demo.local"}
CONFIG = """
[parameters]
job_id = {job_id}

[[operations]]
include-path-regex = "^/api/v1/(tasks/{{task_id}}/submit|projects/{{project_id}}/agreement)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path-regex = "^/api/v1/projects/{{project_id}}$"
include-method = "PATCH"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


def st_command() -> Path:
    """The virtualenv's ``st``, made on first use."""
    st = VENV / "bin" / "st"
    if (VENV / ".ready").is_file():
        return st
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", SCHEMATHESIS],
        check=True, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (VENV / ".ready").touch()
    return st


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-examples", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--roles", default="admin,labeler")
    args = parser.parse_args()
    st = st_command()
    failed = False
    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp), demo=True) as server:
        queued = server.cli("export", "1", "--kind", "pairwise")
        job_id = int(re.search(r"job (\d+)", queued)[1])  # type: ignore[index]
        config = Path(tmp, "schemathesis.toml")
        config.write_text(CONFIG.format(job_id=job_id))
        for role in args.roles.split(","):
            token = server.cli("users", "tokens", USERS[role], "--create", f"schemathesis {role}")
            secret = token.strip().splitlines()[-1]
            run = subprocess.run(
                [str(st), "--config-file", str(config), "run", f"{server.url}/api/v1/openapi.json",
                 "-H", f"Authorization: Bearer {secret}", "--checks", "all",
                 "--max-examples", str(args.max_examples), "--seed", str(args.seed),
                 "--workers", "1", "--output-truncate", "true"],
                capture_output=True, text=True, check=False, cwd=tmp,
            )  # fmt: skip
            out = run.stdout
            cases = re.search(r"Test cases:\s*\n\s*(.+)", out)
            print(f"as {role} ({USERS[role]}): {cases[1] if cases else 'no summary'}", flush=True)
            if run.returncode != 0:
                print(out[out.find("FAILURES") :] if "FAILURES" in out else out + run.stderr)
            failed |= run.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
