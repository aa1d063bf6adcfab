"""Crash isolation (M6): a worker that aborts, segfaults, hangs, exits or is killed in the middle of
a call costs that call's rows only (`crashed`, with the signal or the timeout), an exception is a
`raised` row, a framework that is not installed (or crashes or hangs while it starts) gives its
rows `unsupported` / `crashed` while the others run, and no row is lost.

The faults come from the test-only frameworks of tests/faulty_adapter.py and
tests/faulty_adapter_missing.py, chosen by magic logit values."""
from __future__ import annotations

import json
import os
import re
import time

import numpy as np
import pandas as pd
import pytest

import faulty_adapter as fa
import faulty_adapter_missing
from harness import runner
from harness.casefile import parse_cases
from harness.spec import QUANTITIES

CALL_TIMEOUT = 2.0
DTYPES = ["float32", "float64"]
#: magic value -> (status, text its detail must hold)
EXPECT = {
    fa.ABORT: ("crashed", "worker killed by SIGABRT"),
    fa.SEGFAULT: ("crashed", "worker killed by SIGSEGV"),
    fa.HANG: ("crashed", f"timeout after {CALL_TIMEOUT:g} s"),
    fa.RAISE: ("raised", "RuntimeError: injected fault"),
    fa.EXIT: ("crashed", "worker exited with status 3"),
    fa.KILLED: ("crashed", "worker killed by SIGKILL"),
}
#: faults injected by the tests of this module (each survived, or a test fails): printed at the end
INJECTED: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_injected():
    yield
    if INJECTED:  # run with -s to see it
        print(f"\nfaults injected and survived: {sum(INJECTED.values())} {INJECTED}")


def normal(i: int) -> dict:
    """A case the faulty framework computes right (moderate logits, dyadic targets: the float64
    formula is within a few ulps of the exact value)."""
    x = [round(-6.0 + 0.37 * i, 2), 0.5 - 0.125 * (i % 5), 3.0]
    return {"id": f"ok/{i:02d}", "family": "sigmoid", "inputs": [x], "targets": [[1.0, 0.25, 0.0]]}


def fault(name: str, value: float, dtypes=None) -> dict:
    c = {"id": f"fault/{name}", "family": "sigmoid", "inputs": [[0.5, value, -1.0]], "targets": [[1.0, 0.5, 0.0]]}
    if dtypes:
        c["dtypes"] = dtypes
    return c


def fault_doc() -> dict:
    """Faults interleaved with normal cases: one at the very start, two in a row (the restarted
    worker crashes at once), one in the middle of a slow stretch, and one at the very end."""
    cases = [fault("abort-first", fa.ABORT), normal(0), normal(1), fault("segfault", fa.SEGFAULT), normal(2),
             fault("hang", fa.HANG, ["float64"]), normal(3), fault("raise", fa.RAISE), normal(4),
             fault("abort-then", fa.ABORT), fault("segfault-after-abort", fa.SEGFAULT), normal(5),
             fault("exit", fa.EXIT), normal(6), fault("sigkill", fa.KILLED), normal(7)]
    for i in range(8, 14):  # slow normal calls around a fault
        c = normal(i)
        c["inputs"][0][2] = fa.SLOW
        cases.append(c)
        if i == 10:
            cases.append(fault("raise-among-slow", fa.RAISE))
    cases.append(fault("abort-last", fa.ABORT))
    return {"cases": cases}


def magic_of(case_inputs) -> float | None:
    hits = [float(v) for v in np.ravel(case_inputs) if v in EXPECT]
    return hits[0] if hits else None


def expected_rows(cases, frameworks) -> set[tuple]:
    """(framework, case, dtype, quantity) of every row: each case in each of its dtypes, the loss and
    the gradients of a dense-target elementwise loss (grad_logits, grad_targets)."""
    qs = [q for q in QUANTITIES if q in ("loss", "grad_logits", "grad_targets")]
    return {(fw, c.id, d, q) for fw in frameworks for c in cases for d in DTYPES
            if c.dtypes is None or d in c.dtypes for q in qs}


def live_workers() -> list[str]:
    """Command lines of this process's children that are multiprocessing spawn workers."""
    me = str(os.getpid())
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[1] == me and fields[0] not in ("Z", "X") and "spawn_main" in cmd:
            out.append(cmd)
    return out


def check_fault_rows(df: pd.DataFrame, cases, frameworks) -> int:
    """The assertions shared by the in-process and command-line runs; returns the faults seen."""
    got = list(zip(df.framework, df.case_id, df.dtype, df.quantity))
    assert len(got) == len(set(got)), "duplicate rows"
    assert set(got) == expected_rows(cases, frameworks), "rows lost or invented"
    loss = df[(df.framework == "faulty") & (df.quantity == "loss")]
    by_case = {c.id: c for c in cases}
    faults = 0
    for r in loss.itertuples():
        magic = magic_of(by_case[r.case_id].inputs)
        if magic is None:
            assert r.status == "match", (r.case_id, r.dtype, r.status, r.detail)
            assert r.max_ulp <= r.tol_ulp and r.n_elements == 3
        else:
            status, text = EXPECT[magic]
            assert r.status == status and text in r.detail, (r.case_id, r.dtype, r.status, r.detail)
            assert "faulty_adapter.sigmoid_loss(" in r.repro and repr(magic) in r.repro  # reproducible
            assert r.reference and not np.isnan(r.expected)  # the reference value is still there
            faults += 1
    grads = df[(df.framework == "faulty") & (df.quantity != "loss")]
    assert (grads.status == "unsupported").all() and grads.detail.str.contains("no automatic differentiation").all()
    return faults


@pytest.mark.xdist_group("faults")
def test_faults_in_calls_cost_only_their_rows(monkeypatch):
    fa.register(monkeypatch)
    cases = parse_cases(fault_doc())
    t0 = time.monotonic()
    df, versions = runner.run(cases, ["faulty", "missing"], DTYPES, call_timeout=CALL_TIMEOUT)
    elapsed = time.monotonic() - t0
    faults = check_fault_rows(df, cases, ["faulty", "missing"])
    # every fault case in every dtype it runs in: 12 cases, the hang in float64 only
    n_fault_cases = sum(1 for c in cases if magic_of(c.inputs) is not None)
    assert faults == 2 * n_fault_cases - 1
    missing = df[df.framework == "missing"]
    assert (missing.status == "unsupported").all()
    assert missing.detail.str.contains("framework missing unavailable: ModuleNotFoundError").all()
    assert missing.detail.str.contains(faulty_adapter_missing.MISSING_MODULE).all()
    assert versions == {"faulty": np.__version__}
    # the hang was killed at its timeout, not waited out; every worker is gone when run() returns
    assert elapsed < 60, elapsed
    assert live_workers() == []
    INJECTED["in-process run"] = faults


@pytest.mark.xdist_group("faults")
def test_frameworks_that_fail_to_start(monkeypatch):
    """A framework whose setup aborts the worker, one whose setup hangs (start timeout shortened)
    and one not installed, beside one that works: each failing one's rows say why, none is lost."""
    fa.register(monkeypatch)
    monkeypatch.setattr(runner, "START_TIMEOUT_S", 3.0)
    cases = parse_cases({"cases": [normal(i) for i in range(4)]})
    frameworks = ["broken", "faulty", "stuck", "missing"]
    t0 = time.monotonic()
    df, versions = runner.run(cases, frameworks, DTYPES, call_timeout=CALL_TIMEOUT)
    assert time.monotonic() - t0 < 60
    got = list(zip(df.framework, df.case_id, df.dtype, df.quantity))
    assert len(got) == len(set(got)) and set(got) == expected_rows(cases, frameworks)
    loss = df[df.quantity == "loss"].set_index(["framework", "case_id", "dtype"])
    assert (loss.loc["faulty"].status == "match").all()
    assert (loss.loc["broken"].status == "crashed").all()
    assert loss.loc["broken"].detail.str.contains("worker failed to start: worker killed by SIGABRT").all()
    assert (loss.loc["stuck"].status == "crashed").all()
    assert loss.loc["stuck"].detail.str.contains("worker did not start in 3 s").all()
    assert (loss.loc["missing"].status == "unsupported").all()
    assert set(versions) == {"faulty"}
    assert live_workers() == []  # the stuck worker was killed
    INJECTED["setup faults"] = 3


@pytest.mark.xdist_group("faults")
def test_faults_through_the_command_line(tmp_path):
    cases_path = tmp_path / "faults.json"
    cases_path.write_text(json.dumps(fault_doc()))
    out = tmp_path / "run"
    r = fa.xentc("run", "--frameworks", "faulty,missing", "--cases", cases_path, "--dtypes", ",".join(DTYPES),
                 "--out", out, "--call-timeout", CALL_TIMEOUT, "-q", timeout=180)
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out / "results.parquet")
    cases = parse_cases(fault_doc())
    faults = check_fault_rows(df, cases, ["faulty", "missing"])
    assert pd.read_csv(out / "results.csv").shape[0] == len(df)
    assert f"{len(df)} rows" in r.stdout and f"crashed {int((df.status == 'crashed').sum())}" in r.stdout
    assert not (out / "journal.jsonl").exists()
    report = (out / "report.md").read_text()
    matrix = report[report.index("| API |"):]
    assert "`faulty_adapter.sigmoid_loss` | CRASH" in matrix.splitlines()[2]  # the worst status of its cells
    assert "· crashed" in report and "· raised" in report and "- detail: worker killed by SIG" in report
    # each failing group's repro is written, and runs the case that crashed
    named = re.findall(r"- repro: `repro/([^`]+)`", report)
    assert named and set(named) <= set(os.listdir(out / "repro"))
    crashing = [repr(float(m)) for m, (status, _) in EXPECT.items() if status in ("crashed", "raised")]
    texts = [(out / "repro" / n).read_text() for n in named]
    assert all("faulty_adapter.sigmoid_loss(" in t for t in texts)
    assert sum(any(m in t for m in crashing) for t in texts) >= 2  # the crashed and the raised groups
    # the worker's traceback of the raised call went to its log, not to the terminal
    assert "RuntimeError: injected fault" in (out / "logs" / "faulty.log").read_text()
    assert "Traceback" not in r.stderr
    INJECTED["command line"] = faults


def poison_doc() -> dict:
    """Cases that leave the worker unable to compute (a CUDA device-side assert, as torch on a GPU
    meets it), among normal ones: alone, two in a row, and with calls in flight behind each."""
    cases = [normal(0), fault("poison", fa.POISON), normal(1), normal(2), fault("poison-again", fa.POISON),
             fault("poison-in-a-row", fa.POISON)]
    return {"cases": cases + [normal(i) for i in range(3, 12)]}


@pytest.mark.xdist_group("faults")
def test_a_case_that_poisons_its_worker_costs_only_its_rows(monkeypatch):
    """After a poisoning case every later call in its process would fail: that case's row says why
    (`raised`, its own error), the worker is replaced, the calls sent behind it run in the new one,
    and every other row is a match: none carries the poisoned process's error."""
    fa.register(monkeypatch)
    monkeypatch.setitem(EXPECT, fa.POISON, ("raised", "RuntimeError: injected fault: device-side assert"))
    cases = parse_cases(poison_doc())
    stats: dict = {}
    df, _ = runner.run(cases, ["faulty"], DTYPES, call_timeout=CALL_TIMEOUT, stats=stats, cpus=1)
    assert check_fault_rows(df, cases, ["faulty"]) == 3 * len(DTYPES)
    assert stats["worker_s"]["faulty"]["poisoned"] == 3 * len(DTYPES)
    from harness import report

    assert report._poisoned({"worker_s": stats["worker_s"]})[0].endswith(f"faulty {3 * len(DTYPES)}")
    assert live_workers() == []
    INJECTED["poisoned workers"] = 3 * len(DTYPES)


def test_call_each_stops_at_a_poisoning_case(monkeypatch):
    """In one call of several cases (and in a stacked batch), the cases after a poisoning one are
    not run in that process: UNRUN, with why, for the runner to send to a new worker."""
    import adapters

    monkeypatch.setattr(fa, "_poison", None)
    api = fa.APIS[0]
    ok = (np.array([[0.5, 1.0, -1.0]], np.float32), np.array([[1.0, 0.5, 0.0]], np.float32), {"reduction": "none"})
    bad = (np.array([[0.5, fa.POISON, -1.0]], np.float32), ok[1], ok[2])
    res = adapters.call_each(fa.FRAMEWORK, api, [ok, bad, ok, ok])
    assert [k for k, _ in res] == ["ok", "raised", adapters.UNRUN, adapters.UNRUN]
    assert res[2][1] == res[3][1] == "injected fault: device-side assert triggered (logit 8901.5)"
    assert adapters.poisoned(fa.FRAMEWORK, res[:1]) is None  # asked only after a case that raised
    assert adapters.poisoned(fa.FRAMEWORK, res) == res[2][1]
    monkeypatch.setattr(fa, "_poison", None)
    batch = adapters.call_batch(fa.FRAMEWORK, api, [ok, bad, ok])
    assert [k for k, _ in batch] == [adapters.UNRUN] * 3
    monkeypatch.setattr(fa, "_poison", None)
    assert [k for k, _ in adapters.call_each(fa.FRAMEWORK, api, [ok, ok])] == ["ok", "ok"]
