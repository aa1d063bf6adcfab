"""Batching (M7) does not change what is measured: where a framework runs cases of one batch key
as one call (adapters.Framework.batch_rows: JAX, rows stacked and padded to a power-of-two
bucket, under jax.jit), and compiles several calls as one program (runner.bundles,
adapters.call_bundle: JAX), every row of the conformance run (tests/conformance_runs.py: the
whole corpus, batched and bundled) equals, in every column but the timing `seconds`, the row of
a run with one case per call (`runner.run(batch=False)`, each case alone in its bucket, compiled
on its own). keras[jax], which runs
eagerly, batches too (without jax.jit), and there every row equals the row of each case run
alone at its own shape, unpadded. (XLA's results can depend on the shape it compiles for: at
its exact shape instead of its bucket, 2 of 5,121 JAX rows differed in the last bits of a
float64 gradient, both within tolerance; so the bucket is part of how JAX is measured.)

And the batching plan itself: which cases share a call, and a batch that crashes is retried
one case per call, so the crashed row is the case that did it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import adapters
from conformance_runs import CORPUS, run_of
from harness import runner


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns="seconds").astype(object).where(df.drop(columns="seconds").notna(), "NA").astype(str)


def assert_same_rows(batched: pd.DataFrame, other: pd.DataFrame, what: str) -> None:
    """Every row equal in every column but `seconds`; else the first ten that differ, and how."""
    assert len(batched) == len(other) > 0
    a, b = _comparable(batched), _comparable(other)
    differ = (a != b).any(axis=1)
    assert not differ.any(), f"batched and {what} rows differ:\n" + "\n".join(
        f"{r.api} {r.case_id} {r.dtype} {r.quantity}: "
        + ", ".join(f"{c} {a.at[i, c]!r} vs {b.at[i, c]!r}" for c in a.columns if a.at[i, c] != b.at[i, c] and c != "repro")
        for i, r in batched[differ].head(10).iterrows())


def rows_like(run: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """The rows of `run` with the (api, case, dtype, quantity) of `other`'s rows, in its order."""
    key = ["api", "case_id", "dtype", "quantity"]
    return run.set_index(key).loc[pd.MultiIndex.from_frame(other[key])].reset_index()[list(other.columns)]


@pytest.mark.conformance
@pytest.mark.xdist_group("jax")
@pytest.mark.parametrize("dtypes", [("float32", "bfloat16"), ("float64", "float16")])
def test_batched_equals_one_at_a_time(dtypes):
    """The batched rows are the conformance run's (tests/conformance_runs.py: the whole corpus,
    computed once in this worker), where these cases shared buckets with the exhaustive ones too."""
    cases = [c for c in CORPUS if c.category not in ("exhaustive",)]
    single, _ = runner.run(cases, ["jax"], dtypes, batch=False)
    assert_same_rows(rows_like(run_of("jax"), single), single, "one-at-a-time")
    # the comparison is not vacuous: most of these cases did run in shared calls, and most in
    # programs compiled with other calls
    tasks, _ = runner.plan(cases, adapters.all_apis(["jax"]), dtypes)
    calls = runner.batches(tasks, True)
    assert sum(len(c) for c in calls if len(c) > 1) > len(tasks) / 4
    bundled = [c for c in runner.framework_calls(tasks, adapters.load("jax").framework) if isinstance(c, runner.Bundle)]
    assert sum(len(c) for c in bundled) > len(tasks) / 2 and all(len(c.parts()) > 1 for c in bundled)


@pytest.mark.conformance
@pytest.mark.xdist_group("keras-jax")
def test_keras_jax_batched_equals_unbatched(monkeypatch):
    """keras[jax] runs eagerly, op by op; its batches change no value against each case alone at
    its own shape, unpadded (rows wider than adapters.BATCH_MAX_ROW run alone: at 32,768 classes
    the 8-row bucket changed a value). The cases here are those a keras[jax] API batches; the
    batched rows are the conformance run's (tests/conformance_runs.py: the whole corpus, so each
    case shared its calls with cases that are not here), computed once in this worker."""
    apis = adapters.all_apis(["keras[jax]"])
    dtypes = ("float32", "float64")
    every, _ = runner.plan(CORPUS, apis, dtypes)
    batched_ids = {t.case.id for c in runner.batches(every, True) if c.batched for t in c}
    cases = [c for c in CORPUS if c.id in batched_ids]
    assert len(cases) > 20
    plain = runner.batches
    monkeypatch.setattr(runner, "batches", lambda tasks, batch_rows, stack=True: plain(tasks, False, stack))
    alone, _ = runner.run(cases, ["keras[jax]"], dtypes)
    assert_same_rows(rows_like(run_of("keras[jax]"), alone), alone, "unbatched keras[jax]")


def test_batch_plan():
    cases = {c.id: c for c in CORPUS}
    jax_apis = {a.id: a for a in adapters.all_apis(["jax"])}
    tasks, _ = runner.plan(list(cases.values()), list(jax_apis.values()), ["float32"])
    calls = runner.batches(tasks, True)
    assert sorted(t.idx for c in calls for t in c) == sorted(t.idx for t in tasks)  # each task once
    for c in calls:
        keys = {adapters.batch_key(t.api, t.case.inputs, t.case.targets, t.case.params, t.quantities, t.case.invalid)
                for t in c}
        if c.batched:
            assert len(keys) == 1 and None not in keys
            rows = sum(t.case.inputs.size if "flat" in next(iter(keys)) else len(t.case.inputs) for t in c)
            assert len(c) == 1 or (rows <= runner.MAX_BATCH_ROWS and len(c) <= runner.MAX_BATCH_CASES)
        else:  # a group: cases of one API and quantities, none of them stacked
            assert keys == {None} and len({(t.api.id, t.quantities) for t in c}) == 1
            assert len(c) == 1 or (len(c) <= runner.MAX_GROUP_CASES
                                   and sum(t.case.inputs.size for t in c) <= runner.MAX_GROUP_ELEMENTS)
    assert any(len(c) > 1 for c in calls if not c.batched)
    # what never shares a call: invalid input, reduced cases, per-row weight arrays, other axes
    for t in tasks:
        key = adapters.batch_key(t.api, t.case.inputs, t.case.targets, t.case.params, t.quantities, t.case.invalid)
        if t.case.invalid or t.case.reduction != "none" or "axis" in t.case.params or t.case.inputs.ndim != 2:
            assert key is None, t.case.id
        elif t.case.inputs.shape[1] > adapters.BATCH_MAX_ROW and t.case.family.startswith(("softmax", "sparse")):
            assert key is None, t.case.id  # a wide row runs at its own shape
    # without batch_rows (torch) no call is stacked: groups of one API, each case run as it is;
    # batch=False: one task per call, padded to its bucket as in a batch
    torch_tasks, _ = runner.plan(list(cases.values()), adapters.all_apis(["torch"]), ["float32"])
    torch_calls = runner.batches(torch_tasks, False)
    assert not any(c.batched for c in torch_calls) and all(len({t.api.id for t in c}) == 1 for c in torch_calls)
    assert len(torch_calls) < len(torch_tasks) / 4
    assert all(len(c) == 1 for c in runner.batches(torch_tasks, False, stack=False))
    alone = runner.batches(tasks, True, stack=False)
    assert all(len(c) == 1 for c in alone) and {c[0].idx for c in alone if c.batched} == {
        t.idx for c in calls if c.batched for t in c}


def test_bundle_plan():
    """Bundles (runner.bundles) are the batches' calls in order, a group's cases one part each,
    at most MAX_BUNDLE_PROGRAMS parts and MAX_BUNDLE_ELEMENTS inputs; invalid input is bundled
    too, a case a part; large calls are never bundled; a task alone runs as its own part ran it;
    only a framework that compiles bundles, and only when it stacks."""
    jax_fw = adapters.load("jax").framework
    tasks, _ = runner.plan(CORPUS, adapters.all_apis(["jax"]), ["float32", "float64"])
    calls = runner.batches(tasks, True)
    bundled = runner.framework_calls(tasks, jax_fw)
    assert sorted(t.idx for c in bundled for t in c) == sorted(t.idx for t in tasks)  # each task once
    parts = [p for c in bundled for p in c.parts()]
    unbundled = [p for c in calls for p in ([c] if c.batched or sum(t.case.inputs.size for t in c) > runner.MAX_BUNDLE_ELEMENTS
                                             else [c.alone(t) for t in c])]
    assert sorted(([t.idx for t in p], p.batched) for p in parts) == sorted(([t.idx for t in p], p.batched)
                                                                             for p in unbundled)
    bundles = [c for c in bundled if isinstance(c, runner.Bundle)]
    assert len(bundles) > 4
    for b in bundles:
        assert 1 < len(b.parts()) <= runner.MAX_BUNDLE_PROGRAMS
        assert sum(t.case.inputs.size for t in b) <= runner.MAX_BUNDLE_ELEMENTS
        assert list(b) == [t for p in b.parts() for t in p]
        assert all(len(p) == 1 for p in b.parts() if not p.batched)  # a group's cases, one by one
        for p in b.parts():
            for t in p:
                assert b.alone(t) == [t] and b.alone(t).batched == p.batched
    assert any(p.batched for b in bundles for p in b.parts()) and any(not p.batched for b in bundles for p in b.parts())
    invalid_calls = [c for c in bundled if any(t.case.invalid for t in c)]  # a case a part, like any other
    assert len(invalid_calls) > 1 and all(isinstance(c, runner.Bundle) or len(c) == 1 for c in invalid_calls)
    # the messages carry each part as the worker runs it (harness.worker)
    import pickle

    call_id, msg_parts = pickle.loads(runner.WorkerHandle.message(bundles[0]))
    assert call_id == bundles[0][0].idx and [(a, len(items), q, b) for a, items, q, b in msg_parts] == [
        (p[0].api.id, len(p), p[0].quantities, p.batched) for p in bundles[0].parts()]
    # no bundle without a compiler, nor when nothing is stacked
    torch_tasks, _ = runner.plan(CORPUS, adapters.all_apis(["torch"]), ["float32"])
    assert not any(isinstance(c, runner.Bundle) for c in runner.framework_calls(torch_tasks, adapters.load("torch").framework))
    assert all(len(c) == 1 for c in runner.framework_calls(tasks, jax_fw, stack=False))


def test_call_bundle_runs_its_calls_as_one_program(monkeypatch):
    """call_bundle on a numpy stand-in framework whose 'compiler' is the identity (a program is a
    function that calls each part's): the same results as each part alone (call_batch,
    call_each), from one program per bundle; a program that raises falls back to each part on
    its own, and the case that raises is the one whose result says so."""
    import dataclasses

    import faulty_adapter as fa

    programs = []

    def compile_(fn):
        programs.append(fn)
        return fn

    for cache in ("_COMPUTE", "_COMPILED", "_BUNDLES"):
        monkeypatch.setattr(adapters, cache, {})
    fw, api = dataclasses.replace(fa.FRAMEWORK, compile=compile_), fa.APIS[0]
    rng = np.random.default_rng(1)

    def case(n, k=3):
        return rng.normal(size=(n, k)).astype(np.float32), rng.uniform(size=(n, k)).astype(np.float32), {}

    batch, group = [case(1), case(5), case(2)], [case(2, 4), case(3, 2)]
    parts = [(api, batch, ("loss",), True), (api, group, ("loss",), False)]
    expected = adapters.call_batch(fa.FRAMEWORK, api, batch) + adapters.call_each(fa.FRAMEWORK, api, group)
    got = adapters.call_bundle(fw, parts)
    assert len(programs) == 1 and len(got) == len(expected) == 5
    for (k1, o1), (k2, o2) in zip(got, expected):
        assert k1 == k2 == "ok" and o1["loss"][0] == "ok" and np.array_equal(o1["loss"][1], o2["loss"][1])
    assert adapters.call_bundle(fw, parts) and len(programs) == 1  # compiled once per bundle
    # a case that raises as the program is traced (invalid input) is left out of it: its part
    # runs on its own, as alone, and the other parts keep the program's values
    bad = [group[0], (np.full((2, 3), fa.RAISE, np.float32), group[1][1][:2, :2].repeat(2, 1)[:, :3], {})]
    alone = []
    for name in ("call_batch", "call_each"):
        monkeypatch.setattr(adapters, name, lambda *a, f=getattr(adapters, name), n=name, **k: alone.append(n) or f(*a, **k))
    res = adapters.call_bundle(fw, [(api, batch, ("loss",), True), (api, bad, ("loss",), False)])
    assert [k for k, _ in res] == ["ok", "ok", "ok", "ok", "raised"] and "4567.5" in res[-1][1]
    assert alone == ["call_each"] and len(programs) == 2
    assert all(np.array_equal(r[1]["loss"][1], e[1]["loss"][1]) for r, e in zip(res[:4], expected[:4]))
    # a case that leaves the process unable to compute (a CUDA device-side assert): the parts
    # after it are not run here (the runner sends them to a new worker)
    monkeypatch.setattr(fa, "_poison", None)  # restored after the test: the poison stays in it
    poison = [(np.full((1, 3), fa.POISON, np.float32), batch[0][1][:1], {})]
    res = adapters.call_bundle(fw, [(api, poison, ("loss",), False), (api, group, ("loss",), False)])
    assert [k for k, _ in res] == ["raised", adapters.UNRUN, adapters.UNRUN]


def test_crashed_bundle_is_retried_one_case_per_call(monkeypatch):
    """A bundle whose worker dies (SIGABRT) is sent again one case per call, each as its part ran
    it: only the case that aborts is `crashed`."""
    import dataclasses

    import faulty_adapter as fa
    from harness.casefile import parse_cases

    fa.register(monkeypatch)
    # the runner bundles for a framework that compiles (its worker, unpatched, runs each part alone)
    monkeypatch.setattr(fa, "FRAMEWORK", dataclasses.replace(fa.FRAMEWORK, batch_rows=True, compile=lambda f: f))
    doc = {"cases": [{"id": f"b/{i}", "family": "sigmoid", "inputs": [[0.5, -2.0], [fa.ABORT if i == 2 else 1.0, 3.0]],
                      "targets": [[1.0, 0.0], [0.25, 1.0]], "params": {"reduction": "none"}} for i in range(3)]
           + [{"id": f"g/{i}", "family": "sigmoid", "inputs": [0.5, -2.0, 1.0 + i], "targets": [1.0, 0.0, 0.5]}
              for i in range(2)]}  # 1-D inputs: a group, each case alone
    cases = parse_cases(doc)
    tasks, _ = runner.plan(cases, adapters.all_apis([fa.NAME]), ["float32"])
    calls = runner.framework_calls(tasks, fa.FRAMEWORK)
    assert len(calls) == 1 and [p.batched for p in calls[0].parts()] == [True, False, False]
    df, _ = runner.run(cases, [fa.NAME], ["float32"])
    crashed = df[df.status == "crashed"]
    assert list(crashed.case_id) == ["b/2"] and "SIGABRT" in crashed.detail.iloc[0]
    assert set(df[(df.case_id != "b/2") & (df.quantity == "loss")].status) == {"match"}


def test_bucket_pads_to_few_shapes():
    sizes = {adapters._bucket(n) for n in range(1, 4097)}
    assert sizes == {8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}
    assert all(n <= adapters._bucket(n) < max(16, 2 * n) for n in range(1, 5000))


def test_call_batch_cuts_each_case_out(monkeypatch):
    """call_batch on a numpy stand-in framework: each case gets exactly its own rows back, an
    elementwise family's elements in its own shape; a stacked call that raises falls back to one
    call per case, and the case that raises is the one whose result says so."""
    import faulty_adapter as fa

    fw, api = fa.FRAMEWORK, fa.APIS[0]
    rng = np.random.default_rng(0)
    items = [(rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(size=(n, 3)).astype(np.float32), {})
             for n in (1, 5, 2)]
    res = adapters.call_batch(fw, api, items, ("loss",))
    for (x, t, p), (kind, out) in zip(items, res):
        assert kind == "ok"
        alone = adapters.call(fw, api, x, t, p, ("loss",))["loss"][1]
        assert out["loss"][1].shape == x.shape and np.array_equal(out["loss"][1], alone)
    bad = items[:1] + [(np.full((2, 3), fa.RAISE, np.float32), items[1][1][:2], {})] + items[2:]
    res = adapters.call_batch(fw, api, bad, ("loss",))
    assert [k for k, _ in res] == ["ok", "raised", "ok"]


def test_crashed_batch_is_retried_one_case_per_call(monkeypatch):
    """A batch whose worker dies (SIGABRT) is sent again one case per call: only the case that
    aborts is `crashed`, its batch-mates are graded as if they had run alone."""
    import dataclasses

    import faulty_adapter as fa
    from harness.casefile import parse_cases

    fa.register(monkeypatch)
    monkeypatch.setattr(fa, "FRAMEWORK", dataclasses.replace(fa.FRAMEWORK, batch_rows=True))
    doc = {"cases": [{"id": f"b/{i}", "family": "sigmoid", "inputs": [[0.5, -2.0], [fa.ABORT if i == 2 else 1.0, 3.0]],
                      "targets": [[1.0, 0.0], [0.25, 1.0]]} for i in range(5)]}
    cases = parse_cases(doc)
    tasks, _ = runner.plan(cases, adapters.all_apis([fa.NAME]), ["float32"])
    assert [len(c) for c in runner.batches(tasks, True)] == [5]  # one batch of all five
    df, _ = runner.run(cases, [fa.NAME], ["float32"])
    crashed = df[df.status == "crashed"]
    assert list(crashed.case_id) == ["b/2"] and "SIGABRT" in crashed.detail.iloc[0]
    assert set(df[(df.case_id != "b/2") & (df.quantity == "loss")].status) == {"match"}
