"""The Slurm launcher against a real single-node Slurm cluster (munged, slurmctld and slurmd,
started by the module's fixture from a temporary slurm.conf: tests/slurm_cluster.py).

``rlhf worker --launcher slurm`` runs as a subprocess on a fresh database, as the worker-fault
tests run the local worker: tiny SFT runs on CPU (gloo), the trainers writing into the run
folder and the worker streaming from there. A cancel in the app reaches scancel; a node that
fails under a job (``scontrol update State=DOWN``, which Slurm reports as NODE_FAIL: the
state a real node failure gives) makes the worker requeue the run, and the new job's trainer
resumes from the last checkpoint.

These tests need Slurm's daemons and client commands (Debian: slurmctld slurmd slurm-client
munge; scripts/test installs them). The database does not matter to what they check: they run
on PostgreSQL only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import unit_of_work
from app.launchers import Job
from app.launchers.slurm import SlurmLauncher, SlurmTrainer
from app.runs import service
from app.runs.models import RunStatus
from tests.app.runs.test_worker_faults import (  # noqa: F401 - lab, tiny_model and sft_data are fixtures
    RLHF,
    Lab,
    assert_metrics_match_the_log,
    lab,
    logged_steps,
    resumed_after,
    sft_config,
    sft_data,
    tiny_model,
    wait_for,
)
from tests.factories import make_user
from tests.slurm_cluster import SlurmCluster, free_port, missing_binaries, slurm_cluster

pytest.importorskip("torch")

MISSING = missing_binaries()
needs_slurm = pytest.mark.skipif(
    bool(MISSING), reason=f"Slurm is not installed here (missing {', '.join(MISSING)}): "
    "apt-get install slurmctld slurmd slurm-client munge (scripts/test does)")
pytestmark = [pytest.mark.postgres_only]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[SlurmCluster]:
    if MISSING:
        pytest.skip(f"Slurm is not installed here (missing {', '.join(MISSING)})")
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture
def slurm_lab(lab: Lab, slurm: SlurmCluster, monkeypatch) -> Lab:
    """A Lab whose workers reach the test cluster; CPU only, so gpus_per_node sets processes."""
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    monkeypatch.setenv("RLHF_SLURM_REQUEST_GPUS", "false")
    # The rendezvous port is this base + job id % 1000: a free one, not 29500 + n, which other tests' torchrun may hold.
    monkeypatch.setenv("RLHF_SLURM_RDZV_PORT", str(min(free_port(), 60000)))
    # The job script runs this before srun: the worker's RLHF_* settings must not reach the job.
    monkeypatch.setenv("RLHF_SLURM_SETUP", 'echo "RLHF settings in the job: $(env | grep -c ^RLHF_ || true)"')
    return lab


def queue(lab: Lab, name: str, config: dict, *, gpus_per_node: int) -> int:
    with unit_of_work(lab.factory) as db:
        return service.create_run(db, kind="sft", name=name, config=config, nodes=1, gpus_per_node=gpus_per_node).id


def job_ids(lab: Lab, run_id: int) -> list[str]:
    """The Slurm jobs the worker submitted for a run, in order, as its trainer.log says."""
    try:
        return re.findall(r"submitted Slurm job (\d+)", (lab.folder(run_id) / "trainer.log").read_text(errors="replace"))
    except OSError:
        return []


def trainer_processes(config: Path) -> list[int]:
    """Live processes whose command line names the run's config file (its trainers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if str(config).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@needs_slurm
def test_a_two_process_sft_run_goes_through_slurm_and_succeeds(slurm_lab, slurm, tiny_model, sft_data):
    lab = slurm_lab
    run_id = queue(lab, "slurm 1x2", sft_config(tiny_model, sft_data, epochs=1), gpus_per_node=2)
    worker = lab.start_worker("--once", "--launcher", "slurm")
    lab.wait_workers(worker, timeout=150)
    assert worker.returncode == 0, lab.worker_output()

    run = lab.run(run_id)
    assert run.status == RunStatus.succeeded, run.message + "\n" + lab.worker_output() + slurm.logs()
    assert run.attempts == 1 and run.progress == 1.0 and "registered model" in run.message
    [job] = job_ids(lab, run_id)
    assert slurm.job_state(job) == "COMPLETED"
    assert (lab.folder(run_id) / "slurm_job").read_text().strip() == job
    script = (lab.folder(run_id) / "slurm_job.sh").read_text()
    for part in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --no-requeue", "exec srun",
                 "-m torch.distributed.run --nnodes=1 --nproc-per-node=2 --rdzv-backend=c10d",
                 '--rdzv-endpoint="$head_node:$port"', f"-m trainers sft --config {lab.folder(run_id) / 'run_config.json'}"):
        assert part in script, part
    assert "--gpus-per-node" not in script  # RLHF_SLURM_REQUEST_GPUS=false: a CPU cluster
    log = (lab.folder(run_id) / "trainer.log").read_text()
    assert "RLHF settings in the job: 0" in log  # the database URL never reached the job
    assert f"Slurm job {job} on {slurm.node}" in log and "rendezvous at" in log
    assert f"--- Slurm job {job} ended COMPLETED: trainer exited with code 0 ---" in log
    steps = sorted(step for name, step in logged_steps(lab.metrics_file(run_id)) if name == "train/loss")
    assert steps and steps == list(range(1, len(steps) + 1))
    assert_metrics_match_the_log(lab, run_id)  # streamed from the shared run folder, as for a local run


@needs_slurm
def test_cancel_in_the_app_reaches_scancel(slurm_lab, slurm, tiny_model, sft_data):
    lab = slurm_lab
    run_id = queue(lab, "slurm cancel", sft_config(tiny_model, sft_data, epochs=5), gpus_per_node=1)
    worker = lab.start_worker("--launcher", "slurm")
    wait_for(lambda: lab.last_step(run_id) >= 1, 120, "the Slurm job's trainer to log a step")
    [job] = job_ids(lab, run_id)
    assert slurm.job_state(job) == "RUNNING"
    with unit_of_work(lab.factory) as db:
        service.request_cancel(db, run_id, actor=make_user(db, "admin"))

    wait_for(lambda: lab.run(run_id).status == RunStatus.cancelled, 60, "the run to be cancelled")
    assert slurm.job_state(job) == "CANCELLED"
    assert slurm.run("squeue", "-h", "-j", job, check=False).stdout.strip() == ""  # gone from the queue
    wait_for(lambda: not trainer_processes(lab.folder(run_id) / "run_config.json"), 15, "the trainer to be gone")
    run = lab.run(run_id)
    assert run.attempts == 1 and "cancelled by an admin" in run.message
    assert worker.poll() is None  # the worker goes on to the next run
    assert lab.last_step(run_id) < 5 * 12


@needs_slurm
def test_a_node_failure_requeues_the_run_and_the_new_job_resumes_from_the_checkpoint(slurm_lab, slurm, tiny_model, sft_data):
    lab = slurm_lab
    run_id = queue(lab, "slurm node failure", sft_config(tiny_model, sft_data, epochs=2), gpus_per_node=1)
    worker = lab.start_worker("--once", "--launcher", "slurm")
    wait_for(lambda: lab.last_step(run_id) >= 3, 120, "the first job's trainer to log step 3")
    [first] = job_ids(lab, run_id)
    slurm.scontrol("update", f"NodeName={slurm.node}", "State=DOWN", "Reason=rlhf-lab test: a node fails")
    wait_for(lambda: slurm.job_state(first) == "NODE_FAIL", 30, "Slurm to report NODE_FAIL")
    if slurm.node_state().startswith("DOWN"):  # ReturnToService=2 usually brings it back by itself
        slurm.run("scontrol", "update", f"NodeName={slurm.node}", "State=RESUME", check=False)
    lab.wait_workers(worker, timeout=150)

    run = lab.run(run_id)
    assert run.status == RunStatus.succeeded, run.message + "\n" + lab.worker_output() + slurm.logs()
    assert run.attempts == 2
    first_again, second = job_ids(lab, run_id)
    assert first_again == first and slurm.job_state(second) == "COMPLETED"
    script = (lab.folder(run_id) / "slurm_job.sh").read_text()
    assert "exec srun" in script and "torch.distributed.run" not in script  # one process: no torchrun, as locally
    log = (lab.folder(run_id) / "trainer.log").read_text()
    assert f"--- Slurm job {first} ended NODE_FAIL: a node of the job failed ---" in log and "attempt 2 of 3" in log
    resumed = resumed_after(lab.folder(run_id) / "trainer.log")
    assert resumed is not None and resumed >= 2, log[-3000:]  # step 3 was seen, so step 2's checkpoint was written
    assert_metrics_match_the_log(lab, run_id)


@needs_slurm
def test_a_job_left_behind_by_an_earlier_attempt_is_cancelled_before_a_new_one_and_a_stop_waits_for_scancel(
        slurm, tmp_path, monkeypatch):
    """What a killed worker leaves behind (a job still running in the run folder) is cancelled
    by the run's next attempt before it submits; a worker asked to stop cancels its job and
    waits until Slurm says it ended. Plain sleep jobs: no trainer needed."""
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    folder = tmp_path / "run"
    folder.mkdir()
    script = folder / "sleep.sh"
    script.write_text("#!/bin/bash\nexec srun sleep 300\n")

    def submit() -> str:
        job = slurm.run("sbatch", "--parsable", "--no-requeue", f"--output={folder / 'out.log'}", str(script)).stdout.strip()
        wait_for(lambda: slurm.job_state(job) == "RUNNING", 30, f"job {job} to run")
        return job

    launcher = SlurmLauncher(grace_s=10, leftover_wait_s=20)
    left = submit()
    (folder / "slurm_job").write_text(left + "\n")  # as the attempt of a worker killed with kill -9 left it
    launcher.cancel_leftover(folder)
    assert slurm.job_state(left) == "CANCELLED"
    launcher.cancel_leftover(folder)  # nothing left: returns at once

    running = submit()
    ended = SlurmTrainer(launcher, running).stop_and_wait()
    assert slurm.job_state(running) == "CANCELLED"
    assert ended.code is None and ended.reason.startswith(f"Slurm job {running} ended CANCELLED")


@needs_slurm
def test_how_a_job_ends_is_what_the_worker_acts_on(slurm, tmp_path, monkeypatch):
    """Exit statuses pass through srun and Slurm: 0 records the output, 2 (bad config or data)
    fails the run at once, anything else is retried."""
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    launcher = SlurmLauncher()

    def end_of(command: str) -> tuple[int | None, str]:
        script = tmp_path / "job.sh"
        script.write_text(f"#!/bin/bash\nexec srun bash -c {command!r}\n")
        job = slurm.run("sbatch", "--parsable", "--no-requeue", f"--output={tmp_path / 'out.log'}", str(script)).stdout.strip()
        trainer = SlurmTrainer(launcher, job)
        ended = wait_for(trainer.poll, 30, f"job {job} to end", interval=0.3)
        return ended.code, ended.reason.replace(f"job {job} ", "job N ")

    assert end_of("true") == (0, "Slurm job N ended COMPLETED: trainer exited with code 0")
    assert end_of("exit 2") == (2, "Slurm job N ended FAILED: trainer exited with code 2")
    assert end_of("kill -9 $$") == (None, "Slurm job N ended FAILED: trainer killed by signal SIGKILL")  # retried


def test_a_multi_node_job_script_runs_torchrun_on_every_node_with_the_cluster_settings(tmp_path):
    folder = tmp_path / "runs" / "7"
    job = Job(run_id=7, kind="ppo", name="wide\nrun", nodes=4, gpus_per_node=8, config=folder / "run_config.json",
              folder=folder, attempt="attempt 2 of 3")
    launcher = SlurmLauncher(partition="gpu", account="alignment", time_limit="1-00:00:00", cpus_per_task=32,
                             sbatch_args="--qos=high --constraint=a100", setup="module load cuda", python="/shared/venv/bin/python",
                             rdzv_port=31000)
    script = launcher.script(job)
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=32",
                 "#SBATCH --partition=gpu", "#SBATCH --account=alignment", "#SBATCH --time=1-00:00:00",
                 "#SBATCH --no-requeue", f"#SBATCH --output={folder / 'trainer.log'}", "#SBATCH --open-mode=append",
                 "port=$(( 31000 + SLURM_JOB_ID % 1000 ))", "module load cuda",
                 "exec srun --kill-on-bad-exit=1 --nodes=4 --ntasks-per-node=1 \\\n    /shared/venv/bin/python -m torch.distributed.run "
                 "--nnodes=4 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=\"$head_node:$port\" "
                 f"--rdzv-id=\"$SLURM_JOB_ID\" -m trainers ppo --config {folder / 'run_config.json'}"):
        assert line in script, line
    assert "'wide run'" in script and script.index("module load cuda") < script.index("set -euo pipefail")
    assert launcher.sbatch_args == ["--qos=high", "--constraint=a100"]  # on sbatch's command line
    cpu = SlurmLauncher(request_gpus=False).script(job)
    assert "--gpus-per-node" not in cpu and "--nproc-per-node=8" in cpu


def test_a_slurm_worker_without_sbatch_stops_at_start_with_a_clear_error(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bare), "RLHF_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    out = subprocess.run([str(RLHF), "worker", "--launcher", "slurm", "--once"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "--launcher slurm needs Slurm's client commands" in out.stderr and "sbatch" in out.stderr, out.stderr
    assert "docs/cluster.md" in out.stderr
