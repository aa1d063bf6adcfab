"""What changed between runs: `xentc diff RUN_A RUN_B` and the version matrix.

Rows are matched on (framework, api, case_id, dtype, quantity). Between A and B a row is
  newly broken   match in A, failing in B (any of spec.FAILING);
  newly fixed    failing in A, match in B;
  changed        failing in both, with a different status (discrepancy -> crashed, ...);
  ULP changed    graded in both (match or discrepancy) and its max_ulp_finite moved by at least a
                 factor `ulp_factor` (counted as (u + 1) so 0 -> 1 ulp is a factor 2);
  added/removed  present in one run only (a new case, API or dtype).
`unsupported` rows are not compared: what an API can express is the registry's, not the run's.
The exit status of `xentc diff` is 1 when anything newly broke, so a CI job can gate on it.

The version matrix lines up N runs (e.g. one per TensorFlow release, from the opt-in tox
environments) and keeps the rows whose status or ULP class differs between any two of them.
"""
from __future__ import annotations

import json
import math
import os

import pandas as pd

from harness import report
from harness.spec import FAILING

KEY = ["framework", "api", "case_id", "dtype", "quantity"]
GRADED = ("match", "discrepancy")
DEFAULT_ULP_FACTOR = 2.0
#: at most this many rows listed per section (every count is exact)
LIST_MAX = 200


def load_run(run_dir: str) -> tuple[pd.DataFrame, dict]:
    from harness import results

    df = results.load(run_dir)
    with open(os.path.join(run_dir, "run.json")) as f:
        meta = json.load(f)
    return df, meta


_ulp = report.as_float


def compare(a: pd.DataFrame, b: pd.DataFrame, ulp_factor: float = DEFAULT_ULP_FACTOR) -> dict[str, pd.DataFrame]:
    """The sections of a diff, each a DataFrame with KEY, status_a/b, ulp_a/b, case and inputs."""
    cols = KEY + ["status", "max_ulp", "max_ulp_finite", "worst_input", "detail"]

    def prep(df):
        d = df[df.status != "unsupported"].copy()
        for c in cols:
            if c not in d:
                d[c] = math.nan if c.startswith("max") else ""
        d["ulp"] = pd.to_numeric(d["max_ulp_finite"], errors="coerce")
        d["ulp"] = d["ulp"].where(d["ulp"].notna(), pd.to_numeric(d["max_ulp"], errors="coerce"))
        return d[KEY + ["status", "ulp", "worst_input", "detail"]]

    m = prep(a).merge(prep(b), on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    both = m[m._merge == "both"]
    fa, fb = both.status_a.isin(FAILING), both.status_b.isin(FAILING)
    broken = both[(both.status_a == "match") & fb]
    fixed = both[fa & (both.status_b == "match")]
    changed = both[fa & fb & (both.status_a != both.status_b)]
    g = both[both.status_a.isin(GRADED) & both.status_b.isin(GRADED)]
    ra, rb = g.ulp_a.astype(float) + 1.0, g.ulp_b.astype(float) + 1.0
    moved = g[((rb / ra) >= ulp_factor) | ((ra / rb) >= ulp_factor)]
    out = {"newly broken": broken, "newly fixed": fixed, "changed failure": changed, "ULP changed": moved,
           "added": m[m._merge == "right_only"], "removed": m[m._merge == "left_only"]}
    return {k: v.drop(columns=["_merge"]).sort_values(KEY).reset_index(drop=True) for k, v in out.items()}


def _versions_changed(ma: dict, mb: dict) -> list[tuple[str, str, str]]:
    va, vb = ma.get("versions", {}), mb.get("versions", {})
    return [(k, str(va.get(k, "—")), str(vb.get(k, "—"))) for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]


def _fmt(v) -> str:
    return report.fmt_ulp(_ulp(v)) or "—"


def markdown(sections: dict[str, pd.DataFrame], ma: dict, mb: dict, name_a: str, name_b: str) -> str:
    md = report.md
    L = [f"# xentc diff: {md(name_a)} → {md(name_b)}", ""]
    ch = _versions_changed(ma, mb)
    L.append("Versions changed: " + (", ".join(f"{md(k)} {md(x)} → {md(y)}" for k, x, y in ch) if ch else "none"))
    L += ["", "| section | rows |", "|---|---|"] + [f"| {k} | {len(v)} |" for k, v in sections.items()] + [""]
    for name, d in sections.items():
        if d.empty or name in ("added", "removed"):
            continue
        L += [f"## {name} ({len(d)})", "", "| API | case | dtype | quantity | A | B | ULP A | ULP B |",
              "|---|---|---|---|---|---|---|---|"]
        for r in d.head(LIST_MAX).itertuples():
            L.append(f"| `{md(report.label(r.framework, r.api))}` | `{md(r.case_id)}` | {r.dtype} | {r.quantity} | "
                     f"{r.status_a} | {r.status_b} | {_fmt(r.ulp_a)} | {_fmt(r.ulp_b)} |")
        if len(d) > LIST_MAX:
            L.append(f"| … {len(d) - LIST_MAX} more | | | | | | | |")
        L.append("")
    for name in ("added", "removed"):
        d = sections[name]
        if not d.empty:
            per = d.groupby(["framework", "api"]).size().sort_values(ascending=False)
            L += [f"## {name} ({len(d)} rows)", ""] + [f"- `{md(report.label(fw, api))}`: {n}"
                                                      for (fw, api), n in per.head(40).items()] + [""]
    return "\n".join(L) + "\n"


def _rows(d: pd.DataFrame) -> list[dict]:
    return [{"framework": r.framework, "api": r.api, "label": report.label(r.framework, r.api), "case": r.case_id,
             "dtype": r.dtype, "quantity": r.quantity, "status_a": r.status_a if isinstance(r.status_a, str) else "",
             "status_b": r.status_b if isinstance(r.status_b, str) else "", "ulp_a": _fmt(r.ulp_a),
             "ulp_b": _fmt(r.ulp_b)} for r in d.head(LIST_MAX).itertuples()]


def html_context(sections, ma, mb, name_a, name_b) -> dict:
    return {"name_a": name_a, "name_b": name_b, "versions_changed": _versions_changed(ma, mb),
            "sections": [{"name": k, "n": len(v), "rows": _rows(v), "more": max(0, len(v) - LIST_MAX),
                          "id": k.replace(" ", "-")} for k, v in sections.items()]}


def version_matrix(runs: list[tuple[str, pd.DataFrame, dict]]) -> dict:
    """Columns: one per run, labelled by the versions that differ between the runs; rows: the
    (framework, api, case, dtype, quantity) whose status or ULP class (log2 bucket) differs."""
    keys = set()
    for _, d, _ in runs:
        keys |= set(map(tuple, d[d.status != "unsupported"][KEY].itertuples(index=False)))
    all_versions = [m.get("versions", {}) for _, _, m in runs]
    vary = sorted({k for v in all_versions for k in v if len({str(x.get(k)) for x in all_versions}) > 1})
    labels = [", ".join(f"{k} {v.get(k, '—')}" for k in vary) or name for (name, _, _), v in zip(runs, all_versions)]
    idx = [d.set_index(KEY) for _, d, _ in runs]
    rows = []
    for key in sorted(keys):
        cells = []
        for d in idx:
            if key in d.index:
                r = d.loc[key]
                r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                u = _ulp(r.get("max_ulp_finite"))
                u = u if u == u else _ulp(r.get("max_ulp"))
                cells.append({"status": r.status, "ulp": _fmt(u),
                              "bucket": -1 if u != u else (math.inf if math.isinf(u) else int(math.log2(u + 1)))})
            else:
                cells.append(None)
        sig = {(c["status"], c["bucket"]) if c else None for c in cells}
        if len(sig) > 1:
            fw, api, case, dtype, q = key
            rows.append({"framework": fw, "api": api, "label": report.label(fw, api), "case": case, "dtype": dtype,
                         "quantity": q, "cells": cells})
    return {"labels": labels, "names": [n for n, _, _ in runs], "rows": rows[:LIST_MAX * 5],
            "n_rows": len(rows), "n_keys": len(keys)}


def version_markdown(vm: dict) -> str:
    md = report.md
    L = ["# Version matrix", "", f"{vm['n_rows']} of {vm['n_keys']} rows differ between the runs.", "",
         "| API | case | dtype | quantity | " + " | ".join(md(x) for x in vm["labels"]) + " |",
         "|---|---|---|---|" + "---|" * len(vm["labels"])]
    for r in vm["rows"]:
        cells = [("—" if c is None else f"{c['status']} {c['ulp']}") for c in r["cells"]]
        L.append(f"| `{md(r['label'])}` | `{md(r['case'])}` | {r['dtype']} | {r['quantity']} | " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


def write_pages(out_dir: str, *, diff_ctx: dict | None = None, versions_ctx: dict | None = None,
                meta: dict | None = None, nav=None) -> list[str]:
    """Render diff.html / versions.html into out_dir with the site's template and assets. nav:
    the site's navigation when the pages join a site; by default they link only to each other."""
    import shutil

    from harness import website

    os.makedirs(out_dir, exist_ok=True)
    env = website._env()
    written = []
    for asset in ("style.css", "site.js"):
        if not os.path.exists(os.path.join(out_dir, asset)):
            shutil.copyfile(os.path.join(website.TEMPLATES, asset), os.path.join(out_dir, asset))
    if nav is None:
        nav = ([("diff.html", "Diff")] if diff_ctx is not None else []) + \
              ([("versions.html", "Versions")] if versions_ctx is not None else [])
    common = {"meta": meta or {"versions": {}}, "title": "Cross-entropy conformance", "nav": nav}
    if diff_ctx is not None:
        p = os.path.join(out_dir, "diff.html")
        website.render_page(env, "diff.html", p, "", page="diff.html", d=diff_ctx, **common)
        written.append(p)
    if versions_ctx is not None:
        p = os.path.join(out_dir, "versions.html")
        website.render_page(env, "versions.html", p, "", page="versions.html", vm=versions_ctx, **common)
        written.append(p)
    return written


def cmd_diff(args) -> int:
    from harness.cli import _run_dir, _writable_dir

    a_dir, b_dir = _run_dir(args.run_a), _run_dir(args.run_b)
    if not args.ulp_factor > 1:
        from harness.cli import UsageError

        raise UsageError(f"--ulp-factor must be > 1 (got {args.ulp_factor})")
    a, ma = load_run(a_dir)
    b, mb = load_run(b_dir)
    sections = compare(a, b, args.ulp_factor)
    text = markdown(sections, ma, mb, args.run_a, args.run_b)
    if args.out:
        out = _writable_dir(args.out)
        with open(os.path.join(out, "diff.md"), "w") as f:
            f.write(text)
        write_pages(out, diff_ctx=html_context(sections, ma, mb, args.run_a, args.run_b), meta=mb)
    if not args.quiet:
        print(text, end="")
    else:
        print(", ".join(f"{k} {len(v)}" for k, v in sections.items()))
    return 1 if len(sections["newly broken"]) else 0


def cmd_versions(args) -> int:
    from harness.cli import _run_dir, _writable_dir

    runs = []
    for d in args.run_dirs:
        df, meta = load_run(_run_dir(d))
        runs.append((d, df, meta))
    vm = version_matrix(runs)
    text = version_markdown(vm)
    if args.out:
        out = _writable_dir(args.out)
        with open(os.path.join(out, "versions.md"), "w") as f:
            f.write(text)
        write_pages(out, versions_ctx=vm, meta=runs[-1][2])
    print(text if not args.quiet else f"{vm['n_rows']} of {vm['n_keys']} rows differ\n", end="")
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("diff", help="what changed between two runs (exit 1 when something newly broke)")
    d.add_argument("run_a", metavar="RUN_A", help="the earlier run directory")
    d.add_argument("run_b", metavar="RUN_B", help="the later run directory")
    d.add_argument("--out", metavar="DIR", help="also write DIR/diff.md and DIR/diff.html")
    d.add_argument("--ulp-factor", type=float, default=DEFAULT_ULP_FACTOR,
                   help="report a graded row's ULP change of at least this factor (default: 2)")
    d.add_argument("-q", "--quiet", action="store_true", help="print the section counts, not the Markdown")
    d.set_defaults(func=cmd_diff)
    v = sub.add_parser("versions", help="line up runs of different framework versions: rows whose behaviour differs")
    v.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories, oldest first")
    v.add_argument("--out", metavar="DIR", help="also write DIR/versions.md and DIR/versions.html")
    v.add_argument("-q", "--quiet", action="store_true", help="print the count of differing rows only")
    v.set_defaults(func=cmd_versions)
