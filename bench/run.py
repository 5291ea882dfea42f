"""Run every benchmark in bench/ (``make bench``) and print their figures.

Each runs as a module (``python -m bench.queue``), so a name like ``queue`` never shadows
the standard library module of the same name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# ppo_trl112: run by bench.ppo; queue: its table is the first of bench.label_studio's, which
# compares it with Label Studio's (so it runs once); _name: helpers
NOT_BENCHMARKS = {"run", "ppo_trl112", "queue"}


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("*.py")):
        if script.stem in NOT_BENCHMARKS or script.stem.startswith("_"):
            continue
        print(f"== bench.{script.stem}", flush=True)
        command = [sys.executable, "-m", f"bench.{script.stem}", *sys.argv[1:]]
        failed += subprocess.run(command, check=False, cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
