"""Interrupted runs and determinism (M6): `xentc run` SIGKILLed at random points and resumed with
`--resume` writes the results an uninterrupted run writes, row for row; the run journal
(harness.journal) keeps whole calls only and refuses to resume another plan or other framework
versions; two runs with the same seed give the same rows.

Uses the test-only frameworks of tests/faulty_adapter.py ("faulty": numpy, with a slow input
value that spreads a run over time) beside torch."""
from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

import adapters
import faulty_adapter as fa
from harness import cli, journal as jmod, results, runner
from harness.casefile import load_cases, parse_cases
from harness.journal import Journal, ResumeError, fingerprint

KILL_SEED = 20240611
RUN_ARGS = ["--frameworks", "torch,faulty", "--dtypes", "float32,float64", "-q"]
#: run.json keys that differ between two runs of the same plan
VOLATILE_META = {"date", "elapsed_s", "peak_rss_mib", "worker_s"}  # memory and timings: of that invocation
#: what `xentc run` writes once the last call is in, in order (harness.results, harness.report),
#: all of it before it removes the journal
WRITES = ("results.parquet.tmp", "results.parquet", "results.csv", "run.json", "repro")


def resume_case_doc(n: int = 150, seed: int = 7) -> dict:
    """n sigmoid cases of 1-4 logits (some infinite, so some rows fail); every third one carries
    the slow value, so the faulty worker takes ~SLOW_S there and the run lasts a few seconds."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        k = rng.randint(1, 4)
        x = [rng.choice([round(rng.uniform(-8, 8), 3), -0.0, 0.5, "inf", "-inf", 1e4]) for _ in range(k)]
        if i % 3 == 0:
            x[0] = fa.SLOW
        z = [rng.choice([0.0, 1.0, 0.5, 0.25]) for _ in range(k)]
        c = {"id": f"resume/{i:03d}", "family": "sigmoid", "inputs": [x], "targets": [z]}
        if rng.random() < 0.3:
            c["params"] = {"reduction": rng.choice(["none", "sum", "mean"])}
        cases.append(c)
    return {"cases": cases}


class JournalTail:
    """Counts the whole `task` lines of a growing journal, reading only what was appended."""

    def __init__(self, path) -> None:
        self.path, self.offset, self.tasks, self._part = path, 0, 0, b""

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.tasks
        self.offset += len(data)
        data = self._part + data
        *lines, self._part = data.split(b"\n")
        self.tasks += sum(1 for ln in lines if ln.startswith(b'{"task"'))
        return self.tasks


def journal_tasks(path) -> int:
    """Calls in a journal (whole lines only, as Journal reads it)."""
    if not os.path.exists(path):
        return 0
    data = open(path, "rb").read()
    return sum(1 for ln in data[: data.rfind(b"\n") + 1].split(b"\n") if ln.startswith(b'{"task"'))


def csv_without(path, column: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(open(path, newline="").read())))
    i = rows[0].index(column)
    return [r[:i] + r[i + 1:] for r in rows]


def report_body(path) -> list[str]:
    """report.md without its header lines that carry the date and the wall time."""
    return [ln for ln in open(path).read().splitlines() if not ln.startswith(("- date:", "- platform:"))]


def assert_same_run(out, base) -> None:
    """The outputs of two runs of one plan are the same, except timings and dates."""
    got, want = pd.read_parquet(out / "results.parquet"), pd.read_parquet(base / "results.parquet")
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), want.drop(columns="seconds"), check_exact=True)
    assert csv_without(out / "results.csv", "seconds") == csv_without(base / "results.csv", "seconds")
    assert report_body(out / "report.md") == report_body(base / "report.md")
    repro = {p: (out / "repro" / p).read_bytes() for p in sorted(os.listdir(out / "repro"))}
    assert repro == {p: (base / "repro" / p).read_bytes() for p in sorted(os.listdir(base / "repro"))}
    m1, m2 = (json.loads((d / "run.json").read_text()) for d in (out, base))
    for m in (m1, m2):
        for k in VOLATILE_META:
            m.pop(k)
    assert m1 == m2


# --- SIGKILL at random points, then --resume ---------------------------------------------------------
@pytest.mark.xdist_group("faults")
def test_resume_after_sigkill_at_random_points(tmp_path, monkeypatch):
    fa.register(monkeypatch)
    cases_path = tmp_path / "cases.json"
    cases_path.write_text(json.dumps(resume_case_doc()))
    args = ["run", *RUN_ARGS, "--cases", str(cases_path)]
    tasks, _ = runner.plan(load_cases(cases_path), adapters.all_apis(["torch", "faulty"]), ["float32", "float64"])
    n_calls = len(tasks)

    base = tmp_path / "baseline"
    t0 = time.monotonic()
    r = fa.xentc(*args, "--out", base)
    base_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert not (base / jmod.NAME).exists()

    out = tmp_path / "interrupted"
    jpath = out / jmod.NAME
    rng = random.Random(KILL_SEED)
    # where each kill lands: before the journal exists; while the workers start (before they
    # can arm PR_SET_PDEATHSIG); at random points of the calls; after the last call, while the
    # outputs are written
    schedule = ["early", "workers", "calls", "calls", "calls", "final"]
    log: list[dict] = []
    for i, where in enumerate(schedule):
        cmd = [*fa.XENTC, *args, "--out", str(out)] + (["--resume"] if i else [])
        errf = open(tmp_path / f"stderr-{i}.txt", "w")
        before = journal_tasks(jpath)
        p = subprocess.Popen(cmd, env=fa.env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=errf)
        tail = JournalTail(jpath)
        target = None
        try:
            if where == "early":
                time.sleep(rng.uniform(0.0, 0.15))
            elif where == "workers":
                while p.poll() is None and not any("spawn_main" in c for _, _, c in fa.session_processes(p.pid)):
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.2))
            else:
                target = (rng.randint(before + 1, n_calls - 1) if where == "calls" and before + 1 < n_calls - 1
                          else n_calls)
                while p.poll() is None and tail() < target:
                    time.sleep(0.005)
                if where == "final":  # every call is in: kill amid the writing of the outputs
                    later = WRITES[rng.randrange(len(WRITES)):]
                    while p.poll() is None and not any((out / f).exists() for f in later):
                        time.sleep(0.002)
            state = {"journal": jpath.exists(), "writes": [f for f in WRITES if (out / f).exists()]}
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            rc = p.wait(60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            errf.close()
        linger, left = fa.wait_session_empty(p.pid, 20.0)
        log.append({"where": where, "rc": rc, "target": target, "journaled_before": before,
                    "journaled_after": journal_tasks(jpath), "linger_s": round(linger, 2), **state})
        assert not left, f"processes of the killed run still alive {linger:.1f} s after SIGKILL: {left}"
    kills = [e for e in log if e["rc"] == -signal.SIGKILL]
    print(f"\nresume test: {n_calls} calls per run, baseline {base_s:.1f} s; {len(kills)} SIGKILLs, "
          f"{len(schedule)} resumes ({len(schedule) - 1} of them killed too, the last one ran to completion)")
    for e in log:
        print("  ", e)
    assert len(kills) == len(schedule), log  # every run was killed before it could finish
    assert not log[0]["journal"], "the first kill was meant to land before the journal exists"
    assert any(0 < e["journaled_after"] < n_calls for e in log), "no kill landed in the middle of the calls"
    assert log[-1]["journaled_after"] == n_calls  # the last kill came after every call was journaled,
    assert log[-1]["writes"] and not any(e["writes"] for e in log[:-1])  # while the outputs were being written

    r = fa.xentc(*args, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    assert not jpath.exists(), "the journal must be removed once the outputs are written"
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert_same_run(out, base)


@pytest.mark.xdist_group("faults")
def test_worker_dies_with_runner_killed_while_it_starts(tmp_path):
    """A worker arms PR_SET_PDEATHSIG when it starts; a runner SIGKILLed before that (the first
    ~0.1 s of the worker's life) must not leave it running: here torch's worker would otherwise
    import torch for a second or more and live until it finds the pipe broken."""
    cases_path = tmp_path / "cases.json"
    cases_path.write_text(json.dumps(resume_case_doc(12)))
    lingered = []
    for trial in range(3):
        p = subprocess.Popen([*fa.XENTC, "run", "--frameworks", "torch", "--dtypes", "float32", "--cases",
                              str(cases_path), "--out", str(tmp_path / f"o{trial}"), "-q"],
                             env=fa.env(), start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while p.poll() is None and time.monotonic() < deadline and not any(
                    "spawn_main" in c for _, _, c in fa.session_processes(p.pid)):
                time.sleep(0.001)
            assert p.poll() is None, "the run ended before its worker started"
            p.send_signal(signal.SIGKILL)
            p.wait(60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        linger, left = fa.wait_session_empty(p.pid, 20.0)
        lingered.append(round(linger, 2))
        assert not left
    print(f"\nworkers alive after the runner's SIGKILL (s): {lingered}")
    assert max(lingered) < 1.0, f"a worker outlived its killed runner by {max(lingered)} s"


# --- the journal --------------------------------------------------------------------------------------
def _faulty_cases(n: int = 6):
    return parse_cases({"cases": [{"id": f"j/{i}", "family": "sigmoid", "inputs": [[0.5 * i - 1.0, 2.0]],
                                   "targets": [[1.0, 0.25]]} for i in range(n)]})


def _rows(task_idx: int, tag: str = "") -> list[dict]:
    return [{"case_id": f"j/{task_idx}", "status": "match", "max_ulp": 0.5, "expected": float("inf"),
             "actual": float("nan"), "n_elements": 2, "detail": tag, "_idx": task_idx * 4}]


def test_journal_round_trip_keeps_floats_and_versions(tmp_path):
    j = Journal(str(tmp_path), "fp", resume=False)
    j.check_version("faulty", "1.0")
    rows = _rows(0) + [{"x": 0.1 + 0.2, "y": -0.0, "z": 5e-324, "w": -float("inf")}]
    j.record(0, rows)
    j.close()
    again = Journal(str(tmp_path), "fp", resume=True)
    again.close()
    assert again.versions == {"faulty": "1.0"} and list(again.done) == [0]
    back = again.done[0]
    assert back[1]["x"] == 0.1 + 0.2 and np.signbit(back[1]["y"]) and back[1]["z"] == 5e-324
    assert back[1]["w"] == -float("inf") and back[0]["expected"] == float("inf") and np.isnan(back[0]["actual"])


def test_journal_drops_a_line_cut_by_a_kill(tmp_path):
    j = Journal(str(tmp_path), "fp", resume=False)
    j.check_version("faulty", "1.0")
    j.record(0, _rows(0))
    j.record(1, _rows(1))
    j.record(2, _rows(2))
    j.close()
    path = tmp_path / jmod.NAME
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = data[: last + (len(data) - last) // 2]  # the kill came in the middle of the last line
    path.write_bytes(cut)
    again = Journal(str(tmp_path), "fp", resume=True)
    assert sorted(again.done) == [0, 1] and again.versions == {"faulty": "1.0"}
    assert path.read_bytes() == data[:last]  # the cut line is gone, the whole ones are kept
    again.record(2, _rows(2, "re-run"))
    again.close()
    third = Journal(str(tmp_path), "fp", resume=True)
    third.close()
    assert sorted(third.done) == [0, 1, 2] and third.done[2][0]["detail"] == "re-run"


def test_journal_cut_in_its_first_line_starts_afresh(tmp_path):
    path = tmp_path / jmod.NAME
    path.write_bytes(b'{"journal":1,"finger')
    j = Journal(str(tmp_path), "fp", resume=True)
    j.close()
    assert j.done == {} and json.loads(path.read_text()) == {"journal": jmod.VERSION, "fingerprint": "fp"}


@pytest.mark.parametrize("damage,needle", [
    (lambda d: d.replace(b'"fp"', b'"other"', 1), "other cases"),
    (lambda d: b'{"something": "else"}\n' + d, "not a journal"),
    (lambda d: d.replace(b'{"task":1', b'{"task":1,,', 1), "line 4 is damaged"),
])
def test_journal_refuses_to_resume_what_it_cannot(tmp_path, damage, needle):
    j = Journal(str(tmp_path), "fp", resume=False)
    j.check_version("faulty", "1.0")
    j.record(0, _rows(0))
    j.record(1, _rows(1))
    j.record(2, _rows(2))
    j.close()
    path = tmp_path / jmod.NAME
    path.write_bytes(damage(path.read_bytes()))
    before = path.read_bytes()
    with pytest.raises(ResumeError) as ei:
        Journal(str(tmp_path), "fp", resume=True)
    assert needle in str(ei.value) and "\n" not in str(ei.value)
    assert path.read_bytes() == before  # refusing leaves it for the right command


def test_journal_refuses_rows_of_another_framework_version(tmp_path):
    j = Journal(str(tmp_path), "fp", resume=False)
    j.check_version("faulty", "1.0")
    j.record(0, _rows(0))
    j.close()
    path = tmp_path / jmod.NAME
    before = path.read_bytes()
    again = Journal(str(tmp_path), "fp", resume=True)
    again.check_version("faulty", "1.0")  # the same version: fine, and not written twice
    again.check_version("torch", "2.13.0")  # a framework new to the journal: recorded
    with pytest.raises(ResumeError) as ei:
        again.check_version("faulty", "1.1")
    again.close()
    msg = str(ei.value)
    assert "1.0" in msg and "1.1" in msg and "faulty" in msg and "\n" not in msg
    assert path.read_bytes().startswith(before) and path.read_bytes().count(b'"versions"') == 2


def test_fingerprint_sees_every_bit_of_the_plan(monkeypatch):
    fa.register(monkeypatch)
    cases = _faulty_cases()
    apis = adapters.all_apis(["faulty"])
    fp = fingerprint(cases, apis, ["float32", "float64"])
    assert fp == fingerprint(_faulty_cases(), adapters.all_apis(["faulty"]), ["float32", "float64"])
    neg0 = parse_cases({"cases": [{"id": "j/0", "family": "sigmoid", "inputs": [["-0.0", 2.0]],
                                   "targets": [[1.0, 0.25]]}]})
    pos0 = parse_cases({"cases": [{"id": "j/0", "family": "sigmoid", "inputs": [[0.0, 2.0]],
                                   "targets": [[1.0, 0.25]]}]})
    others = [fingerprint(cases[:-1], apis, ["float32", "float64"]),
              fingerprint(cases, apis, ["float32"]),
              fingerprint(cases, apis + adapters.all_apis(["missing"]), ["float32", "float64"]),
              fingerprint(neg0, apis, ["float32"])]
    assert len({fp, *others}) == 5
    assert fingerprint(neg0, apis, ["float32"]) != fingerprint(pos0, apis, ["float32"])


@pytest.mark.xdist_group("faults")
def test_resume_reruns_exactly_the_call_whose_line_was_cut(tmp_path, monkeypatch):
    """runner.run with a journal, its last line then cut: the resumed run takes every other call
    from the journal (a marked row stays marked) and runs that one call again."""
    fa.register(monkeypatch)
    cases = _faulty_cases()
    full, _ = runner.run(cases, ["faulty"], ["float32", "float64"], journal_dir=str(tmp_path))
    path = tmp_path / jmod.NAME
    lines = path.read_bytes().split(b"\n")[:-1]
    tasks = [json.loads(ln) for ln in lines if ln.startswith(b'{"task"')]
    assert sorted(t["task"] for t in tasks) == list(range(len(cases) * 2))
    # mark a journaled call, so its row shows whether it was taken from the journal; cut the last
    first = next(i for i, ln in enumerate(lines) if ln.startswith(b'{"task"'))
    marked = json.loads(lines[first])
    marked["rows"][0]["detail"] = "taken from the journal"
    lines[first] = json.dumps(marked, separators=(",", ":")).encode()
    last = json.loads(lines[-1])["task"]
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1][: len(lines[-1]) // 2])
    again, _ = runner.run(cases, ["faulty"], ["float32", "float64"], journal_dir=str(tmp_path), resume=True)
    after = [json.loads(ln) for ln in path.read_bytes().split(b"\n")[:-1] if ln.startswith(b'{"task"')]
    assert sorted(t["task"] for t in after) == sorted(t["task"] for t in tasks)  # each call once
    assert after[-1]["task"] == last  # the cut call ran again, and only it
    mask = again.detail == "taken from the journal"
    assert mask.sum() == 1 and again[mask].case_id.iloc[0] == marked["rows"][0]["case_id"]
    pd.testing.assert_frame_equal(again[~mask].drop(columns="seconds"), full[~mask].drop(columns="seconds"),
                                  check_exact=True)


def _journal_for(out, cases_path, frameworks, dtypes, versions=None, rows=None):
    """A journal as an interrupted `xentc run --cases cases_path` would have left in `out`."""
    cases = load_cases(cases_path)
    j = Journal(str(out), fingerprint(cases, adapters.all_apis(frameworks), dtypes), resume=False)
    for fw, v in (versions or {}).items():
        j.check_version(fw, v)
    for idx, r in (rows or {}).items():
        j.record(idx, r)
    j.close()
    return out / jmod.NAME


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xentc: error: "), err
    return lines[0]


def test_cli_resume_with_other_cases_is_one_line_and_keeps_the_journal(tmp_path, monkeypatch, capsys):
    fa.register(monkeypatch)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    doc = resume_case_doc(8)
    a.write_text(json.dumps(doc))
    doc["cases"][3]["inputs"][0][0] = 0.125
    b.write_text(json.dumps(doc))
    out = tmp_path / "run"
    out.mkdir()
    path = _journal_for(out, a, ["faulty"], ["float32", "float64"], {"faulty": np.__version__})
    before = path.read_bytes()
    rc = cli.main(["run", "--frameworks", "faulty", "--dtypes", "float32,float64", "--cases", str(b),
                   "--out", str(out), "--resume", "-q"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "cannot resume" in line and "other cases" in line
    assert path.read_bytes() == before
    assert sorted(os.listdir(out)) in ([jmod.NAME], sorted([jmod.NAME, "logs"]))  # nothing else written
    # another dtype selection is another plan too
    rc = cli.main(["run", "--frameworks", "faulty", "--dtypes", "float32", "--cases", str(a),
                   "--out", str(out), "--resume", "-q"])
    assert rc == 2 and "cannot resume" in _one_error_line(capsys.readouterr().err)
    assert path.read_bytes() == before


@pytest.mark.xdist_group("faults")
def test_cli_resume_uses_the_journal_and_refuses_another_version(tmp_path, monkeypatch, capsys):
    fa.register(monkeypatch)
    a = tmp_path / "a.json"
    a.write_text(json.dumps(resume_case_doc(8)))
    cases = load_cases(a)
    tasks, _ = runner.plan(cases, adapters.all_apis(["faulty"]), ["float32", "float64"])
    t0 = tasks[0]
    fake = runner._row(t0.case, t0.api, t0.dtype, quantity="loss", status="match", detail="from the journal",
                       framework_version=np.__version__, _idx=runner._order(t0.idx, "loss"))
    # another version of the framework: refused once its worker reports its own
    out = tmp_path / "old"
    out.mkdir()
    path = _journal_for(out, a, ["faulty"], ["float32", "float64"], {"faulty": "0.0.1"}, {t0.idx: [fake]})
    before = path.read_bytes()
    rc = cli.main(["run", "--frameworks", "faulty", "--dtypes", "float32,float64", "--cases", str(a),
                   "--out", str(out), "--resume", "-q"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "cannot resume" in line and "0.0.1" in line and np.__version__ in line
    assert path.read_bytes() == before and not (out / "results.parquet").exists()
    # the same version: the journaled call is not run again, the others are
    out = tmp_path / "same"
    out.mkdir()
    _journal_for(out, a, ["faulty"], ["float32", "float64"], {"faulty": np.__version__}, {t0.idx: [fake]})
    rc = cli.main(["run", "--frameworks", "faulty", "--dtypes", "float32,float64", "--cases", str(a),
                   "--out", str(out), "--resume", "-q"])
    capsys.readouterr()
    assert rc == 0 and not (out / jmod.NAME).exists()
    df = pd.read_parquet(out / "results.parquet")
    assert (df.detail == "from the journal").sum() == 1
    row = df[(df.case_id == t0.case.id) & (df.dtype == t0.dtype) & (df.quantity == "loss")].iloc[0]
    assert row.detail == "from the journal"
    assert len(df) == len(cases) * 2 * 3  # loss + two gradient rows per case and dtype; none lost
    assert (df[df.quantity == "loss"].status != "unsupported").sum() == len(tasks)
    assert df[df.quantity == "loss"].status.isin(["match", "nonfinite_mismatch", "discrepancy", "unsupported"]).all()


# --- determinism ---------------------------------------------------------------------------------------
def _corpus_subset(seed: int):
    from cases.generator import CATEGORIES, build_corpus

    return [c for c in build_corpus(seed, exhaustive=False, found=False)
            if c.category in CATEGORIES and c.inputs.size <= 64]


@pytest.mark.xdist_group("faults")
def test_same_seed_same_rows(tmp_path):
    """Two runs of the same seed and selection on real frameworks (torch; jax on fewer cases, as it
    compiles each new shape): identical rows, except `seconds`;
    identical results.csv bytes once `seconds` is dropped. Each run builds the corpus anew."""
    from harness.casefile import dump_cases

    runs = []
    for i in range(2):
        cases = _corpus_subset(0)
        t0 = time.monotonic()
        a, va = runner.run(cases, ["torch"], ["float32", "float64"])
        b, vb = runner.run(cases[::15], ["jax"], ["float32"])  # jax compiles per shape: fewer cases
        runs.append((dump_cases(cases), pd.concat([a, b], ignore_index=True), {**va, **vb},
                     time.monotonic() - t0))
    (c1, d1, v1, s1), (c2, d2, v2, s2) = runs
    print(f"\ndeterminism: {len(d1)} rows per run ({(d1.status != 'unsupported').sum()} computed), "
          f"{s1:.1f} s and {s2:.1f} s")
    assert c1 == c2 and v1 == v2 and set(v1) == {"torch", "jax"}
    assert (d1.status != "unsupported").sum() > 1000 and d1.framework.nunique() == 2
    assert d1.status.isin(["match"]).any() and d1.status.isin(["discrepancy", "nonfinite_mismatch"]).any()
    assert not (d1.status == "crashed").any()
    pd.testing.assert_frame_equal(d1.drop(columns="seconds"), d2.drop(columns="seconds"), check_exact=True)
    for i, d in enumerate((d1, d2)):
        os.makedirs(tmp_path / f"r{i}")
        results.save(d.drop(columns="seconds"), str(tmp_path / f"r{i}"))
    assert (tmp_path / "r0" / "results.csv").read_bytes() == (tmp_path / "r1" / "results.csv").read_bytes()
