"""Measure harness.oracle's error against the mpmath reference (harness.mpref, 128 bits) on
the whole built-in corpus, in ulps of each tested dtype.

    .venv/bin/python tests/measure_reference_error.py [--seed N]

Prints, per dtype: the reference the harness grades that dtype against, the number of values
compared (every case in every dtype it runs in, under each applicable convention set), the
worst error in ulps with the case, conventions and element where it occurs, and how many
values the harness rounds (dtypes.to_dtype of the oracle's value) to something other than the
correctly rounded exact value: "unavoidable" when the exact value lies within the oracle's
error of a rounding midpoint, "avoidable" otherwise (a bug). Then the problems
mpref.oracle_problems finds (bound: mpref.ORACLE_ERROR_BOUND_ULP), known bugs included.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from cases.generator import build_corpus  # noqa: E402
from harness import mpref  # noqa: E402
from harness.spec import DTYPES  # noqa: E402


def measure(seed: int = 0):
    """Yield (record, problems) for every mpref.compare_case record over the corpus."""
    for case in build_corpus(seed, invalid=False):
        for d in case.dtypes or DTYPES:
            for r in mpref.compare_case(case, d):
                yield r, mpref.oracle_problems([r], d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    table: dict[str, dict] = {}
    problems: list[str] = []
    for r, probs in measure(args.seed):
        d = r["dtype"]
        s = table.setdefault(d, {"reference": r["reference"], "n": 0, "worst": -1.0, "where": "",
                                 "misrounded": 0, "avoidable": 0, "worst_clean": -1.0, "where_clean": ""})
        u = np.atleast_1d(r["ulps"])
        s["n"] += u.size
        finite = np.where(np.isfinite(u), u, -1.0)
        if finite.size:
            i = int(np.argmax(finite))
            idx = tuple(int(j) for j in np.unravel_index(i, r["ulps"].shape)) if r["ulps"].ndim else ()
            where = f"{r['case']} {r['conventions'] or ''} element {idx}".replace("  ", " ")
            if finite.max() > s["worst"]:
                s["worst"], s["where"] = float(finite.max()), where
            if not probs and finite.max() > s["worst_clean"]:
                s["worst_clean"], s["where_clean"] = float(finite.max()), where
        s["misrounded"] += int(np.count_nonzero(~np.atleast_1d(r["rounds_ok"])))
        s["avoidable"] += sum("to_dtype(oracle)" in p for p in probs)
        problems += probs
    print(f"{'dtype':9} {'graded against':20} {'values':>7} {'worst ulp':>10} {'misrounded':>10} "
          f"{'avoidable':>9}  where")
    for d in DTYPES:
        s = table.get(d)
        if s:
            print(f"{d:9} {s['reference']:20} {s['n']:7d} {s['worst']:10.3g} {s['misrounded']:10d} "
                  f"{s['avoidable']:9d}  {s['where']}")
    print("\nexcluding the records with a problem (below):")
    for d in DTYPES:
        s = table.get(d)
        if s:
            print(f"{d:9} worst {s['worst_clean']:10.3g} ulp  {s['where_clean']}")
    print(f"\n{len(problems)} problem(s) at the bounds {mpref.ORACLE_ERROR_BOUND_ULP}:")
    for p in problems[:40]:
        print("  " + p)
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
