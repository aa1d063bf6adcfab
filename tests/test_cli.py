"""The xentc command line: a real run on a user case file, and bad input to the harness
(one line naming the problem, exit status 2, no half-written output)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from harness.spec import RESULT_COLUMNS

README_CASE = {"cases": [{"id": "my-case", "family": "sigmoid", "inputs": [[-20.0, "inf"]], "targets": [[0.0, 1.0]],
                          "params": {"pos_weight": [1.0, 2.0], "reduction": "none"}, "dtypes": ["float32"]}]}


def xentc(*args, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.mark.xdist_group("torch")
def test_run_user_case_file_end_to_end(tmp_path):
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(README_CASE))
    out = tmp_path / "run"
    r = xentc("run", "--frameworks", "torch", "--cases", str(cases), "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    for f in ("results.parquet", "results.csv", "report.md", "run.json"):
        assert (out / f).exists(), f
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    row = df[df.api == "torch.nn.functional.binary_cross_entropy_with_logits"].iloc[0]
    assert (row["case_id"], row["dtype"], row["framework"], row["quantity"]) == ("my-case", "float32", "torch", "loss")
    # x = +inf, z = 1: the limit is 0, torch forms 0 * inf = nan; a class mismatch outranks the
    # x = -20 element (2.06e-9 computed as 0), see cases/expectations.toml
    assert row["status"] == "nonfinite_mismatch" and row["worst_index"] == "0,1"
    assert row["expected"] == 0.0 and pd.isna(row["actual"])
    assert "torch.nn.functional.binary_cross_entropy_with_logits(" in row["repro"]
    meta = json.loads((out / "run.json").read_text())
    assert {"versions", "platform", "seed", "revision", "date"} <= set(meta)
    assert meta["versions"]["torch"].startswith("2.13.0")
    assert pd.read_csv(out / "results.csv").shape[0] == df.shape[0]


@pytest.mark.parametrize("doc,needle", [
    ("{not json", "invalid JSON"),
    (json.dumps({"cases": [{"id": "c1", "family": "hinge", "inputs": [[0.0]], "targets": [[0.0]]}]}),
     "case 'c1'): field 'family'"),
    (json.dumps({"cases": [{"id": "c2", "family": "sigmoid", "inputs": [[0.0, 1.0], [2.0]], "targets": [[0.0]]}]}),
     "case 'c2'): field 'inputs': ragged"),
    (json.dumps({"cases": [{"id": "c3", "family": "softmax", "inputs": [[0.0, 1.0]], "targets": [[1.0]]}]}),
     "case 'c3'): field 'targets' has shape"),
])
def test_malformed_case_file_is_one_line_exit_2(tmp_path, doc, needle):
    cases = tmp_path / "bad.json"
    cases.write_text(doc)
    out = tmp_path / "never"
    r = xentc("run", "--cases", str(cases), "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xentc: error: ") and needle in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--frameworks", "mxnet"], "unknown framework mxnet"),
    (["--dtypes", "float8"], "unknown dtype float8"),
])
def test_unknown_names_are_one_line_exit_2(tmp_path, args, needle):
    r = xentc("run", *args, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = xentc("run", "--frameworks", "torch", "--out", str(blocker / "run"))
    assert r.returncode == 2 and "cannot create output directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and blocker.read_text() == "not a directory"
