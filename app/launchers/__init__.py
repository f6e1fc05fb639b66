"""How a worker starts a run's trainer, and how it learns that the trainer ended.

A launcher turns one attempt of a claimed run (a :class:`Job`) into a running trainer (a
:class:`Trainer` handle) that the worker polls, stops and waits for; everything else (claiming,
heartbeats, metrics, retries, cancel) is the worker's, the same for every launcher:

- ``local`` (:mod:`app.launchers.local`): ``python -m trainers`` (``torchrun`` for several
  GPUs) as a child process on the worker's host; single-node runs only.
- ``slurm`` (:mod:`app.launchers.slurm`): an sbatch job whose ``srun`` starts ``torchrun`` on
  every node with a c10d rendezvous; the worker watches the job with ``scontrol``.

Either way the trainers write metrics, log and checkpoints into the run folder, where the
worker reads them (a shared filesystem for Slurm), and never touch the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

STOP_GRACE_S = 30.0  # a stopped trainer gets this long to exit (SIGTERM, scancel), then it is killed


class LaunchError(RuntimeError):
    """The trainer could not be started (e.g. sbatch refused the job); the attempt counts and
    the run is retried up to its max_attempts."""


class FolderBusy(LaunchError):
    """An earlier attempt's trainer still holds the run folder: the run goes back to the queue
    without counting the attempt (two trainers never write one run folder)."""


class LauncherUnavailable(RuntimeError):
    """This host cannot use the chosen launcher (e.g. no sbatch on PATH); the worker does not start."""


@dataclass(frozen=True)
class Job:
    """One attempt of a run, as a launcher needs it."""

    run_id: int
    kind: str
    name: str
    nodes: int
    gpus_per_node: int
    config: Path  # run_config.json, the trainer's --config
    folder: Path  # the run folder: trainer.log, output/, .lock
    attempt: str  # "attempt 2 of 3", for the job's name and logs

    @property
    def processes_per_node(self) -> int:
        return max(1, self.gpus_per_node)

    @property
    def distributed(self) -> bool:
        return self.nodes * self.processes_per_node > 1


@dataclass(frozen=True)
class Ended:
    """How a trainer ended. ``code`` is its exit status when it exited by itself (0 done, 2 bad
    config or data); None when something else ended it (a signal, a lost node, Slurm)."""

    code: int | None
    reason: str  # "trainer exited with code 1", "Slurm job 12 ended NODE_FAIL (node failure)"


class Trainer(Protocol):
    """A launched attempt, as the worker watches it."""

    def poll(self) -> Ended | None:
        """None while it runs (or waits to run); how it ended once it has."""

    def status(self) -> str:
        """A line for the run's message while it has not started yet (a queued Slurm job), else ''."""

    def stop(self) -> None:
        """Ask it to stop (SIGTERM, scancel): it gets a grace period to exit."""

    def kill(self) -> None:
        """Stop it now (after the grace period)."""

    def stop_and_wait(self) -> Ended:
        """stop(), then kill() if it is still there after the grace period; wait until it is gone."""


class Launcher(Protocol):
    name: str
    # Runs of at most this many nodes are claimed by a worker with this launcher (None: any).
    max_nodes: int | None

    def start(self, job: Job, log: IO[bytes], lock) -> Trainer:
        """Start the trainer. ``log`` is ``trainer.log`` open for appending; ``lock`` the run
        folder's lock (app.worker.RunLock), which the worker holds. Raises LaunchError."""


def make_launcher(settings, name: str | None = None) -> Launcher:
    """The launcher a worker uses: ``name`` (from ``rlhf worker --launcher``) or the setting.
    Raises LauncherUnavailable when this host cannot use it."""
    name = name or settings.launcher
    if name == "local":
        from app.launchers.local import LocalLauncher

        return LocalLauncher()
    if name == "slurm":
        from app.launchers.slurm import SlurmLauncher

        return SlurmLauncher.from_settings(settings)
    raise LauncherUnavailable(f"unknown launcher {name!r}: choose local or slurm")
