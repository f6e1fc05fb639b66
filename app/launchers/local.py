"""The local launcher: the trainer as a child process of the worker, on the worker's host.

``python -m trainers <kind> --config run_config.json`` (``torchrun --nproc-per-node N`` when the
run asks for several GPUs), forked from the worker's main thread, in a session of its own (stop
signals the whole group: torchrun's ranks, data loader workers) and with
PR_SET_PDEATHSIG=SIGTERM: a trainer never outlives its worker, even after ``kill -9`` of the
worker (SIGTERM also makes torchrun stop its children). The trainer inherits the run folder's
lock (app.worker.RunLock), so the lock lives exactly as long as the trainer; its pid is written
into the lock file.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import IO

from app.launchers import STOP_GRACE_S, Ended, Job, LaunchError

_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: a child of a threaded parent should only make syscalls.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn that makes the kernel send SIGTERM to the child when its parent dies.

    The parent is the thread that forked, so the worker forks from its main thread. If the
    worker died between fork and prctl, the signal would never come: the child checks and exits.
    """

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def trainer_command(job: Job, python: str = sys.executable) -> list[str]:
    if job.gpus_per_node > 1:
        return [python, "-m", "torch.distributed.run", f"--nproc-per-node={job.gpus_per_node}", "-m", "trainers",
                job.kind, "--config", str(job.config)]
    return [python, "-m", "trainers", job.kind, "--config", str(job.config)]


def start_trainer(command: list[str], log: IO[bytes], lock) -> subprocess.Popen:
    """Launch the trainer: output to ``log``, the run folder's lock inherited, its own session
    (so a stop can signal the whole group), and killed by the kernel if this worker dies."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        pass_fds=(lock.fd,), preexec_fn=die_with(os.getpid()),  # noqa: PLW1509 - it only calls prctl and getppid
    )
    lock.record(process.pid)
    return process


def signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the trainer and its children (torchrun's ranks, data loader workers)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"trainer killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"trainer killed by signal {-returncode}"
    return f"trainer exited with code {returncode}"


def ended(returncode: int) -> Ended:
    return Ended(code=returncode if returncode >= 0 else None, reason=exit_reason(returncode))


class LocalTrainer:
    """A trainer process on this host (see the module's docstring)."""

    def __init__(self, process: subprocess.Popen, grace_s: float = STOP_GRACE_S):
        self.process = process
        self.grace_s = grace_s

    def poll(self) -> Ended | None:
        code = self.process.poll()
        return None if code is None else ended(code)

    def status(self) -> str:
        return ""

    def stop(self) -> None:
        signal_group(self.process, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.process, signal.SIGKILL)

    def stop_and_wait(self) -> Ended:
        """SIGTERM the trainer's group, SIGKILL it if it is still there after the grace period."""
        self.stop()
        try:
            return ended(self.process.wait(self.grace_s))
        except subprocess.TimeoutExpired:
            self.kill()
            return ended(self.process.wait())


class LocalLauncher:
    name = "local"
    max_nodes = 1  # multi-node runs wait for a worker with the Slurm launcher

    def start(self, job: Job, log: IO[bytes], lock) -> LocalTrainer:
        if job.nodes > 1:  # not claimed by a local worker (claim_next's max_nodes); a guard all the same
            raise LaunchError(f"run {job.run_id} asks for {job.nodes} nodes: only a worker with --launcher slurm runs it")
        return LocalTrainer(start_trainer(trainer_command(job), log, lock))
