"""xentc diff / xentc versions on two synthetic runs with known changes: each change lands in its
section, the exit status gates on newly broken rows, and the pages render with escaping."""
import json
import os

import numpy as np
import pandas as pd

from harness import diff, results
from harness.cli import main
from harness.spec import RESULT_COLUMNS


def _run(path, rows, versions):
    recs = []
    for case, api, status, ulp in rows:
        r = dict.fromkeys(RESULT_COLUMNS, "")
        r.update(case_id=case, category=case.split("/")[0], family="sigmoid", api=api, framework="tensorflow",
                 dtype="float32", quantity="loss", status=status, max_ulp=ulp, max_ulp_finite=ulp, tol_ulp=4.0,
                 expected=1.0, actual=1.0, n_elements=1, seconds=0.0, max_abs_err=0.0, max_rel_err=0.0,
                 cond=np.nan, cond_ulp=np.nan, repro="")
        recs.append(r)
    os.makedirs(path)
    results.save(pd.DataFrame(recs), str(path))
    with open(os.path.join(path, "run.json"), "w") as f:
        json.dump({"versions": versions, "date": "d", "revision": "r", "seed": 0}, f)
    return str(path)


A_ROWS = [("baseline/a", "tf.x", "match", 0.0), ("baseline/b", "tf.x", "discrepancy", 900.0),
          ("baseline/c", "tf.x", "match", 1.0), ("baseline/d", "tf.x", "discrepancy", 10.0),
          ("baseline/e", "tf.x", "unsupported", np.nan), ("baseline/gone", "tf.x", "match", 0.0)]
B_ROWS = [("baseline/a", "tf.x", "nonfinite_mismatch", np.inf), ("baseline/b", "tf.x", "match", 2.0),
          ("baseline/c", "tf.x", "match", 3.0), ("baseline/d", "tf.x", "raised", np.nan),
          ("baseline/e", "tf.x", "unsupported", np.nan), ("extreme/<new>", "tf.x", "match", 0.0)]


def test_sections(tmp_path):
    a = _run(tmp_path / "a", A_ROWS, {"tensorflow": "2.20.0"})
    b = _run(tmp_path / "b", B_ROWS, {"tensorflow": "2.21.0"})
    s = diff.compare(results.load(a), results.load(b))
    got = {k: sorted(v.case_id) for k, v in s.items()}
    assert got == {"newly broken": ["baseline/a"], "newly fixed": ["baseline/b"], "changed failure": ["baseline/d"],
                   "ULP changed": ["baseline/b", "baseline/c"], "added": ["extreme/<new>"], "removed": ["baseline/gone"]}


def test_cli_exit_status_and_pages(tmp_path, capsys):
    a = _run(tmp_path / "a", A_ROWS, {"tensorflow": "2.20.0"})
    b = _run(tmp_path / "b", B_ROWS, {"tensorflow": "2.21.0"})
    out = tmp_path / "out"
    assert main(["diff", a, b, "--out", str(out)]) == 1  # baseline/a newly broke
    text = capsys.readouterr().out
    assert "tensorflow 2.20.0 → 2.21.0" in text and "| newly broken | 1 |" in text
    page = (out / "diff.html").read_text()
    assert "extreme/<new>" not in page  # added rows are counted, listed by API, escaped where shown
    assert main(["diff", a, a]) == 0
    assert main(["diff", b, a]) == 1  # baseline/b broke going back
    assert main(["diff", a, str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_version_matrix(tmp_path, capsys):
    a = _run(tmp_path / "a", A_ROWS, {"tensorflow": "2.20.0", "numpy": "2"})
    b = _run(tmp_path / "b", B_ROWS, {"tensorflow": "2.21.0", "numpy": "2"})
    assert main(["versions", a, b, "--out", str(tmp_path / "v")]) == 0
    vm = diff.version_matrix([(a, *diff.load_run(a)), (b, *diff.load_run(b))])
    assert vm["labels"] == ["tensorflow 2.20.0", "tensorflow 2.21.0"]
    assert sorted(r["case"] for r in vm["rows"]) == ["baseline/a", "baseline/b", "baseline/c", "baseline/d",
                                                     "baseline/gone", "extreme/<new>"]
    html = (tmp_path / "v" / "versions.html").read_text()
    assert "extreme/&lt;new&gt;" in html and "<new>" not in html
