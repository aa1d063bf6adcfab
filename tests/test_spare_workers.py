"""Spare workers (M7): when a CPU is free, the framework with the most work left gets a second
worker, which takes calls from the other end of the queue (harness.runner.run's spare). Which
worker runs a call must change no value, a fault in a spare costs its call's rows only, and a
spare that cannot start loses nothing.

Uses the test-only framework of tests/faulty_adapter.py (slow calls, faults by magic value)."""
from __future__ import annotations

import pandas as pd
import pytest

import faulty_adapter as fa
from harness import runner
from harness.casefile import parse_cases
from test_faults import DTYPES, check_fault_rows, fault, normal

CALL_TIMEOUT = 5.0


def doc(abort: bool = True) -> dict:
    """Slow normal calls, with faults near both ends of the queue: the spare, which starts
    after the first answer and works from the back, meets the last ones."""
    cases = [fault("raise-first", fa.RAISE)]
    for i in range(24):
        c = normal(i)
        c["inputs"][0][2] = fa.SLOW
        cases.append(c)
    cases += [fault("abort-near-end", fa.ABORT)] if abort else []
    cases += [normal(24), fault("raise-last", fa.RAISE)]
    return {"cases": cases}


def run(cpus: int, abort: bool = True) -> tuple[pd.DataFrame, dict]:
    stats: dict = {}
    df, _ = runner.run(parse_cases(doc(abort)), ["faulty"], DTYPES, call_timeout=CALL_TIMEOUT, cpus=cpus, stats=stats)
    return df, stats["worker_s"]["faulty"]


@pytest.fixture
def spare_soon(monkeypatch):
    """A spare as soon as one call is answered (the calls here take 0.05 s, not minutes); a call
    per case, not per group of cases (runner.MAX_GROUP_CASES), so that the few cases here make a
    queue of calls long enough to estimate (runner.SPLIT_AFTER)."""
    fa.register(monkeypatch)
    monkeypatch.setattr(runner, "MIN_SPLIT_S", 0.1)
    monkeypatch.setattr(runner, "MAX_GROUP_CASES", 1)


def test_a_spare_worker_changes_no_value(spare_soon):
    alone, one = run(cpus=1)
    assert one["workers"] == 1
    spared, two = run(cpus=2)
    assert two["workers"] == 2, two  # the spare started
    cases = parse_cases(doc())
    assert check_fault_rows(spared, cases, ["faulty"]) == check_fault_rows(alone, cases, ["faulty"]) > 0
    pd.testing.assert_frame_equal(spared.drop(columns="seconds"), alone.drop(columns="seconds"))


def test_a_spare_that_cannot_start_loses_nothing(spare_soon, monkeypatch, tmp_path):
    alone, _ = run(cpus=1, abort=False)
    monkeypatch.setenv(fa.ONE_WORKER, str(tmp_path / "started"))  # any worker after the first aborts
    spared, w = run(cpus=3, abort=False)
    assert w["workers"] == 2, w  # one spare tried, and no other after it failed
    assert not (spared.status == "crashed").any()
    pd.testing.assert_frame_equal(spared.drop(columns="seconds"), alone.drop(columns="seconds"))


def test_a_framework_that_restarts_often_gets_workers_that_restart_side_by_side(spare_soon, monkeypatch):
    """Each poisoning case (a CUDA device-side assert, tests/test_faults.py) costs its worker a
    restart. Quick calls alone would not be worth a spare (MIN_SPLIT_S), but the spare's estimate
    counts the start-ups the calls have cost so far: a second worker starts, restarts beside the
    first, and the rows are those of one worker."""
    monkeypatch.setattr(runner, "MIN_SPLIT_S", 2.0)
    monkeypatch.setenv(fa.SETUP_S, "0.3")
    cases = [fault(f"poison-{i:02d}", fa.POISON) if i % 3 == 1 else normal(i) for i in range(30)]
    doc = parse_cases({"cases": cases})

    def go(cpus):
        stats: dict = {}
        df, _ = runner.run(doc, ["faulty"], DTYPES, call_timeout=CALL_TIMEOUT, cpus=cpus, stats=stats)
        return df, stats["worker_s"]["faulty"]

    alone, one = go(cpus=1)
    spared, two = go(cpus=2)
    assert one["workers"] == 1 and two["workers"] == 2, two
    for w in (one, two):  # replaced after each poisoning case, but for a worker's very last call
        assert 10 * len(DTYPES) - w["workers"] <= w["poisoned"] <= 10 * len(DTYPES), w
    pd.testing.assert_frame_equal(spared.drop(columns="seconds"), alone.drop(columns="seconds"))
    poison = alone[alone.case_id.str.startswith("fault/") & (alone.quantity == "loss")]
    assert (poison.status == "raised").all() and poison.detail.str.contains("device-side assert").all()
    ok = alone[alone.case_id.str.startswith("ok/") & (alone.quantity == "loss")]
    assert len(ok) == 20 * len(DTYPES) and (ok.status == "match").all()


def test_a_stretch_of_slow_calls_among_quick_ones_starts_no_spare(spare_soon, monkeypatch):
    """A spare pays for itself only when much work is left. The estimate must not take a stretch
    of slow calls of one kind (TF: the latest 32 calls' median at 14 ms where its 665 calls
    averaged 3 ms, and a spare's start-up then cost the run more than it saved) for the calls
    still queued: quick calls, then a slow stretch long enough to fill most of the window of
    latest calls, then many quick ones. The median of the latest calls alone says 0.05 s x 400
    calls = 20 s left; the mean so far says at most 2 s / 120 calls x 400 = 7 s."""
    monkeypatch.setattr(runner, "MIN_SPLIT_S", 10.0)
    cases = [normal(i) for i in range(40)]
    for i in range(40, 60):
        c = normal(i)
        c["inputs"][0][2] = fa.SLOW
        cases.append(c)
    cases += [normal(i) for i in range(60, 260)]
    stats: dict = {}
    df, _ = runner.run(parse_cases({"cases": cases}), ["faulty"], DTYPES, call_timeout=CALL_TIMEOUT, cpus=2,
                       stats=stats)
    assert stats["worker_s"]["faulty"]["workers"] == 1, stats["worker_s"]["faulty"]
    assert (df[df.quantity == "loss"].status == "match").all()


def test_a_framework_that_compiles_gets_its_spare_at_once(spare_soon, monkeypatch):
    """Each call of a framework that compiles (JAX) is a compilation: CPU-bound, which a free CPU
    halves. Such a framework gets its spare at once, while its first worker starts, without
    waiting for calls to estimate from: here quick calls that the estimate would never think
    worth one (MIN_SPLIT_S 10 s). The same run on a framework that does not compile starts none;
    the rows are those of one worker."""
    import dataclasses

    monkeypatch.setattr(runner, "MIN_SPLIT_S", 10.0)
    cases = parse_cases({"cases": [normal(i) for i in range(160)]})  # in bundles of runner.MAX_BUNDLE_PROGRAMS cases: several calls

    def go(compiles: bool, cpus: int):
        # the runner reads the framework's `compile` (its worker, unpatched, runs each case as before)
        monkeypatch.setattr(fa, "FRAMEWORK", dataclasses.replace(fa.FRAMEWORK, compile=(lambda f: f) if compiles else None))
        stats: dict = {}
        df, _ = runner.run(cases, ["faulty"], DTYPES, call_timeout=CALL_TIMEOUT, cpus=cpus, stats=stats)
        return df, stats["worker_s"]["faulty"]

    alone, one = go(True, cpus=1)
    plain, none = go(False, cpus=2)
    spared, two = go(True, cpus=2)
    # one spare at once, not one per free CPU (more come from the estimate, which says no here)
    more, three = go(True, cpus=4)
    assert [w["workers"] for w in (one, none, two, three)] == [1, 1, 2, 2], (one, none, two, three)
    assert (alone[alone.quantity == "loss"].status == "match").all()
    for df in (plain, spared, more):
        pd.testing.assert_frame_equal(df.drop(columns="seconds"), alone.drop(columns="seconds"))


def test_a_framework_that_compiles_has_few_calls_in_flight(spare_soon, monkeypatch):
    """Each call of a framework that compiles is a compilation of a second or so: a worker is
    sent at most COMPILING_AHEAD of them, the rest stay queued for whichever worker is free
    first (otherwise PIPELINE_DEPTH). The rows are those of the plain run."""
    import dataclasses

    monkeypatch.setattr(runner, "MAX_BUNDLE_PROGRAMS", 1)  # a call per case, bundled or not
    cases = parse_cases({"cases": [normal(i) for i in range(40)]})
    sent = runner.WorkerHandle.send

    def go(compiles: bool) -> tuple[pd.DataFrame, int]:
        monkeypatch.setattr(fa, "FRAMEWORK", dataclasses.replace(fa.FRAMEWORK, compile=(lambda f: f) if compiles else None))
        depth = []

        def send(self, *a, **k):
            sent(self, *a, **k)
            depth.append(len(self.inflight))

        monkeypatch.setattr(runner.WorkerHandle, "send", send)
        df, _ = runner.run(cases, ["faulty"], DTYPES, call_timeout=CALL_TIMEOUT, cpus=1)
        return df, max(depth)

    compiled, most = go(True)
    plain, deep = go(False)
    assert most == runner.COMPILING_AHEAD < deep == runner.PIPELINE_DEPTH, (most, deep)
    pd.testing.assert_frame_equal(compiled.drop(columns="seconds"), plain.drop(columns="seconds"))
