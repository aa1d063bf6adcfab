"""Measure harness.oracle's error against the mpmath reference (harness.mpref, 128 bits) on
the whole built-in corpus, in ulps of each tested dtype.

    .venv/bin/python tests/measure_reference_error.py [--seed N]

Prints, per dtype: the reference precision used, the number of graded values, the worst
error in ulps with the case, conventions and element where it occurs, and how many values
round (the harness's way: dtypes.to_dtype) to something other than the correctly rounded
mpmath value.
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
    """Yield every compare_case record over the corpus (each dtype a case runs in)."""
    for case in build_corpus(seed):
        for d in case.dtypes or DTYPES:
            yield from mpref.compare_case(case, d)


def summarize(records) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for r in records:
        d = r["dtype"]
        s = table.setdefault(d, {"reference": r["reference"], "n": 0, "worst": -1.0, "where": None,
                                 "misrounded": [], "class_mismatch": []})
        u = r["ulps"]
        s["n"] += u.size
        if u.size:
            i = np.unravel_index(int(np.argmax(u)), u.shape) if u.ndim else ()
            if float(u[i]) > s["worst"]:
                s["worst"] = float(u[i])
                s["where"] = (r["case"], r["conventions"], tuple(int(j) for j in i))
        for i in zip(*np.nonzero(~r["rounds_ok"].reshape(u.shape if u.ndim else (1,)))):
            s["misrounded"].append((r["case"], r["conventions"], tuple(int(j) for j in i)))
        for i in zip(*np.nonzero(~r["class_ok"].reshape(u.shape if u.ndim else (1,)))):
            s["class_mismatch"].append((r["case"], r["conventions"], tuple(int(j) for j in i)))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    table = summarize(measure(args.seed))
    print(f"{'dtype':9} {'reference':24} {'values':>7} {'worst ulp':>10}  misrounded  where")
    for d in DTYPES:
        s = table.get(d)
        if not s:
            continue
        case, conv, idx = s["where"]
        where = f"{case} {conv or ''} element {idx}".replace("  ", " ")
        print(f"{d:9} {s['reference']:24} {s['n']:7d} {s['worst']:10.3g}  {len(s['misrounded']):10d}  {where}")
    for d in DTYPES:
        s = table.get(d)
        for kind in ("misrounded", "class_mismatch"):
            for case, conv, idx in (s or {}).get(kind, [])[:20]:
                print(f"  {kind} [{d}] {case} {conv or ''} element {idx}")
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
