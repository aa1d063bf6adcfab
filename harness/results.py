"""The results table on disk: DIR/results.parquet, DIR/results.csv, DIR/run.json.
This table is the single interface between running and reporting."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pandas as pd

from harness.dtypes import LONGDOUBLE_BITS
from harness.tolerance import BASE_ULP


def _atomic_write(path: str, write) -> None:
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


def save(df: pd.DataFrame, out_dir: str) -> None:
    _atomic_write(os.path.join(out_dir, "results.parquet"), lambda p: df.to_parquet(p, index=False))
    _atomic_write(os.path.join(out_dir, "results.csv"), lambda p: df.to_csv(p, index=False))


def load(run_dir: str) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(run_dir, "results.parquet"))


def git_revision() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def api_table(frameworks) -> list[dict]:
    """Each API's declaration as data, for reports (parameter coverage) without the registry."""
    import adapters
    from harness.spec import PARAMS

    from harness.spec import FAMILIES

    def cell(a, p):
        """The argument `p` maps to; how a consumed one is applied; the fixed axis; or None."""
        if p in a.params and a.params[p] is not None:
            return a.params[p]
        if p in a.params and a.prepare_targets and p in a.prepare_targets[1].values():
            kw = next(k for k, v in a.prepare_targets[1].items() if v == p)
            return f"{a.prepare_targets[0]}(labels, {kw}=...)"
        if p in a.params and a.derive is not None:
            return "sampled_values"
        if p == "axis" and p in FAMILIES[a.family].params:
            return f"fixed {a.class_axis}"
        return None

    out = []
    for a in adapters.all_apis(frameworks):
        params = {p: cell(a, p) for p in PARAMS if p != "reduction"}
        out.append({"framework": a.framework, "api": a.id, "family": a.family, "params": params,
                    "reductions": {r: a.reduction_values.get(r, r) for r in a.reductions},
                    "reduction_arg": a.reduction_arg, "fixed": {k: repr(v) for k, v in a.fixed.items()},
                    "composition": "; ".join(
                        ([f"{a.prepare[0]} on the inputs, then {a.name}"] if a.prepare else [])
                        + ([f"{a.prepare_targets[0]} on the targets, then {a.name}"] if a.prepare_targets else [])),
                    "dtypes": list(a.dtypes), "conventions": {k: a.convention(k) for k in ("mean", "axis_mean")}})
    return out


def run_metadata(*, versions: dict, seed: int, cases_source: str, frameworks, dtypes, elapsed_s: float) -> dict:
    return {
        "apis": api_table(frameworks),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "seed": seed,
        "cases": cases_source,
        "frameworks": list(frameworks),
        "dtypes": list(dtypes),
        "versions": {**versions, "numpy": np.__version__, "python": sys.version.split()[0]},
        "platform": {"system": platform.platform(), "machine": platform.machine(),
                     "processor": platform.processor(), "cpus": os.cpu_count()},
        "device": "cpu",
        "reference": {"float16/bfloat16/float32": "float64 numpy",
                      "float64": f"numpy longdouble ({LONGDOUBLE_BITS}-bit significand)"},
        "tolerance_ulp": {d: f"{b} + ceil(log2 n)" for d, b in BASE_ULP.items()},
        "elapsed_s": round(elapsed_s, 2),
    }


def save_metadata(meta: dict, out_dir: str) -> None:
    _atomic_write(os.path.join(out_dir, "run.json"),
                  lambda p: open(p, "w").write(json.dumps(meta, indent=2, sort_keys=True) + "\n"))


def load_metadata(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "run.json")) as f:
        return json.load(f)
