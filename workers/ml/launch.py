"""Running a trainer in child processes with ``accelerate launch`` (design §12), as the job's
supervisor sees it: start them, follow what the main process reports, stop them.

The job's worker stays small: it starts ``accelerate launch -m workers.ml.trainer_process
SPEC`` in a process group of its own, reads the events the trainer's main process appends to
a JSON-lines file (``events.jsonl``: the only channel back; the trainer knows nothing of the
database), and calls ``check`` about once a second, which raises to stop (a cancel). However
the supervisor leaves, the whole group is stopped (SIGTERM, then SIGKILL); a supervisor killed
outright is noticed by the trainers themselves (``trainer_process``'s watchdog).

Without ``--accelerate-config`` the job writes the launch config itself (``accelerate.json``
in the launch folder): N processes on this machine, on the GPUs the worker sees, else on the
CPU with the gloo backend; a user's default ``accelerate config`` is not read behind their
back. With a config written by ``accelerate config`` (multi-GPU, DeepSpeed ZeRO, FSDP, several
machines) that file is used as it is, ``--processes`` overriding its ``num_processes``;
configs that shard the weights (ZeRO-3, FSDP) are refused for now (``check_sharding``).

Nothing here knows about the database either.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SPEC: Final = "spec.json"
EVENTS: Final = "events.jsonl"
OUTPUT: Final = "output.log"
LAUNCH_CONFIG: Final = "accelerate.json"
#: the trainer module ``accelerate launch -m`` runs
TRAINER_MODULE: Final = "workers.ml.trainer_process"
#: how often the supervisor reads new events and calls ``check``
POLL_SECONDS: Final = 0.5
#: after SIGTERM, how long the processes get to stop before SIGKILL
STOP_GRACE_SECONDS: Final = 10.0
#: lines of the processes' output kept with a failure (the job page folds them away)
DETAIL_LINES: Final = 200
#: lines of it quoted in the failure message itself
MESSAGE_LINES: Final = 6

ROOT = Path(__file__).resolve().parents[2]

#: (kind, fields) -> None, for each event of the main process, in order
EventSink = Callable[[str, dict[str, Any]], None]


class LaunchError(RuntimeError):
    """The trainer processes could not be started, or one of them died. ``str()`` is the
    message for the job page; ``detail`` the end of their output."""

    def __init__(
        self, message: str, detail: str = "", *, user_error: bool = False, killed: bool = False
    ) -> None:
        super().__init__(message)
        self.detail = detail
        self.user_error = user_error  # the trainer refused the data or settings (said plainly)
        self.killed = killed  # a process was killed by a signal


@dataclass(frozen=True)
class Launch:
    """How to launch: ``processes`` None means 1, or the config file's own number."""

    processes: int | None = None
    config_file: str | None = None


def visible_gpus() -> int:
    """The GPUs this worker may use (``CUDA_VISIBLE_DEVICES`` / ``rlhf worker --gpus``)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def read_config(path: str) -> dict[str, Any]:
    """A config file of ``accelerate config`` (YAML or JSON), checked enough to say plainly
    what is wrong before any process starts."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise LaunchError(
            f"The accelerate config {path!r} does not exist on this worker: write one with "
            "`accelerate config --config_file FILE` on the machine that trains.",
            user_error=True,
        )
    try:
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".json":
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LaunchError(
            f"The accelerate config {path!r} cannot be read: {exc}", user_error=True
        ) from exc
    except Exception as exc:  # yaml.YAMLError and its kin
        raise LaunchError(
            f"The accelerate config {path!r} is not valid YAML: {exc}", user_error=True
        ) from exc
    if not isinstance(config, dict):
        raise LaunchError(
            f"The accelerate config {path!r} must be a mapping of settings (as `accelerate "
            "config` writes it).",
            user_error=True,
        )
    return config


def check_sharding(config: dict[str, Any], path: str) -> None:
    """Refuse what the trainers cannot yet finish: with ZeRO-3 or FSDP every process holds a
    shard of each weight, and the epoch evaluations and the saved folder read the whole model
    in the main process (DDP and ZeRO-1/2 keep whole weights in every process)."""
    kind = str(config.get("distributed_type") or "").upper()
    deepspeed = config.get("deepspeed_config") or {}
    stage = int(deepspeed.get("zero_stage") or 0) if isinstance(deepspeed, dict) else 0
    if kind == "FSDP" or (kind == "DEEPSPEED" and stage == 3):
        what = "FSDP" if kind == "FSDP" else "DeepSpeed ZeRO-3"
        raise LaunchError(
            f"The accelerate config {path!r} shards the weights ({what}), which training "
            "jobs do not support yet (their evaluations and the saved model read the whole "
            "model in one process): use DeepSpeed ZeRO-2 (optionally offloading the optimizer "
            "to the CPU), plain multi-GPU, or --lora-r to fit the model.",
            user_error=True,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_config(processes: int, *, gpus: int) -> dict[str, Any]:
    """The config of a launch on this machine alone: one process per GPU asked for, or N
    CPU processes (``MULTI_GPU`` is what makes ``accelerate launch`` start them through
    ``torchrun``; on a machine without CUDA each then joins with the gloo backend)."""
    if gpus and processes > gpus:
        raise LaunchError(
            f"--processes {processes} needs {processes} GPUs but this worker sees {gpus} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): give "
            "at most that many, or start the worker with more (--gpus).",
            user_error=True,
        )
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if processes > 1 else "NO",
        "mixed_precision": "no",  # the Trainer picks bf16 itself where the GPU has it
        "use_cpu": False,
        "debug": False,
        "num_processes": processes,
        "num_machines": 1,
        "machine_rank": 0,
        "gpu_ids": "all",
        "main_process_port": _free_port(),  # two jobs on one machine do not collide
        "rdzv_backend": "static",
        "same_network": True,
    }


def command(folder: Path, launch: Launch) -> tuple[list[str], int]:
    """The ``accelerate launch`` command line for the spec in ``folder``, and the number of
    processes it starts (on this machine)."""
    if launch.config_file is not None:
        config = read_config(launch.config_file)
        check_sharding(config, launch.config_file)
        config_file = str(Path(launch.config_file).expanduser().resolve())
        processes = launch.processes or int(config.get("num_processes") or 1)
        machines = int(config.get("num_machines") or 1)
        per_machine = max(1, processes // max(machines, 1))
    else:
        processes = launch.processes or 1
        config_file = str(folder / LAUNCH_CONFIG)
        Path(config_file).write_text(
            json.dumps(launch_config(processes, gpus=visible_gpus()), indent=2) + "\n",
            encoding="utf-8",
        )
        per_machine = processes
    threads = max(1, cpu_count() // per_machine)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file,
        "--num_processes", str(processes), "--num_cpu_threads_per_process", str(threads),
        "--module", TRAINER_MODULE, str(folder / SPEC),
    ]  # fmt: skip
    return cmd, processes


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # the trainer module is importable whatever the worker's working folder is
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


class EventReader:
    """The complete lines appended to the events file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[tuple[str, dict[str, Any]]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += end
        events = []
        for line in data[:end].splitlines():
            if line.strip():
                event = json.loads(line)
                events.append((str(event.pop("event")), event))
        return events


def tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 256 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


_KILLED = re.compile(r"SIGKILL|Signals\.SIGKILL|exitcode\s*:\s*-9\b|exit status -9\b")
_NOISE = re.compile(r"^\s*(warnings\.warn|W\d{4} |\[W\d+)")


def death_message(output: Path, returncode: int) -> LaunchError:
    """What the job page says when the processes ended without a result: how they died and
    their last lines (an out-of-memory kill said as such)."""
    lines = tail(output, DETAIL_LINES)
    detail = "\n".join(lines)
    killed = bool(_KILLED.search(detail)) or returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    if killed:
        how = (
            "was killed (SIGKILL): most often the machine ran out of memory (lower "
            "--batch-size or --max-length, train with --lora-r, or shard with an accelerate "
            "config for DeepSpeed ZeRO or FSDP)"
        )
    else:
        how = f"stopped with exit status {returncode}"
    quoted = [line for line in lines if not _NOISE.match(line)][-MESSAGE_LINES:]
    message = f"A training process {how}."
    if quoted:
        message += " Its last lines:\n" + "\n".join(quoted)
    return LaunchError(message, detail, killed=killed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rank_pids(folder: Path) -> list[int]:
    """The pids the trainer processes wrote (``rank-N.pid``), for stopping and for tests."""
    pids = []
    for file in sorted(folder.glob("rank-*.pid")):
        try:
            pids.append(int(file.read_text(encoding="utf-8").strip()))
        except (OSError, ValueError):
            continue
    return pids


def stop(process: subprocess.Popen[bytes], folder: Path) -> None:
    """Stop the launcher's process group and every trainer process it started: SIGTERM, then
    SIGKILL after ``STOP_GRACE_SECONDS``."""
    pids = rank_pids(folder)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + (STOP_GRACE_SECONDS if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline:
            if process.poll() is not None and not any(_alive(pid) for pid in pids):
                return
            time.sleep(0.1)
    process.wait(timeout=5)


def run(
    folder: Path, spec: dict[str, Any], launch: Launch, *, on_event: EventSink,
    check: Callable[[], None], on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write ``spec`` into ``folder`` (the launch folder, emptied by the caller), launch the
    trainer and follow it to the end. Returns the fields of its ``result`` event; raises
    ``LaunchError`` when a process died or the trainer failed, and whatever ``check`` or
    ``on_event`` raise (the processes are stopped first)."""
    spec = {
        **spec, "supervisor_pid": os.getpid(), "supervisor_host": socket.gethostname(),
        "events": str(folder / EVENTS),
    }  # fmt: skip
    (folder / SPEC).write_text(json.dumps(spec) + "\n", encoding="utf-8")
    cmd, processes = command(folder, launch)
    if on_start is not None:
        on_start(processes)
    reader = EventReader(folder / EVENTS)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    with (folder / OUTPUT).open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            cmd, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_environment(), cwd=str(folder), start_new_session=True,
        )  # fmt: skip
        try:
            while True:
                finished = process.poll() is not None
                for kind, fields in reader.read():
                    if kind == "result":
                        result = fields
                    elif kind == "error":
                        error = error or fields  # the first error is the cause
                    else:
                        on_event(kind, fields)
                if finished:
                    break
                check()
                time.sleep(POLL_SECONDS)
        finally:
            stop(process, folder)
    if error is not None and error.get("user_error"):  # the data or settings, said plainly
        raise LaunchError(str(error["message"]), user_error=True)
    if process.returncode == 0 and result is not None:
        return result
    death = death_message(folder / OUTPUT, process.returncode)
    if error is not None and not death.killed:
        # a trainer's own exception; when a process was killed, the others' errors (a
        # connection closed by the dead peer) are what followed, not the cause
        detail = "\n".join(filter(None, [error.get("traceback", ""), *tail(folder / OUTPUT, 40)]))
        raise LaunchError(str(error["message"]), detail)
    raise death
