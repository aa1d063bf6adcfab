"""report.md from a results table: synthetic rows (no framework), checking where each finding
is shown, that backends are kept apart, and that everything from the table is escaped."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from harness import report
from harness.expectations import Known
from harness.spec import RESULT_COLUMNS


def row(**kw):
    r = dict.fromkeys(RESULT_COLUMNS, "")
    r.update(category="extreme", family="sigmoid", dtype="float32", quantity="loss", status="match",
             max_ulp=0.0, tol_ulp=4.0, max_abs_err=0.0, max_rel_err=0.0, expected=1.0, actual=1.0,
             n_elements=1, seconds=0.0, framework="torch", framework_version="1", device="cpu", repro="")
    r.update(kw)
    return r


KNOWN = [
    Known(api=("a.clip",), case=("*",), status=("nonfinite_mismatch",), reason="clips to eps", kind="by-design",
          ref="https://example.invalid/doc"),
    Known(api=("a.cancel",), case=("*",), status=("discrepancy",), reason="cancels", kind="precision"),
]


def test_semantic_and_numerical_findings_are_reported_apart(tmp_path):
    df = pd.DataFrame([
        row(api="a.clip", case_id="extreme/binary/p0", status="nonfinite_mismatch", expected=np.inf, actual=16.1,
            worst_input="x=0 z=1", repro="print(1)\n"),
        row(api="a.cancel", case_id="extreme/sigmoid/x-6", status="discrepancy", max_ulp=900.0, expected=0.0022,
            actual=0.0023, worst_input="x=-6 z=0", repro="print(2)\n"),
        row(api="a.fine", case_id="baseline/sigmoid/r"),
    ])
    text = open(report.write(df, {"versions": {}}, str(tmp_path), known=KNOWN)).read()
    semantic = text[text.index("## Semantic differences by design"):text.index("## Numerical discrepancies")]
    numerical = text[text.index("## Numerical discrepancies"):]
    assert "a.clip" in semantic and "clips to eps" in semantic and "https://example.invalid/doc" in semantic
    assert "a.cancel" not in semantic
    assert "a.cancel" in numerical.split("## ")[1] and "cancels" in numerical
    assert "2 failing rows: 2 known" in text
    assert sorted(os.listdir(tmp_path / "repro")) and all(f.endswith(".py") for f in os.listdir(tmp_path / "repro"))


def test_keras_backends_are_kept_apart_and_disagreements_listed(tmp_path):
    rows = [row(api="keras.losses.bce", framework=f"keras[{b}]", case_id="extreme/sigmoid/big",
                status=("discrepancy" if b == "numpy" else "match"), max_ulp=(300.0 if b == "numpy" else 0.0))
            for b in ("jax", "numpy", "tensorflow", "torch")]
    text = open(report.write(pd.DataFrame(rows), {"versions": {}}, str(tmp_path), known=[])).read()
    assert "`keras.losses.bce · keras[numpy]`" in text and "`keras.losses.bce · keras[jax]`" in text
    section = text[text.index("## Keras backends that disagree"):]
    assert "1 (API, case, dtype) combinations" in section
    assert "discrepancy (300 ulp)" in section and "match (0 ulp)" in section


def test_table_values_are_escaped_and_repro_names_stay_inside(tmp_path):
    evil = "user/<script>alert(1)</script>|../../etc/passwd"
    df = pd.DataFrame([row(api="a.x", case_id=evil, status="discrepancy", max_ulp=10.0, repro="print(0)\n")])
    text = open(report.write(df, {"versions": {}}, str(tmp_path), known=[])).read()
    assert "<script>" not in text and "&lt;script&gt;" in text
    names = os.listdir(tmp_path / "repro")
    assert len(names) == 1 and "/" not in names[0] and not names[0].startswith(".")
    assert os.path.dirname(os.path.realpath(tmp_path / "repro" / names[0])) == os.path.realpath(tmp_path / "repro")


def test_accuracy_table_keeps_certified_and_searched_figures_apart():
    df = pd.DataFrame([
        row(api="a.f", category="exhaustive", case_id="exhaustive/sigmoid/all-float16", dtype="float16",
            status="discrepancy", max_ulp=6142.0, max_ulp_finite=6142.0, worst_input="x=-6.23 z=0",
            cond=6.2, cond_ulp=519.0),
        row(api="a.f", category="exhaustive", case_id="exhaustive/sigmoid/pos_weight-10-all-float16", dtype="float16",
            status="nonfinite_mismatch", max_ulp=np.inf, max_ulp_finite=12.0, worst_input="x=-34496",
            worst_input_finite="x=3 z=1", cond=1.0, cond_ulp=2.0),
        row(api="a.f", case_id="baseline/sigmoid/r", dtype="float16", status="match", max_ulp=3.0,
            max_ulp_finite=3.0, worst_input="x=1 z=0"),
        row(api="a.f", case_id="extreme/sigmoid/s", dtype="float32", status="discrepancy", max_ulp=900.0,
            max_ulp_finite=900.0, worst_input="x=-6.11 z=0", cond=6.1, cond_ulp=2000.0),
    ])
    t = report.accuracy_rows(df).set_index("dtype")
    f16, f32 = t.loc["float16"], t.loc["float32"]
    assert f16.certified_ulp == 6142 and f16.certified_input == "x=-6.23 z=0" and f16.searched_ulp == 3
    assert f16.certified_domain == "sigmoid/all, sigmoid/pos_weight-10-all" and f16.nonfinite == 1
    assert f16.kind == "implementation"  # 6142 > 519
    assert np.isnan(f32.certified_ulp) and f32.searched_ulp == 900 and f32.kind == "conditioning"  # 900 <= 2000
    cert = {"complete": True, "framework": "torch", "api": "a.f", "dtype": "float32", "max_ulp": 5.0,
            "worst": {"x": -6.5, "x_bits": "0xc0d00000", "z": 0.0}, "domain": "every float32 x, z in {0, 1}"}
    t = report.accuracy_rows(df, [cert])
    assert ((t.dtype == "float32") & (t.certified_ulp == 5)).any()


def test_invalid_input_has_its_own_table_and_silent_values_list(tmp_path):
    """Each (API, kind) cell shows the worst behaviour of the kind's cases; invalid rows stay out of
    the accuracy matrix; every silent value is listed with its reading; ids and messages are escaped."""
    inv = dict(category="invalid", family="sparse_softmax", reference="invalid input", max_ulp=np.nan)
    df = pd.DataFrame([
        row(api="a.idx", case_id="invalid/sparse_softmax/index_eq_C-none", invalid="index_eq_C", status="rejected",
            detail="IndexError: Target 3 is out of bounds.", **inv),
        row(api="a.idx", case_id="invalid/sparse_softmax/index_eq_C-mean", invalid="index_eq_C", status="silent_value",
            detail="returned 0.74; likely the row's loss 0 (an all-zero one-hot row), still counted in the mean", **inv),
        row(api="a.idx", case_id="invalid/sparse_softmax/index_minus_1-none", invalid="index_minus_1",
            status="silent_nan", detail="returned shape (4,): [nan, 1, 2, ...]", **inv),
        row(api="b.<i>x|y</i>", case_id="invalid/sparse_softmax/index_eq_C-none", invalid="index_eq_C",
            status="unsupported", detail="reduction", **inv),
        row(api="b.<i>x|y</i>", case_id="invalid/sparse_softmax/index_minus_1-none", invalid="index_minus_1",
            status="rejected", detail="ValueError: <bad> | input", **inv),
        row(api="a.idx", case_id="baseline/sparse_softmax/r", family="sparse_softmax"),
    ])
    known = [Known(api=("a.idx",), case=("invalid/*",), status=("silent_value",), reason="one-hot", kind="by-design")]
    text = open(report.write(df, {"versions": {}}, str(tmp_path), known=known)).read()
    section = text[text.index("## Invalid input"):]
    table = section[section.index("### sparse_softmax"):section.index("### Silent values")]
    lines = [ln for ln in table.splitlines() if ln.startswith("| `")]
    assert lines[0].split(" | ")[1:] == ["**VALUE**", "nan |"]  # worst of rejected and silent_value; the nan
    assert lines[1].split(" | ")[1:] == ["·", "raises ValueError |"]
    assert "<i>" not in table and "&lt;i&gt;" in table and "x\\|y" in table
    silent = section[section.index("### Silent values"):]
    assert "still counted in the mean" in silent and "`invalid/sparse_softmax/index_eq_C-mean`" in silent
    matrix = text[text.index("## Compatibility matrix"):text.index("## Invalid input")]
    assert "invalid" not in matrix.split("\n")[4]  # the matrix header has no invalid column
