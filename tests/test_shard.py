"""Scale-out (M7): `xentc run --shard I/N` for I = 1..N, then `xentc merge`, writes the results,
report and repros of the unsharded run (the timing column `seconds` aside), whatever order the
shard directories are given in; merge refuses what is not the N shards of one run, in one line."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

import faulty_adapter as fa
from harness import cli, repro
from test_resume import resume_case_doc

ARGS = ["--frameworks", "torch,faulty", "--dtypes", "float32,float64", "-q"]


def _run(*args) -> int:
    return cli.main(list(args))


def _rows(d) -> pd.DataFrame:
    df = pd.read_parquet(os.path.join(d, "results.parquet")).drop(columns="seconds")
    return df.astype(object).where(df.notna(), "NA").astype(str)


def _files(d) -> dict[str, bytes]:
    """Every file under d (relative path: bytes)."""
    return {os.path.relpath(os.path.join(r, n), d): open(os.path.join(r, n), "rb").read()
            for r, _, names in os.walk(d) for n in names}


def _report(d) -> list[str]:  # report.md less its date and wall-time line
    return [ln for ln in open(os.path.join(d, "report.md")).read().splitlines() if not ln.startswith("- date:")
            and "wall time" not in ln]


@pytest.mark.conformance
@pytest.mark.xdist_group("torch")
def test_shards_merge_to_the_unsharded_run(tmp_path, monkeypatch, capsys):
    fa.register(monkeypatch)
    monkeypatch.setattr(repro, "EXTERNAL_MIN", 2)  # repros of 3 values or more load saved arrays (merged too)
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(resume_case_doc(40)))
    whole = tmp_path / "whole"
    assert _run("run", "--cases", str(cases), "--out", str(whole), *ARGS) == 0
    n = 3
    shards = [tmp_path / f"s{i}" for i in range(1, n + 1)]
    for i, d in enumerate(shards, 1):
        assert _run("run", "--cases", str(cases), "--out", str(d), "--shard", f"{i}/{n}", *ARGS) == 0
        assert json.load(open(d / "run.json"))["shard"]["index"] == i
    sizes = [len(pd.read_parquet(d / "results.parquet")) for d in shards]
    assert all(s > 0 for s in sizes) and sum(sizes) == len(pd.read_parquet(whole / "results.parquet"))
    merged = tmp_path / "merged"
    assert _run("merge", *map(str, reversed(shards)), "--out", str(merged)) == 0
    pd.testing.assert_frame_equal(_rows(merged), _rows(whole))
    assert _report(merged) == _report(whole)
    assert _files(merged / "repro") == _files(whole / "repro")
    assert any(n.startswith("arrays/") for n in _files(whole / "repro")) and any(
        not n.startswith("arrays/") for n in _files(whole / "repro"))
    meta = json.load(open(merged / "run.json"))
    assert "shard" not in meta and [s["index"] for s in meta["shards"]] == [1, 2, 3]

    capsys.readouterr()
    # not the shards of one run: one line each, exit 2, nothing written
    bad = tmp_path / "bad"
    for args in ([str(shards[0]), str(shards[1])],  # one missing
                 [str(shards[0]), str(shards[0]), str(shards[1]), str(shards[2])],  # one repeated
                 [str(whole), str(shards[1])]):  # not a shard
        assert _run("merge", *args, "--out", str(bad)) == 2
        err = capsys.readouterr().err
        assert err.startswith("xentc: error:") and err.count("\n") == 1, err
        assert not bad.exists()
    other = tmp_path / "other"  # a shard of another plan (other dtypes)
    assert _run("run", "--cases", str(cases), "--out", str(other), "--shard", "3/3", "--frameworks", "torch,faulty",
                "--dtypes", "float32", "-q") == 0
    assert _run("merge", str(shards[0]), str(shards[1]), str(other), "--out", str(bad)) == 2
    assert "different runs" in capsys.readouterr().err
    meta = json.loads((shards[1] / "run.json").read_text())  # a shard run on another device
    (shards[1] / "run.json").write_text(json.dumps({**meta, "device": "cuda"}))
    assert _run("merge", *map(str, shards), "--out", str(bad)) == 2
    err = capsys.readouterr().err
    assert "different devices (cpu, cuda)" in err and err.count("\n") == 1 and not bad.exists()
    (shards[1] / "run.json").write_text(json.dumps(meta))
    for value in ("0/3", "4/3", "1", "a/b", "1/0"):
        assert _run("run", "--cases", str(cases), "--out", str(bad), "--shard", value, *ARGS) == 2
        assert capsys.readouterr().err.count("\n") == 1
