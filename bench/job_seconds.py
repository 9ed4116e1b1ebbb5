"""Per rule: how many jobs, their wall seconds summed and at most, and their peak memory, from the
benchmark files Snakemake writes for every job (``benchmarks/<dataset folder>/<rule>/*.tsv``).

    .venv/bin/python bench/job_seconds.py benchmarks/m30k-f8k-761fcfe010 [--since "2026-12-02 14:47"]
        [--rules embed_gallery evaluate] [--before OLD_FOLDER] [--out results/bench/job_seconds.json]

``--since``: only the files written at or after that local time (the jobs of one invocation, e.g. a
``--forcerun``); a rerun job overwrites its file, so a folder holds each job's latest run.
``--before``: a copy of the same folder from before (e.g. ``cp -r`` ahead of a rerun); only the jobs
found in both are counted, each side from its own files, so the two columns compare the same jobs.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime
from pathlib import Path


def job_figures(folder: Path, since: float | None = None, rules: list[str] | None = None) -> dict[str, tuple]:
    """"<rule>/<job file>" -> (wall seconds, max RSS MB or None) of each benchmark file under ``folder``."""
    jobs = {}
    for tsv in sorted(folder.glob("*/*.tsv")):
        if (rules and tsv.parent.name not in rules) or (since is not None and tsv.stat().st_mtime < since):
            continue
        with open(tsv, newline="") as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        rss = row.get("max_rss", "NA")
        jobs[f"{tsv.parent.name}/{tsv.name}"] = (float(row["s"]), None if rss in ("NA", "-", "") else float(rss))
    return jobs


def rule_figures(jobs: dict[str, tuple]) -> dict[str, dict]:
    """rule -> {jobs, seconds, max_seconds, max_rss_mb} over ``jobs`` (from :func:`job_figures`)."""
    by_rule: dict[str, list[tuple]] = {}
    for name, figures in jobs.items():
        by_rule.setdefault(name.split("/")[0], []).append(figures)
    out = {}
    for rule, rows in sorted(by_rule.items()):
        seconds, rss = [s for s, _ in rows], [r for _, r in rows if r is not None]
        out[rule] = {"jobs": len(rows), "seconds": round(sum(seconds)), "max_seconds": round(max(seconds)),
                     "max_rss_mb": round(max(rss)) if rss else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a benchmarks/<dataset folder> of Snakemake's benchmark files")
    ap.add_argument("--since", help="local time, e.g. '2026-12-02 14:47': only files written from then on")
    ap.add_argument("--rules", nargs="+", help="only these rules")
    ap.add_argument("--before", type=Path, help="a copy of the folder from before: the same jobs, compared")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    for folder in (args.folder, args.before):
        if folder is not None and not folder.is_dir():
            raise SystemExit(f"{folder}: not a folder of Snakemake benchmark files")
    since = datetime.fromisoformat(args.since).timestamp() if args.since else None
    after = job_figures(args.folder, since, args.rules)
    tables = {"after": after}
    if args.before:
        before = job_figures(args.before, None, args.rules)
        tables = {"before": {k: v for k, v in before.items() if k in after},
                  "after": {k: v for k, v in after.items() if k in before}}
    figures = {side: rule_figures(jobs) for side, jobs in tables.items()}
    for side, rules in figures.items():
        print(f"{side}:\n| rule | jobs | seconds | max seconds | max RSS MB |\n|---|---|---|---|---|")
        for rule, f in rules.items():
            print(f"| {rule} | {f['jobs']} | {f['seconds']:,} | {f['max_seconds']:,} | {f['max_rss_mb'] or '-'} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"folder": str(args.folder), "since": args.since,
                                        "before": str(args.before) if args.before else None, **figures},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
