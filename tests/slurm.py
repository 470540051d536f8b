"""A REAL one-node Slurm cluster for the tests (scripts/slurm_cluster.sh): started when a test
asks for it, stopped after the session. Import the fixture into a test module:

    from slurm import slurm_cluster  # noqa: F401

Where it cannot start (not root; Slurm missing and no apt-get), the tests using it skip and say
why; where it can, a failure to start fails them (it must never skip silently on a machine that
can run it, such as CI here). A cluster that was already running before the session (started by
hand) is used and left running."""
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e import ROOT

SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
CLIENTS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch", "sacct")


@dataclass
class Cluster:
    conf: str           # SLURM_CONF of the cluster (also set in os.environ for the session)
    partition: str
    cpus: int
    memory_mb: int      # the node's RealMemory

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env={**os.environ, "SLURM_CONF": self.conf}, capture_output=True,
                              text=True, timeout=120, check=check)

    since: str = "now-1days"

    def sacct(self, *job_ids: str) -> str:
        """sacct's lines of these jobs, or of every job since the session started."""
        fmt = "JobID,JobName%12,Partition,State,ExitCode,Elapsed,AllocCPUS,ReqMem,MaxRSS,NodeList"
        ids = ["-j", ",".join(job_ids)] if job_ids else ["-S", self.since]
        return self.run("sacct", "-o", fmt, *ids).stdout

    def state(self, job_id: str) -> str:
        """The job's state in the accounting (sacct), e.g. RUNNING, COMPLETED, CANCELLED."""
        out = self.run("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id, check=False).stdout
        for line in out.splitlines():
            jid, _, state = line.partition("|")
            if jid == job_id:
                return state.split()[0] if state else ""
        return ""


def _why_not() -> str | None:
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "a Slurm cluster needs Linux"
    if os.geteuid() != 0:
        return "starting a local Slurm cluster needs root (slurmd runs jobs as their user); run as root"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if not all(shutil.which(c, path=path) for c in CLIENTS) and not shutil.which("apt-get"):
        return "Slurm (slurm-wlm, munge, slurmdbd, mariadb-server) is not installed and there is no apt-get to install it"
    return None


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster():
    why = _why_not()
    if why:
        pytest.skip(why)
    was_running = _script("status", timeout=120).returncode == 0
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    p = _script("start")
    if p.returncode != 0:
        pytest.fail(f"scripts/slurm_cluster.sh start failed ({p.returncode}):\n{p.stderr[-4000:]}")
    m = re.search(r"export SLURM_CONF=(\S+)", p.stdout)
    assert m, p.stdout + p.stderr
    conf = m.group(1)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf        # for sbatch/squeue/sacct run by glan-local (submitit) and the tests
    text = Path(conf).read_text()
    node = re.search(r"^NodeName=\S+ .*?CPUs=(\d+).*?RealMemory=(\d+)", text, re.M)
    part = re.search(r"^PartitionName=(\S+)", text, re.M)
    cluster = Cluster(conf, part.group(1), int(node.group(1)), int(node.group(2)), since)
    try:
        yield cluster
    finally:
        try:
            print("\n[slurm] jobs of this session (sacct):\n" + cluster.sacct(), flush=True)
        except Exception as e:  # noqa: BLE001 - the closing note must not hide the test's outcome
            print(f"[slurm] sacct failed: {e}")
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not was_running:
            p = _script("stop", timeout=300)
            if p.returncode != 0:
                print(f"[slurm] scripts/slurm_cluster.sh stop failed:\n{p.stderr[-2000:]}")
