"""`ccr results` over metrics.parquet files written in tmp_path."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.cli import main


def write(root: Path, rel: str, rows: list[dict]) -> None:
    path = root / rel / "metrics.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for seed, mr in ((0, 40.0), (1, 44.0)):
        write(root, f"runs/m30k/cl2cm/fr/seed{seed}", [{"dataset": "m30k", "system": "cl2cm", "lang": "fr",
                                                       "seed": seed, "t2i_r1": mr - 10, "mr": mr}])
    # a later file with an extra column: views union by name
    write(root, "runs/m30k/zs/de/seed0", [{"dataset": "m30k", "system": "zs", "lang": "de", "seed": 0,
                                           "t2i_r1": 5.0, "mr": 10.0, "i2t_r1": 3.0}])
    (root / "runs" / "m30k" / "zs" / "de" / "seed0" / ".metrics.parquet.tmp-1").write_bytes(b"partial")
    return root


def test_default_table(results, capsys):
    assert main(["results", "--root", str(results)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["dataset", "system", "lang", "n_runs", "n_seeds", "mr_mean", "mr_std"]
    assert out[2].split() == ["m30k", "cl2cm", "fr", "2", "2", "42.00", "2.83"]
    assert out[3].split() == ["m30k", "zs", "de", "1", "1", "10.00"]  # one seed: std blank


def test_sql_and_formats(results, capsys):
    sql = "SELECT system, lang, seed, i2t_r1 FROM metrics ORDER BY system, seed"
    assert main(["results", "--root", str(results), "--sql", sql, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["system", "lang", "seed", "i2t_r1"], ["cl2cm", "fr", "0", ""], ["cl2cm", "fr", "1", ""],
                    ["zs", "de", "0", "3.0"]]
    assert main(["results", "--root", str(results), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["system"] == "cl2cm" and data[0]["mr_mean"] == 42.0 and data[1]["mr_std"] is None


def test_no_metrics_and_bad_sql(tmp_path, results, capsys):
    assert main(["results", "--root", str(tmp_path / "empty")]) == 1
    assert "no metrics.parquet found under" in capsys.readouterr().err
    assert main(["results", "--root", str(results), "--sql", "SELECT nope FROM metrics"]) == 2
    err = capsys.readouterr().err
    assert "SQL error" in err and "columns of view 'metrics'" in err


def test_console_script_entry_point(results):
    proc = subprocess.run([sys.executable, "-m", "ccr.cli", "results", "--root", str(results), "--format", "csv"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[1].startswith("m30k,cl2cm,fr,2,2,42.0,2.83")
