"""The Slurm launcher: each attempt of a run is a Slurm batch job, which the worker watches.

The worker writes ``slurm_job.sh`` into the run folder and submits it with sbatch. The job has
one task per node; ``srun`` starts ``torchrun`` on every node, which meet at a c10d rendezvous
on the job's first node (``--rdzv-endpoint $head_node:port``, ``--nnodes``,
``--nproc-per-node`` = the run's gpus_per_node) and start the trainer's ranks. A run of one
process is ``srun python -m trainers ...`` without torchrun, as the local launcher does.

The job's output is appended to the run folder's ``trainer.log`` and its trainers write metrics
and checkpoints there too, on the filesystem the worker and the compute nodes share: the worker
streams them exactly as it does for a local trainer. The job gets the worker's environment
without the ``RLHF_*`` settings: the database URL and the secret key never reach a compute node.

The worker polls ``scontrol show job`` and maps what Slurm says onto what the worker does for a
local trainer:

- COMPLETED is an exit 0, FAILED the batch script's exit status (srun passes the trainer's on: 2
  is bad config or data, which fails the run at once); the run is recorded as for a local run.
- NODE_FAIL, BOOT_FAIL, PREEMPTED, TIMEOUT, OUT_OF_MEMORY, DEADLINE, and CANCELLED when the app
  did not ask for it (an administrator's scancel): the trainer was killed from outside, like a
  local trainer killed by a signal, so the run is queued again (up to max_attempts) and the next
  attempt, a new job, resumes from the run folder's latest checkpoint. Jobs are submitted with
  ``--no-requeue``: the worker, not Slurm, requeues, so every attempt is counted, logged and
  bounded by max_attempts, and a job that hit its time limit is resubmitted too.
- Cancel in the app is ``scancel``; a worker asked to stop cancels its job before it gives the
  run back. The job id of the latest attempt is kept in ``<run folder>/slurm_job``: a new attempt
  first cancels an earlier attempt's job that is still in the queue (its worker was killed), and
  waits for it to end, so that two trainers never write one run folder.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from app.launchers import STOP_GRACE_S, Ended, FolderBusy, Job, LaunchError, LauncherUnavailable

REQUIRED = ("sbatch", "scontrol", "scancel")
LEFTOVER_WAIT_S = 30.0  # how long a new attempt waits for an earlier attempt's cancelled job to end
COMMAND_TIMEOUT_S = 60.0

# States after which a job runs no more; any other state (PENDING, CONFIGURING, RUNNING, COMPLETING,
# SUSPENDED, REQUEUED ...) is still in flight.
ENDED = {
    "COMPLETED": "the trainer exited with code 0",
    "FAILED": "the trainer failed",
    "NODE_FAIL": "a node of the job failed",
    "BOOT_FAIL": "a node of the job failed to boot",
    "PREEMPTED": "the job was preempted",
    "TIMEOUT": "the job reached its time limit",
    "DEADLINE": "the job reached its deadline",
    "OUT_OF_MEMORY": "a task ran out of memory",
    "CANCELLED": "cancelled outside the app (an scancel by a user or an administrator)",
}
_FIELD = re.compile(r"(?:^|\s)(JobState|ExitCode|Reason|NodeList|Restarts)=(\S*)")


def slurm_env() -> dict[str, str]:
    """The environment for sbatch and for the job: the worker's, without its RLHF_* settings (the
    trainers never touch the database) and without the variables of a Slurm job it may run in."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("RLHF_") and not (k.startswith(("SLURM_", "SBATCH_", "SRUN_")) and k != "SLURM_CONF")}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class SlurmLauncher:
    name = "slurm"
    max_nodes = None

    def __init__(self, *, partition: str | None = None, account: str | None = None, time_limit: str | None = None,
                 request_gpus: bool = True, cpus_per_task: int | None = None, sbatch_args: str = "", setup: str = "",
                 python: str | None = None, rdzv_port: int = 29500, grace_s: float = STOP_GRACE_S,
                 leftover_wait_s: float = LEFTOVER_WAIT_S):
        self.partition, self.account, self.time_limit = partition, account, time_limit
        self.request_gpus, self.cpus_per_task = request_gpus, cpus_per_task
        self.sbatch_args = shlex.split(sbatch_args)
        self.setup, self.python, self.rdzv_port = setup, python or sys.executable, rdzv_port
        self.grace_s, self.leftover_wait_s = grace_s, leftover_wait_s

    @classmethod
    def from_settings(cls, settings) -> SlurmLauncher:
        missing = [name for name in REQUIRED if shutil.which(name) is None]
        if missing:
            raise LauncherUnavailable(
                f"--launcher slurm needs Slurm's client commands on this host's PATH; missing: {', '.join(missing)}. "
                "Install them (Debian/Ubuntu: apt-get install slurm-client), point them at the cluster "
                "(/etc/slurm/slurm.conf or SLURM_CONF) and check that `sinfo` answers; see docs/cluster.md.")
        return cls(partition=settings.slurm_partition, account=settings.slurm_account, time_limit=settings.slurm_time,
                   request_gpus=settings.slurm_request_gpus, cpus_per_task=settings.slurm_cpus_per_task,
                   sbatch_args=settings.slurm_sbatch_args, setup=settings.slurm_setup, python=settings.slurm_python,
                   rdzv_port=settings.slurm_rdzv_port)

    # ------------------------------------------------------------ commands

    def command(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(list(args), env=slurm_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess(list(args), 1, "", f"{args[0]}: {exc}")

    def job_info(self, job_id: str) -> dict[str, str] | None:
        """What ``scontrol show job`` says of a job; {} when Slurm no longer knows it (purged
        after MinJobAge; sacct is asked, where accounting is on), None when Slurm cannot be asked."""
        out = self.command("scontrol", "show", "job", "-o", job_id)
        if out.returncode == 0 and "JobState=" in out.stdout:
            return dict(_FIELD.findall(out.stdout))
        if "Invalid job id" not in out.stderr:
            return None
        acct = self.command("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode") if shutil.which("sacct") else None
        if acct is not None and acct.returncode == 0 and acct.stdout.strip():
            state, _, code = acct.stdout.strip().splitlines()[0].partition("|")
            return {"JobState": state.split()[0], "ExitCode": code, "Reason": "from sacct"}
        return {}

    def cancel(self, job_id: str, *, kill: bool = False) -> None:
        self.command("scancel", *(["--signal=KILL", "--full"] if kill else []), job_id)

    # ------------------------------------------------------------ the job

    def script(self, job: Job) -> str:
        q = shlex.quote
        options = [f"--job-name=rlhf-run-{job.run_id}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
                   f"--output={job.folder / 'trainer.log'}", "--open-mode=append", f"--chdir={job.folder}", "--no-requeue"]
        if self.request_gpus and job.gpus_per_node > 0:
            options.append(f"--gpus-per-node={job.gpus_per_node}")
        if self.cpus_per_task:
            options.append(f"--cpus-per-task={self.cpus_per_task}")
        for flag, value in (("partition", self.partition), ("account", self.account), ("time", self.time_limit)):
            if value:
                options.append(f"--{flag}={value}")
        trainer = ["-m", "trainers", job.kind, "--config", str(job.config)]
        if job.distributed:
            launch = [q(self.python), "-m", "torch.distributed.run", f"--nnodes={job.nodes}",
                      f"--nproc-per-node={job.processes_per_node}", "--rdzv-backend=c10d",
                      '--rdzv-endpoint="$head_node:$port"', '--rdzv-id="$SLURM_JOB_ID"', *map(q, trainer)]
        else:
            launch = [q(self.python), *map(q, trainer)]
        name = " ".join(job.name.split())[:100]
        lines = [
            "#!/bin/bash",
            f"# rlhf-lab run {job.run_id} ({job.kind}, {name!r}), {job.attempt}: written and submitted by the worker",
            "# (app/launchers/slurm.py); the trainers write into this folder, never into the database.",
            *(f"#SBATCH {option}" for option in options),
            *([f"# sbatch options from RLHF_SLURM_SBATCH_ARGS: {shlex.join(self.sbatch_args)}"] if self.sbatch_args else []),
            *([self.setup.strip()] if self.setup.strip() else []),  # before set -u: module scripts use unset variables
            "set -euo pipefail",
            "export PYTHONUNBUFFERED=1",
            'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"port=$(( {self.rdzv_port} + SLURM_JOB_ID % 1000 ))",
            'echo "Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST ($SLURM_JOB_NUM_NODES node(s)); rendezvous at $head_node:$port"',
            f"exec srun --kill-on-bad-exit=1 --nodes={job.nodes} --ntasks-per-node=1 \\\n    " + " ".join(launch),
        ]
        return "\n".join(lines) + "\n"

    def start(self, job: Job, log: IO[bytes], lock) -> SlurmTrainer:
        self.cancel_leftover(job.folder)
        script = job.folder / "slurm_job.sh"
        script.write_text(self.script(job))
        out = self.command("sbatch", "--parsable", *self.sbatch_args, str(script))
        job_id = out.stdout.strip().split(";")[0]
        if out.returncode != 0 or not job_id.isdigit():
            raise LaunchError(f"sbatch refused the job: {_first_line(out.stderr or out.stdout) or 'no reason given'}")
        (job.folder / "slurm_job").write_text(job_id + "\n")
        shape = f"{job.nodes} node(s) x {job.processes_per_node} process(es)"
        log.write(f"submitted Slurm job {job_id} ({script.name}: {shape})\n".encode())
        log.flush()
        return SlurmTrainer(self, job_id)

    def cancel_leftover(self, folder: Path) -> None:
        """Cancel an earlier attempt's job that is still in the queue (its worker died), and wait
        for it to end: its trainers would write the same run folder."""
        try:
            job_id = (folder / "slurm_job").read_text().strip()
        except OSError:
            return
        leftover = SlurmTrainer(self, job_id)
        if not job_id.isdigit() or leftover.poll() is not None:
            return
        self.cancel(job_id)
        deadline = time.monotonic() + self.leftover_wait_s
        while leftover.poll() is None:
            if time.monotonic() >= deadline:
                raise FolderBusy(f"Slurm job {job_id} of an earlier attempt is still {leftover.state} after scancel")
            time.sleep(0.5)


class SlurmTrainer:
    """A submitted job, as the worker watches it (app.launchers.Trainer)."""

    def __init__(self, launcher: SlurmLauncher, job_id: str):
        self.launcher, self.job_id = launcher, job_id
        self.state, self.info, self.trouble = "PENDING", {}, ""

    def poll(self) -> Ended | None:
        info = self.launcher.job_info(self.job_id)
        if info is None:  # the controller restarts or the network drops: the job goes on
            self.trouble = "Slurm does not answer; the job's state is unknown"
            return None
        self.trouble = ""
        if not info:
            return Ended(None, f"Slurm job {self.job_id} is no longer known to Slurm (it ended unseen)")
        self.info, self.state = info, info.get("JobState", "UNKNOWN")
        if self.state not in ENDED:
            return None
        return self._ended()

    def _ended(self) -> Ended:
        code, _, sig = self.info.get("ExitCode", "").partition(":")
        head = f"Slurm job {self.job_id} ended {self.state}"
        if self.state == "COMPLETED":
            return Ended(0, f"{head}: trainer exited with code 0")
        if self.state == "FAILED" and sig.isdigit() and sig != "0":
            return Ended(None, f"{head}: trainer killed by signal {_signal_name(int(sig))}")
        if self.state == "FAILED" and code.isdigit() and int(code) > 128:  # srun: a task killed by signal N exits 128 + N
            return Ended(None, f"{head}: trainer killed by signal {_signal_name(int(code) - 128)}")
        if self.state == "FAILED" and code.isdigit():
            return Ended(int(code), f"{head}: trainer exited with code {code}")
        return Ended(None, f"{head}: {ENDED[self.state]}")

    def status(self) -> str:
        if self.trouble:
            return f"Slurm job {self.job_id}: {self.trouble}"
        where = self.info.get("NodeList", "")
        reason = self.info.get("Reason", "")
        detail = f" on {where}" if self.state == "RUNNING" and where and where != "(null)" else (
            f" ({reason})" if reason and reason != "None" else "")
        return f"Slurm job {self.job_id} {self.state}{detail}"

    def stop(self) -> None:
        self.launcher.cancel(self.job_id)

    def kill(self) -> None:
        self.launcher.cancel(self.job_id, kill=True)

    def stop_and_wait(self) -> Ended:
        """scancel, then scancel -s KILL after the grace period; waits until Slurm says the job
        ended (or, if Slurm stops answering, gives up after twice the grace period)."""
        self.stop()
        start = time.monotonic()
        killed = False
        while True:
            ended = self.poll()
            if ended is not None:
                return ended
            waited = time.monotonic() - start
            if waited > 2 * self.launcher.grace_s:
                return Ended(None, f"Slurm job {self.job_id} was cancelled; Slurm still says {self.state}")
            if waited > self.launcher.grace_s and not killed:
                self.kill()
                killed = True
            time.sleep(0.5)
