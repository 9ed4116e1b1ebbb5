"""Helpers shared by the benches: child processes, peak RSS, CPU load, and the JSON report each one writes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def default_dim() -> int:
    """The student's evaluation embedding size under ccr's defaults.

    ``StudentParams`` defaults: ``embed_dim`` 256 with slots on and ``slot_fusion`` 0.2, and
    ``StudentRetriever`` then concatenates the global and the slot-fused parts (``dim = embed_dim * 2``),
    so the default (full) system's gallery embeddings are 512-d.
    """
    from ccr.params import StudentParams

    p = StudentParams()
    return p.embed_dim * (2 if p.use_slots and p.slot_fusion > 0 else 1)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child process whose BLAS / OpenMP pools use ``threads`` threads."""
    t = str(threads)
    return {**os.environ, "OPENBLAS_NUM_THREADS": t, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[dict, float]:
    """Run ``cmd`` (which prints one JSON line last); return (that JSON, the child's own peak RSS in MiB).

    ``os.wait4`` gives the rusage of that one child, so each run's ru_maxrss is its own peak (the
    RUSAGE_CHILDREN figure would be the largest of all children so far).
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen so it does not wait again
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:])}: child exited with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), round(usage.ru_maxrss / 1024, 1)  # KiB on Linux


def child_cmd(script: str, argv: list[str]) -> list[str]:
    return [sys.executable, script, *argv]


def proc_status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: now, VmHWM: peak so far)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process and all its threads)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    busy = sum(vals) - vals[3] - vals[4]  # minus idle and iowait
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return busy, int(fields[11]) + int(fields[12])  # utime + stime


class LoadMeter:
    """CPU share used by *other* processes between start and stop (0 = machine to ourselves, 1 = all cores busy)."""

    def __init__(self) -> None:
        self.load_1min = round(os.getloadavg()[0], 2)
        self.busy, self.own = cpu_jiffies()

    def stop(self, seconds: float) -> tuple[float, float]:
        """(CPU share of other processes over the ``seconds`` since start, CPU seconds this process used)."""
        busy, own = cpu_jiffies()
        hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
        others = max(0.0, (busy - self.busy) - (own - self.own)) / hz / (max(seconds, 1e-9) * ncpu)
        return round(others, 3), round((own - self.own) / hz, 2)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def machine(**extra: Any) -> dict[str, Any]:
    """CPU count, platform, Python and the 1/5/15-minute load at the end (figures on a shared machine vary
    with it), plus the bench's own entries (threads, library versions)."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            **extra, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}


def write_report(out: str | os.PathLike, report: dict[str, Any]) -> Path:
    """``report`` as indented UTF-8 JSON at ``out`` (folders made); prints where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return out
