"""A real single-node SLURM cluster for the tests (Debian slurm-wlm + munge), started as root.

No accounting daemon: finished jobs stay visible to squeue for MinJobAge seconds (an hour here, so a
test can list every job it ran), which is what the profile's `slurm-status-command: squeue` needs. Two partitions on the one node, `cpu` (default) and
`gpu` (no GPUs here), so the profile's partition routing has somewhere to route to.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
CONF = Path("/etc/slurm/slurm.conf")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be installed or started here (the reason says why)."""


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def install() -> None:
    """Install slurm-wlm and munge with apt-get when they are missing (root only)."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterUnavailable("slurm-wlm is not installed and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")


def _config(host: str) -> str:
    mem_mb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) // 1024
    cpus = os.cpu_count() or 1
    return f"""# written by tests/support/slurm_cluster.py
ClusterName=ccrtest
SlurmctldHost={host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ReturnToService=2
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP
"""


def _idle() -> bool:
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and any(state.startswith(("idle", "mix", "alloc")) for state in proc.stdout.split())


def start() -> str:
    """Start munge, slurmctld and slurmd (or reuse a running cluster); return the node name."""
    host = socket.gethostname().split(".")[0]
    install()
    if CONF.exists() and CONF.read_text() == _config(host) and _idle():
        return host  # our cluster, already running
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmctld/slurmd needs root")
    for folder in ("/var/spool/slurmctld", "/var/spool/slurmd", "/var/log/slurm"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(_config(host))
    run_munge = Path("/run/munge")
    run_munge.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_munge, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        _run(["mungekey", "--create"])
    if _run(["pgrep", "-x", "munged"]).returncode != 0:
        proc = _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
        if proc.returncode != 0:
            raise ClusterUnavailable(f"munged did not start: {proc.stderr[-500:]}")
    for daemon in ("slurmctld", "slurmd"):
        _run(["pkill", "-x", daemon])
    time.sleep(0.5)
    for cmd in (["slurmctld", "-c"], ["slurmd", "-c"]):  # -c: clean start, no old state
        proc = _run(cmd)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{cmd[0]} did not start: {proc.stderr[-500:]}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _idle():
            return host
        time.sleep(0.5)
    log = Path("/var/log/slurm/slurmctld.log")
    raise ClusterUnavailable(f"the SLURM node never became idle; slurmctld log: "
                             f"{log.read_text()[-1000:] if log.exists() else 'none'}")
