"""Measure harness.oracle.grad's error against mpmath differentiation of the independent mpmath
loss (the method and the selection of tests/test_oracle_grad.py), in ulps of each tested dtype
and in units of the reference's own claimed bound u_ref * scale (scale = P + N).

    .venv/bin/python tests/measure_gradient_error.py [--seed N] [--per-quantity K] [--families a,b]
                                                     [--by-family] [--failures]

Prints a Markdown table per tested dtype: the reference it is graded against, the values checked
and skipped, the worst error in ulps of the dtype (overall, and where the claimed bound
B * u_ref * scale is below half an ulp, i.e. where the reference should round correctly), the
worst in u_ref * scale, with the case, quantity, conventions and element where each occurs, how
many values exceed the test's bound |oracle - exact| <= B * u_ref * scale + 2**-60 * ulp_dtype(exact),
and how many the harness would round (dtypes.to_dtype of the oracle's value) to something other
than the correctly rounded exact value (in parentheses: those whose exact value is farther from
the rounding midpoint than the claimed bound, i.e. not excused by it). Errors are the part of
|oracle - exact| that the mpmath error bound does not account for. --by-family adds the worst per
family and quantity; --failures lists every value out of bound (case, family, quantity, dtype,
conventions, element, oracle value, scale, mpmath value).
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mpmath import mp  # noqa: E402

import test_oracle_grad as tg  # noqa: E402
from cases.generator import build_corpus  # noqa: E402
from harness.dtypes import reference_precision  # noqa: E402
from harness.spec import DTYPES, FAMILIES  # noqa: E402


def measure(seed: int = 0, k: int = tg.MAX_PER_QUANTITY, families=None):
    """Yield the test's records (tests/test_oracle_grad.Record) for every selected case and dtype."""
    for case in tg.selected_cases(build_corpus(seed, invalid=False)):
        if families and case.family not in families:
            continue
        for d in case.dtypes or DTYPES:
            yield from tg.check_case(case, d, k)


def _where(r) -> str:
    conv = ", ".join(f"{a}={b}" for a, b in r.conv.items())
    return f"`{r.case}` {r.quantity}{f' ({conv})' if conv else ''} {r.index}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-quantity", type=int, default=tg.MAX_PER_QUANTITY,
                    help=f"elements per quantity (default {tg.MAX_PER_QUANTITY}, the test's)")
    ap.add_argument("--families", default="", help="comma-separated subset of the families")
    ap.add_argument("--by-family", action="store_true", help="also the worst per family and quantity")
    ap.add_argument("--failures", action="store_true", help="list every value out of the test's bound")
    args = ap.parse_args()
    fams = [f for f in args.families.split(",") if f]
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        sys.exit(f"unknown families {unknown}")
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    t0 = time.perf_counter()
    table: dict[str, dict] = {}
    fam_table: dict[tuple, dict] = {}
    skips: collections.Counter = collections.Counter()
    fails = []

    def new():
        return {"n": 0, "nan": 0, "skipped": 0, "fail": 0, "mis": 0, "mis_bad": 0, "ulp": (-1.0, None), "ulp_cr": (-1.0, None),
                "uref": (-1.0, None), "unresolved": 0, "zero_scale": 0}

    for r in measure(args.seed, args.per_quantity, fams):
        s = table.setdefault(r.dtype, new())
        f = fam_table.setdefault((r.family, r.quantity), new())
        if r.status.startswith("skip"):
            s["skipped"] += 1
            f["skipped"] += 1
            skips[r.status[5:]] += 1
            continue
        if r.status == "nan":  # a nan output and a nan gradient: the class agrees, no error to measure
            s["nan"] += 1
            continue
        for acc in (s, f):
            acc["n"] += 1
            acc["fail"] += r.status == "fail"
            acc["mis"] += bool(r.misrounded)
            acc["mis_bad"] += r.misrounded == "not excused"
            if r.err_ulp > acc["ulp"][0]:
                acc["ulp"] = (r.err_ulp, r)
            if r.bound_ulp < 0.5 and r.err_ulp > acc["ulp_cr"][0]:
                acc["ulp_cr"] = (r.err_ulp, r)
            if math.isnan(r.err_uref):
                acc["unresolved"] += 1
            elif math.isinf(r.err_uref) and r.status != "fail":
                acc["zero_scale"] += 1
            elif r.err_uref > acc["uref"][0]:
                acc["uref"] = (r.err_uref, r)
        if r.status == "fail":
            fails.append(r)

    def cell(pair, dtype=False):
        v, r = pair
        if r is None:
            return "- | -"
        return f"{v:.2g} | {_where(r)}{' [' + r.dtype + ']' if dtype else ''}"

    print("| tested dtype | graded against | values checked | skipped | worst error (ulp of the dtype) | where "
          "| worst where B·u_ref·scale < ½ ulp (ulp) | where | worst error (u_ref·scale) | where | over the bound "
          "| misrounded (not excused) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in DTYPES:
        s = table.get(d)
        if s:
            print(f"| {d} | {reference_precision(d)[1]} | {s['n']:,} | {s['skipped']:,} | {cell(s['ulp'])} | "
                  f"{cell(s['ulp_cr'])} | {cell(s['uref'])} | {s['fail']:,} | {s['mis']:,} ({s['mis_bad']:,}) |")
    n = sum(s["n"] for s in table.values())
    print(f"\n{n:,} values checked, {sum(s['nan'] for s in table.values()):,} nan outputs with a nan gradient, "
          f"{sum(skips.values()):,} skipped: "
          + ", ".join(f"{k} {v:,}" for k, v in skips.most_common()))
    unresolved = sum(s["unresolved"] for s in table.values())
    zero_scale = sum(s["zero_scale"] for s in table.values())
    print(f"u_ref·scale not resolved by mpmath (the check's 2**{tg.TOL_FLOOR_EXP}·ulp floor dominates): "
          f"{unresolved:,}; oracle scale 0 but exact value off it by less than that floor: {zero_scale:,}")
    if args.by_family:
        print("\n| family | quantity | values checked | skipped | worst (ulp of the dtype) | where "
              "| worst (u_ref·scale) | where | over the bound |")
        print("|---|---|---|---|---|---|---|---|---|")
        for (fam, q), f in sorted(fam_table.items()):
            print(f"| {fam} | {q} | {f['n']:,} | {f['skipped']:,} | {cell(f['ulp'], True)} | "
                  f"{cell(f['uref'], True)} | {f['fail']:,} |")
    print(f"\n{len(fails)} value(s) over the bound |oracle - exact| <= {tg.TOL_UREF}*u_ref*scale + "
          f"2**{tg.TOL_FLOOR_EXP}*ulp_dtype(exact)")
    if args.failures:
        for r in sorted(fails, key=lambda r: -r.err_uref):
            print(f"  {r.case} | {r.family} | {r.quantity} | {r.dtype} | {r.conv or '{}'} | {r.index} | oracle "
                  f"{r.oracle!r} | scale {r.scale!r} | mpmath {mp.nstr(r.exact, 25)} | {r.err_uref:.3g} u_ref*scale, "
                  f"{r.err_ulp:.3g} ulp")
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
