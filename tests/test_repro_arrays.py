"""Repro snippets of large cases (M7): `xentc run` saves an array of more than
repro.EXTERNAL_MIN elements once under DIR/repro/arrays/ and the snippet loads it; run from DIR,
that snippet prints exactly what the snippet with the array written in prints."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import faulty_adapter as fa
from harness import cli, repro, runner
from harness.casefile import load_cases


def _ran(snippet: str, cwd) -> tuple[int, str, str]:
    """What running the snippet in `cwd` gives: exit status, stdout, last line of stderr."""
    p = subprocess.run([sys.executable, "-"], input=snippet, capture_output=True, text=True, env=fa.env(), cwd=cwd,
                       timeout=120)
    return p.returncode, p.stdout, (p.stderr.strip().splitlines() or [""])[-1]


def _raising_doc() -> dict:
    """Unreduced sigmoid cases of 5-9 logits that raise in the faulty framework: their repro
    carries the whole case."""
    rng = np.random.default_rng(3)
    return {"cases": [{"id": f"raise/{i}", "family": "sigmoid",
                       "inputs": [[fa.RAISE] + np.round(rng.normal(0, 4, 4 + i), 3).tolist()],
                       "targets": [rng.choice([0.0, 0.25, 1.0], 5 + i).tolist()]} for i in range(5)]}


def test_large_arrays_saved_once_and_the_snippet_runs_the_same(tmp_path, monkeypatch):
    fa.register(monkeypatch)
    monkeypatch.setattr(repro, "EXTERNAL_MIN", 6)  # cases of 7 logits and more count as large here
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(_raising_doc()))
    out = tmp_path / "run"
    assert cli.main(["run", "--frameworks", "faulty", "--dtypes", "float32,float64", "--cases", str(cases_file),
                     "--out", str(out), "-q"]) == 0
    df = pd.read_parquet(out / "results.parquet")
    df = df[df.quantity == "loss"]
    assert set(df.status) == {"raised"} and len(df) == 10
    loads = df.repro.str.count(r"np\.load\('repro/arrays/")
    # cases of 7, 8, 9 logits: inputs, targets and the reference loss saved, in each dtype
    assert loads.tolist() == [0, 0, 0, 0, 3, 3, 3, 3, 3, 3]
    saved = sorted(os.listdir(out / "repro" / "arrays"))
    # per case 5 files: the targets are the same in both dtypes (0, 0.25, 1: exact), so one file
    assert len(saved) == 3 * 5 and all(n.endswith(".npy") for n in saved)
    inline, _ = runner.run(load_cases(str(cases_file)), ["faulty"], ["float32", "float64"])  # no directory
    inline = inline[inline.quantity == "loss"]
    for ext, inl in zip(df.repro, inline.repro):
        assert "np.load" not in inl
        got, want = _ran(ext, out), _ran(inl, tmp_path)
        assert got == want and "injected fault" in got[2], (got, want)
    # a new run into the same directory keeps only the arrays its own snippets load
    stale = out / "repro" / "arrays" / ("0" * 32 + ".npy")
    stale.write_bytes(b"stale")
    assert cli.main(["run", "--frameworks", "faulty", "--dtypes", "float32", "--cases", str(cases_file),
                     "--out", str(out), "-q"]) == 0
    assert not stale.exists() and len(os.listdir(out / "repro" / "arrays")) == 3 * 3


@pytest.mark.conformance
@pytest.mark.xdist_group("torch")
def test_a_large_reduced_case_of_the_corpus_on_torch(tmp_path):
    """The corpus's wide reduced case on torch: its gradient repro (a discrepancy) loads the
    inputs and the reference gradient, and prints what the written-in snippet prints."""
    import adapters
    from cases.generator import build_corpus

    case = [c for c in build_corpus(0) if c.id == "shapes/sigmoid/wide-mean"]
    api = [a for a in adapters.all_apis(["torch"]) if a.id == "torch.nn.functional.binary_cross_entropy_with_logits"]
    assert case and api and case[0].inputs.size > repro.EXTERNAL_MIN
    ext, _ = runner.run(case, ["torch"], ["float32"], apis=api, arrays_dir=str(tmp_path / "repro" / "arrays"))
    inl, _ = runner.run(case, ["torch"], ["float32"], apis=api)
    ext, inl = ext[ext.repro.notna() & (ext.repro != "")], inl[inl.repro.notna() & (inl.repro != "")]
    assert len(ext) == len(inl) >= 1 and (ext.repro.str.count("np.load") >= 2).all()
    for a, b in zip(ext.repro, inl.repro):
        got, want = _ran(a, tmp_path), _ran(b, tmp_path)
        assert got == want and got[0] == 0, (got, want)


def test_saved_array_names_are_their_content(tmp_path):
    a = np.arange(repro.EXTERNAL_MIN + 1, dtype=np.float64)
    e1 = repro._literal(a, str(tmp_path))
    e2 = repro._literal(a.copy(), str(tmp_path))
    e3 = repro._literal(a + 1, str(tmp_path))
    assert e1 == e2 != e3 and len(os.listdir(tmp_path)) == 2
    name = e1.split("/")[-1].split("'")[0]
    assert np.array_equal(np.load(tmp_path / name), a)
    assert "np.load" not in repro._literal(a[: repro.EXTERNAL_MIN], str(tmp_path))  # small: written in


def test_the_whole_cases_reference_cut_is_the_reference_of_the_cut_case():
    """What lets the runner hand a snippet the reference it holds (repro.snippet's `reference`):
    on every unreduced valid case of the corpus, for each conventions an API of its family has,
    in both reference precisions, the whole case's loss and gradients cut at an output (first,
    middle, last) are bit for bit the reference of the inputs cut there, which a snippet computes
    without it."""
    import adapters
    from cases.generator import build_corpus
    from harness import chunked, oracle
    from harness.dtypes import reference_precision

    convs: dict[str, dict] = {}  # family -> {(mean, axis_mean): an API of the family with them}
    for a in adapters.all_apis(list(adapters.DEFAULT_FRAMEWORKS)):
        convs.setdefault(a.family, {}).setdefault((a.convention("mean"), a.convention("axis_mean")), a)
    checked = 0
    for case in build_corpus(0):
        if case.invalid or case.reduction != "none" or chunked.rows_per_block(case) or case.inputs.size > 4096:
            continue
        for (mean, axis_mean), api in convs.get(case.family, {}).items():
            conv = {"mean": mean, "axis_mean": axis_mean}
            for dtype in ("float32", "float64"):
                x, t, p = case.in_dtype(dtype)
                prec = reference_precision(dtype)[0]
                loss = np.asarray(oracle.loss(case.family, x, t, p, conv, prec))
                with np.errstate(over="ignore"):
                    grads = {q: v for q, (v, _) in oracle.grad(case.family, x, t, p, conv, prec).items()
                             if q != "grad_weights"}
                if loss.ndim == 0 or loss.size == 0:
                    continue
                for flat in sorted({0, loss.size // 2, loss.size - 1}):
                    idx = tuple(int(i) for i in np.unravel_index(flat, loss.shape))
                    sl = repro.cut(p, x, idx)
                    if sl is None:
                        continue
                    xc, tc, pc = repro.minimise(api, x, t, p, idx)
                    for q, whole in {"loss": loss, **grads}.items():
                        with np.errstate(over="ignore"):
                            want = repro._reference(case.family, xc, tc, pc, conv, prec, q)
                            got = np.asarray(whole[sl]).astype(np.float64)
                        np.testing.assert_array_equal(got, want, err_msg=f"{case.id} {api.id} {dtype} {q} at {idx}")
                        checked += 1
    assert checked > 1000, checked


def test_a_snippet_given_the_whole_cases_reference_prints_the_reference_of_its_cut_inputs():
    """repro.snippet with the runner's reference of the whole case (cut there) writes the snippet
    it writes computing the reference of its cut inputs itself: on unreduced corpus cases of
    every family torch has, cut at their last output, for the loss and each gradient (a
    weight's gradient too, which the cut case's own reference gives)."""
    import adapters
    from cases.generator import build_corpus
    from harness import chunked, oracle
    from harness.dtypes import reference_precision

    fw = adapters.load("torch").framework
    apis = {a.family: a for a in adapters.all_apis(["torch"])}
    compared = 0
    for case in build_corpus(0):
        api = apis.get(case.family)
        if (api is None or case.invalid or case.reduction != "none" or chunked.rows_per_block(case)
                or case.inputs.size > 4096 or api.cannot_express(case.params, "float32", case.inputs.ndim)):
            continue
        x, t, p = case.in_dtype("float32")
        conv = {"mean": api.convention("mean"), "axis_mean": api.convention("axis_mean")}
        prec = reference_precision("float32")[0]
        loss = np.asarray(oracle.loss(case.family, x, t, p, conv, prec))
        if loss.ndim == 0 or loss.size == 0:
            continue
        idx = tuple(int(i) for i in np.unravel_index(loss.size - 1, loss.shape))
        with np.errstate(over="ignore"):
            whole = {"loss": loss, **{q: v for q, (v, _) in oracle.grad(case.family, x, t, p, conv, prec).items()}}
        for q in ("loss", *adapters.gradient_args(api, p)):
            # a graded row cuts at its output's index; a failed row of a large case at the loss's
            for at in {runner.output_index(case, api, q, idx), idx}:
                given = repro.snippet(fw, api, "float32", x, t, p, at, q, reference=whole[q])
                assert given == repro.snippet(fw, api, "float32", x, t, p, at, q), (case.id, q, at)
                compared += repro.cut(p, x, at) is not None
    assert compared > 50, compared
