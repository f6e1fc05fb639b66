"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd (Debian's
``slurmctld slurmd slurm-client munge`` packages), started as daemons from a temporary folder
with their own slurm.conf, munge key and free ports, and stopped afterwards.

The cluster has one node (this host, ``hostname -s``) with 2 CPUs, no cgroups
(proctrack/linuxproc, task/none) and no accounting database: what a CI machine can run
without root-owned system configuration. Commands reach it through ``SLURM_CONF``, which
:attr:`SlurmCluster.env` carries.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel", "srun") if find(name) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    node: str
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=30)

    def scontrol(self, *args: str) -> str:
        return self.run("scontrol", *args).stdout

    def node_state(self) -> str:
        out = self.scontrol("show", "node", self.node, "-o")
        return next(w.split("=", 1)[1] for w in out.split() if w.startswith("State="))

    def job_state(self, job_id: str) -> str | None:
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), None)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.root.glob("*.log")))


def _conf(root: Path, node: str, ctld_port: int, slurmd_port: int, socket_path: Path) -> str:
    user = getpass.getuser()
    return f"""\
ClusterName=rlhftest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmdTimeout=30
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _wait(condition, timeout: float, what: str, cluster_root: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    logs = "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(cluster_root.glob("*.log")))
    raise RuntimeError(f"the test Slurm cluster: timed out waiting for {what}\n{logs}")


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def slurm_cluster(root: Path) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd under ``root``; stop them (by their pids) afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(exist_ok=True)
        os.chmod(root / sub, 0o700)
    node = socket.gethostname().split(".")[0]
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o400)
    sock = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, node, free_port(), free_port(), sock))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for name in list(env):  # a job's own variables would mislead the client commands
        if name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_")) and name != "SLURM_CONF":
            env.pop(name)
    cluster = SlurmCluster(root=root, node=node, env=env)
    try:
        subprocess.run([find("munged"), "--force", f"--socket={sock}", f"--key-file={key}",
                        f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                        f"--seed-file={root / 'munge' / 'munged.seed'}"], check=True, env=env, capture_output=True, timeout=30)
        cluster.pids["munged"] = _pid(root / "munge" / "munged.pid")
        subprocess.run([find("slurmctld"), "-c", "-f", str(conf)], check=True, env=env, capture_output=True, timeout=30)
        _wait(lambda: _pid(root / "slurmctld.pid"), 20, "slurmctld to start", root)
        cluster.pids["slurmctld"] = _pid(root / "slurmctld.pid")
        subprocess.run([find("slurmd"), "-f", str(conf), "-N", node], check=True, env=env, capture_output=True, timeout=30)
        _wait(lambda: _pid(root / "slurmd.pid"), 20, "slurmd to start", root)
        cluster.pids["slurmd"] = _pid(root / "slurmd.pid")
        _wait(lambda: cluster.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip() in ("idle", "mix", "alloc"),
              30, "the node to be idle", root)
        yield cluster
    finally:
        _stop([pid for pid in cluster.pids.values() if pid])


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _stop(pids: list[int], grace_s: float = 3.0) -> None:
    """SIGTERM the daemons this fixture started (by pid), SIGKILL what is left after ``grace_s``:
    a temporary cluster has no state worth saving."""
    alive = [pid for pid in pids if _signal(pid, 15)]
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _signal(pid, 0)]
    for pid in alive:
        _signal(pid, 9)
