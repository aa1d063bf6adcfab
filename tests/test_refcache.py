"""The persistent reference cache (harness.refcache, M7): a warm run computes no reference and
writes the same results table as the cold run; keys tell apart what the reference tells
apart; a damaged cache costs one warning line, never a run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import condition, oracle, refcache, repro, runner


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache directory for this test (and no state of another one in this process)."""
    monkeypatch.setenv("XENTC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(refcache, "_store", None)
    monkeypatch.setattr(refcache, "_broken", None)
    yield tmp_path / "cache"
    refcache.flush()


@pytest.mark.conformance
@pytest.mark.xdist_group("torch")
def test_warm_run_computes_no_reference_and_writes_the_same_table(cache, monkeypatch):
    from cases.generator import build_corpus

    cases = build_corpus(0)[::9]  # every family, reduced and not, weights, invalid input
    dtypes = ["float16", "float32", "float64"]
    monkeypatch.setattr(repro, "_REFERENCES", {})  # the snippets' in-process memo: filled by earlier tests
    cold, _ = runner.run(cases, ["torch"], dtypes)
    assert (cache / refcache.FILE).stat().st_size > 0
    assert (cold.status != "unsupported").sum() > 200 and cold.repro.fillna("").str.len().gt(0).sum() > 20
    assert (cold.status == "silent_value").any()  # with a reading (harness.badinput), cached too

    def computing(real):
        def computed(*a, **k):
            raise AssertionError("a reference was computed in the warm run")
        return computed

    monkeypatch.setattr(repro, "_REFERENCES", {})
    for mod, name in ((oracle, "loss"), (oracle, "grad"), (condition, "condition")):
        monkeypatch.setattr(mod, name, computing(getattr(mod, name)))
    warm, _ = runner.run(cases, ["torch"], dtypes)
    pd.testing.assert_frame_equal(warm.drop(columns="seconds"), cold.drop(columns="seconds"))


@pytest.mark.conformance
@pytest.mark.xdist_group("torch")
def test_work_done_while_the_worker_starts_changes_nothing(cache, monkeypatch):
    """runner.run's prefetch (references, the calls' messages, condition numbers, invalid
    cases' repros, while the parent waits) gives the table of a run without it, and its
    messages are the ones sent."""
    from cases.generator import build_corpus

    cases = build_corpus(0)[::9]
    sent = {"prepared": 0, "pickled on sending": 0}
    send = runner.WorkerHandle.send

    def counted(self, tasks, data=None, message=None):
        sent["prepared" if message is not None else "pickled on sending"] += 1
        if message is not None:
            assert message == runner.WorkerHandle.message(tasks, data)
        return send(self, tasks, data, message)

    monkeypatch.setattr(runner.WorkerHandle, "send", counted)
    ahead, _ = runner.run(cases, ["torch"], ["float32"])
    assert sent["prepared"] > 20 and sent["pickled on sending"] == 0, sent
    monkeypatch.setattr(runner, "PREFETCH_CALLS", 0)  # nothing is done ahead
    monkeypatch.setattr(repro, "_REFERENCES", {})
    sent.update(dict.fromkeys(sent, 0))
    plain, _ = runner.run(cases, ["torch"], ["float32"])
    assert sent["prepared"] == 0
    pd.testing.assert_frame_equal(ahead.drop(columns="seconds"), plain.drop(columns="seconds"))


def test_keys_tell_apart_what_the_reference_does(cache):
    a = np.array([1.0, 2.0, 3.0])
    k = refcache.key("reference", "sigmoid", a, {"weight": a, "reduction": "mean"})
    assert k == refcache.key("reference", "sigmoid", a.copy(), {"reduction": "mean", "weight": a})  # dict order
    others = [refcache.key("reference", "sigmoid", a.astype(np.float32), {"weight": a, "reduction": "mean"}),
              refcache.key("reference", "sigmoid", a.reshape(3, 1), {"weight": a, "reduction": "mean"}),
              refcache.key("reference", "sigmoid", a, {"weight": a, "reduction": "sum"}),
              refcache.key("reference", "binary", a, {"weight": a, "reduction": "mean"}),
              refcache.key("reference", "sigmoid", a[::-1], {"weight": a, "reduction": "mean"})]
    assert len({k, *others}) == 1 + len(others)
    assert refcache.key(np.float64(1.0)) != refcache.key(np.array(1.0)) != refcache.key(np.array([1.0]))
    # parts hashed beforehand (runner.Reference.data): their digest, a key of its own
    h = refcache.Hashed(refcache.content_hash(a, {"weight": a}))
    assert refcache.key("r", h) == refcache.key("r", refcache.Hashed(refcache.content_hash(a.copy(), {"weight": a})))
    assert refcache.key("r", h) not in (refcache.key("r", a, {"weight": a}), refcache.key("r", bytes(h)))
    assert refcache.key("r", h) != refcache.key("r", refcache.Hashed(refcache.content_hash(a[::-1], {"weight": a})))


def test_a_run_rounds_and_hashes_a_case_once_and_drops_it_after():
    """runner.Reference.data: what Case.in_dtype gives, read-only (shared by every reader), kept
    until forget; a case over DATA_KEEP_ELEMENTS is rounded again at each read, never kept."""
    from harness.casefile import Case

    small = Case("c-small", "softmax", np.array([[1e4, 0.1, -2.0]]), np.array([[0.2, 0.3, 0.5]]),
                 {"reduction": "none", "weight": np.array([1.0, 2.0, 3.0])})
    n = runner.DATA_KEEP_ELEMENTS + 1
    large = Case("c-large", "sigmoid", np.linspace(-5, 5, n).reshape(1, n), np.full((1, n), 0.5), {})
    ref = runner.Reference()
    for case in (small, large):
        x, t, p = ref.data(case, "float16")
        x0, t0, p0 = case.in_dtype("float16")
        assert x.dtype == x0.dtype and np.array_equal(x, x0) and np.array_equal(t, t0)
        assert p.keys() == p0.keys() and all(np.array_equal(p[k], p0[k]) for k in p)
    x, _, p = ref.data(small, "float16")
    assert ref.data(small, "float16")[0] is x and not x.flags.writeable and not p["weight"].flags.writeable
    assert small.inputs.flags.writeable  # the case's own arrays are left as they were
    assert ref.data(large, "float16")[0] is not ref.data(large, "float16")[0]
    ref.forget(small.id, "float16")
    assert ref.data(small, "float16")[0] is not x


def test_values_come_back_bit_for_bit(cache):
    value = {"loss": np.array([1.5, -0.0, np.nan, np.inf], dtype=np.longdouble) / 3,
             "scalar": np.asarray(np.float64(2.5)), "empty": np.zeros((0, 4)), "t": np.arange(6.0).reshape(2, 3).T}
    refcache.put(refcache.key("v"), value)
    refcache.flush()
    other = refcache._Store(str(cache / refcache.FILE))  # another process's view: from the file
    got = other.get(refcache.key("v"))
    assert set(got) == set(value)
    for name, v in value.items():
        assert got[name].dtype == v.dtype and got[name].shape == v.shape
        assert got[name].tobytes() == np.ascontiguousarray(v).tobytes()


def test_peek_reads_and_never_computes(cache):
    parts = ("condition", np.arange(3.0))
    assert refcache.peek(parts) is None
    refcache.cached(parts, lambda: {"cond": np.arange(3.0) * 2})
    assert refcache.peek(parts)["cond"].tolist() == [0.0, 2.0, 4.0]
    assert refcache.peek(("condition", np.arange(3.0) + 1)) is None


def test_a_damaged_cache_costs_one_warning_line(cache, capsys):
    cache.mkdir()
    (cache / refcache.FILE).write_bytes(b"not a database" * 100)
    calls = []
    for _ in range(3):
        v = refcache.cached(("x", np.arange(3.0)), lambda: calls.append(1) or {"v": np.arange(3.0)})
        assert np.array_equal(v["v"], np.arange(3.0))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(calls) == 3 and len(err) == 1 and err[0].startswith("xentc: warning: reference cache ")


def test_off_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XENTC_CACHE_DIR", "off")
    monkeypatch.setattr(refcache, "_store", None)
    calls = []
    for _ in range(2):
        refcache.cached(("y",), lambda: calls.append(1) or {"v": np.zeros(2)})
    assert len(calls) == 2 and refcache.cache_root() is None
