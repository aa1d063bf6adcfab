"""Conformance: every (api, case, dtype, quantity) of the built-in corpus, on the real
frameworks, against the reference: the loss and its gradients through each framework's autodiff;
and what each API does with the invalid cases (harness.badinput): rejected or silent_nan pass,
silent_value must be in the expectations with its reason.

Each framework runs once per session in its own worker process (through the same runner
`xentc run` uses); each row then becomes one test:
  match, rejected, silent_nan -> pass;  unsupported -> skip (with the reason);
  failing and covered by cases/expectations.toml with its status -> xfail (with the reason);
  failing and not covered -> fail, printing the repro.
test_expectations_not_stale fails when an expectation no longer matches anything.
"""
from __future__ import annotations

import os

import pytest

import adapters
from conformance_runs import CORPUS, run_of
from harness import expectations, runner
from harness.spec import DTYPES

KNOWN = expectations.load()
#: XENTC_FRAMEWORKS=torch,jax restricts the suite (tox envs use it); default: every framework
FRAMEWORKS = [f for f in os.environ.get("XENTC_FRAMEWORKS", ",".join(adapters.DEFAULT_FRAMEWORKS)).split(",") if f]
_TASKS, _SKIPPED = runner.plan(CORPUS, adapters.all_apis(FRAMEWORKS), DTYPES)
#: (framework, api, case_id, dtype, quantity, why it is unsupported: known from the plan, or "")
ROWS = sorted([(t.api.framework, t.api.id, t.case.id, t.dtype, q, "") for t in _TASKS for q in t.quantities]
              + [(r["framework"], r["api"], r["case_id"], r["dtype"], r["quantity"], r["detail"]) for r in _SKIPPED])

_results: dict[str, dict] = {}


def results_of(framework: str) -> dict:
    """{(api, case_id, dtype, quantity): row} for one framework, computed once per test process."""
    if framework not in _results:
        _results[framework] = {(r["api"], r["case_id"], r["dtype"], r["quantity"]): r
                               for r in run_of(framework).to_dict("records")}
    return _results[framework]


def group(fw: str) -> str:
    """The xdist_group of a framework's tests: its name without brackets (pytest-xdist reads a
    group off the end of the test id only when no ']' follows its '@': keras[jax]'s tests would
    each be a group of their own, and every worker would run the framework again)."""
    return fw.replace("[", "-").replace("]", "")


def _param(fw, api, case, dtype, quantity, unsupported):
    # the framework first: keras's APIs have one id on every backend, and a duplicate id costs
    # pytest a pass over every id to make it unique (quadratic: minutes at this size)
    marks = [pytest.mark.xdist_group(group(fw)), pytest.mark.conformance]
    if unsupported:  # the plan's row (runner.plan), as the run gives it: skipped at setup, the run not awaited
        marks.append(pytest.mark.skip(reason=unsupported))
    return pytest.param(fw, api, case, dtype, quantity, id=f"{fw}::{api}::{case}::{dtype}::{quantity}", marks=marks)


@pytest.mark.parametrize("framework,api,case_id,dtype,quantity", [_param(*r) for r in ROWS])
def test_conformance(framework, api, case_id, dtype, quantity):
    row = results_of(framework)[(api, case_id, dtype, quantity)]
    status = row["status"]
    if status == "match":  # a gradient may pass beyond tol_ulp only where the reference's own bound says so
        assert (row["max_ulp"] <= row["tol_ulp"] or row["n_elements"] == 0
                or (quantity != "loss" and "the reference is certain to" in row["detail"]))
        return
    if status == "unsupported":
        pytest.skip(row["detail"])
    if status in ("rejected", "silent_nan"):  # invalid input refused, or answered with nan: conforming
        assert row["invalid"], f"{status} for a valid case: {row['detail']}"
        return
    loss_row = results_of(framework).get((api, case_id, dtype, "loss"))
    known = expectations.match(KNOWN, row, loss_row)
    if known is not None:
        pytest.xfail(f"known {known.kind}: {known.reason[:160]}")
    pytest.fail(
        f"{quantity} {status}: reference {row['expected']!r}, {api} gave {row['actual']!r} "
        f"({row['max_ulp']} ulp, tolerance {row['tol_ulp']}) at {row['worst_input']}; {row['detail']}\n"
        f"repro:\n{row['repro']}",
        pytrace=False,
    )


@pytest.mark.parametrize("framework", [pytest.param(f, marks=[pytest.mark.xdist_group(group(f)), pytest.mark.conformance])
                                       for f in FRAMEWORKS])
def test_expectations_not_stale(framework):
    rows = list(results_of(framework).values())
    apis = {(r["framework"], r["api"]) for r in rows if r["status"] != "unsupported"}
    if not apis:
        pytest.skip(f"{framework} unavailable: nothing ran")
    broken = [f"{r['api']} {r['case_id']} {r['dtype']}: {r['repro']}" for r in rows
              if str(r["repro"]).startswith(runner.REPRO_FAILED)]
    assert not broken, "repro generation failed (a harness bug):\n" + "\n".join(broken[:10])
    stale = expectations.stale(KNOWN, rows, apis)
    assert not stale, "stale expectations (the behaviour is gone: delete or narrow them):\n" + "\n".join(
        f"  {k.label()} [api {pat}]" for k, pat in stale)
