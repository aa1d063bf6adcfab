"""report.md from a results table: compatibility matrix, worst findings, and every
discrepancy group with its worst input and a runnable repro (also saved under repro/).

Reads only the results table and run metadata (the single interface between running and
reporting), and the committed `xentc scan` certificates (cases/certified/*.json). Everything from the table is escaped before it goes into Markdown.
"""
from __future__ import annotations

import glob
import hashlib
import html
import json
import os
import re

import numpy as np
import pandas as pd

from harness import condition, expectations, oracle
from harness.spec import FAILING, PARAMS, STATUSES
from harness.tolerance import table as tolerance_table

CERTIFIED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cases", "certified")

#: severity order, worst first
SEVERITY = ["crashed", "raised", "silent_value", "no_gradient", "nonfinite_mismatch", "discrepancy", "silent_nan",
            "rejected", "match", "unsupported"]
CELL = {"crashed": "CRASH", "raised": "RAISE", "no_gradient": "NOGRAD", "nonfinite_mismatch": "NONFINITE",
        "discrepancy": "ULP", "match": "ok", "unsupported": "·", "silent_value": "SILENT", "silent_nan": "NAN",
        "rejected": "REJECT"}
QUANTITY_ABBR = {"loss": "loss", "grad_logits": "∂inputs", "grad_targets": "∂targets", "grad_weights": "∂weights"}
DTYPE_ABBR = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
INLINE_REPRO_MAX = 1500


def md(text) -> str:
    """Escape a value for a Markdown table cell / text (HTML-escaped, pipes and backticks neutralised)."""
    s = html.escape(str(text), quote=False)
    return s.replace("|", "\\|").replace("`", "&#96;").replace("\r", " ").replace("\n", " ")


def _peaks(meta: dict) -> str:
    """'; peak memory: parent N MiB, torch M MiB, ...' from run.json's peak_rss_mib (the peak
    resident memory of the runner and of each framework's worker processes), or ''."""
    peaks = {k: v for k, v in (meta.get("peak_rss_mib") or {}).items() if v is not None}
    if not peaks:
        return ""
    order = ["parent", *meta.get("frameworks", [])]  # the runner first, then the frameworks as run
    keys = sorted(peaks, key=lambda k: (order.index(k) if k in order else len(order), k))
    return "; peak memory: " + ", ".join(f"{'runner' if k == 'parent' else md(k)} {float(peaks[k]):.0f} MiB"
                                         for k in keys)


def as_float(v) -> float:
    """v as a float; nan where it is not a number (a blank cell, None)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def fmt_ulp(v: float) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if np.isinf(v):
        return "inf"
    return f"{v:.0f}" if v < 1e5 else f"{v:.1e}"


def safe_name(*parts: str) -> str:
    """A file name that cannot leave its directory: [A-Za-z0-9._-] only, plus a hash."""
    raw = "__".join(parts)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._")[:100] or "case"
    return f"{stem}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}.py"


def _worst(group: pd.DataFrame) -> pd.Series:
    order = group["status"].map({s: i for i, s in enumerate(SEVERITY)})
    g = group.assign(_sev=order, _ulp=group["max_ulp"].fillna(-1))
    return g.sort_values(["_sev", "_ulp"], ascending=[True, False]).iloc[0]


def label(framework: str, api: str) -> str:
    """An API's name in the report: Keras 3 ids repeat on every backend, so they carry it."""
    return f"{api} · {framework}" if framework.startswith("keras[") else api


# --- invalid input (harness.badinput) ----------------------------------------------------------------
INVALID_CATEGORY = "invalid"
#: worst first: what a bad-input cell shows of its rows
BAD_SEVERITY = ["crashed", "silent_value", "silent_nan", "rejected", "unsupported"]
BAD_CELL = {"crashed": "CRASH", "silent_value": "VALUE", "silent_nan": "nan", "rejected": "raises", "unsupported": "·"}


def reading_of(detail: str) -> str:
    """The reading a silent_value row's detail names ('likely ...'), or ''."""
    m = re.search(r"; likely (.*)$", str(detail))
    return m.group(1) if m else ""


def bad_input_tables(df: pd.DataFrame) -> list[dict]:
    """The bad-input table, one per family: rows the APIs of the family, columns the invalid
    kinds generated for it, each cell the worst behaviour over the kind's cases:
    {"family", "kinds": [name], "rows": [{"framework", "api", "label", "cells": [cell or None]}]},
    cell = {"status", "text", "detail", "rows", "known"}."""
    from harness.badinput import KINDS

    bad = df[df["invalid"].fillna("").astype(str) != ""] if "invalid" in df else df.iloc[:0]
    out = []
    for fam in [f for f in dict.fromkeys(bad.family)]:
        g = bad[bad.family == fam]
        kinds = [k for k in KINDS if k in set(g["invalid"])]
        rows = []
        for (fw, api), h in g.groupby(["framework", "api"], sort=True):
            cells = []
            for k in kinds:
                sub = h[h["invalid"] == k]
                if sub.empty:
                    cells.append(None)
                    continue
                order = sub.status.map({st: i for i, st in enumerate(BAD_SEVERITY)}).fillna(len(BAD_SEVERITY))
                w = sub.assign(_o=order).sort_values("_o", kind="stable").iloc[0]
                text = BAD_CELL.get(w.status, w.status)
                if w.status == "rejected":
                    text = "raises " + str(w.detail).split(":")[0][:40]
                cells.append({"status": w.status, "text": text, "detail": str(w.detail), "rows": len(sub),
                              "known": bool(w.get("known", False)), "case_id": w.case_id})
            rows.append({"framework": fw, "api": api, "label": label(fw, api), "cells": cells})
        out.append({"family": fam, "kinds": kinds, "rows": rows})
    return out


def silent_values(df: pd.DataFrame) -> pd.DataFrame:
    """Every silent_value behaviour: one row per (kind, reading), with the APIs and a repro."""
    from harness.badinput import KINDS

    sv = df[df.status == "silent_value"] if "invalid" in df else df.iloc[:0]
    rows = []
    for (kind, reading), g in sv.assign(_r=sv.detail.map(reading_of)).groupby(["invalid", "_r"], sort=False):
        rows.append({"kind": kind, "judged": KINDS[kind].judged if kind in KINDS else True,
                     "description": KINDS[kind].description if kind in KINDS else kind,
                     "reading": reading or "none of the readings tried",
                     "apis": sorted({label(f, a) for f, a in zip(g.framework, g.api)}), "rows": len(g),
                     "example": g.iloc[0]})
    order = {k: i for i, k in enumerate(KINDS)}
    rows.sort(key=lambda r: (order.get(r["kind"], 99), r["reading"] == "none of the readings tried", -r["rows"]))
    return rows


def bad_input(df: pd.DataFrame) -> list[str]:
    """The report's section on invalid input: a table per family, then every silent value."""
    from harness.badinput import KINDS

    tables = bad_input_tables(df)
    if not tables:
        return []
    L = ["## Invalid input", "",
         "What each API does with input outside the loss's domain (harness/badinput.py; case ids `invalid/<family>/<kind>-<reduction>`, "
         "float32). Cell: the worst behaviour over the kind's cases: `raises <type>` rejected it, `nan` returned nan "
         "(silent_nan), **`VALUE`** returned numbers (silent_value: the dangerous one), `CRASH` the worker died, `·` the "
         "API cannot express the case (e.g. it has no such parameter). Kinds marked † are recorded, not judged: "
         "some APIs accept them on purpose.", "",
         "| kind | what is wrong |", "|---|---|"]
    L += [f"| `{k.name}`{'' if k.judged else ' †'} | {md(k.description)} |" for k in KINDS.values()] + [""]
    for t in tables:
        L += [f"### {md(t['family'])}", "",
              "| API | " + " | ".join(f"`{k}`{'' if KINDS[k].judged else ' †'}" for k in t["kinds"]) + " |",
              "|---|" + "---|" * len(t["kinds"])]
        for r in t["rows"]:
            cells = ["" if c is None else (f"**{c['text']}**" if c["status"] == "silent_value" else md(c["text"]))
                     for c in r["cells"]]
            L.append(f"| `{md(r['label'])}` | " + " | ".join(cells) + " |")
        L.append("")
    sv = silent_values(df)
    if sv:
        L += ["### Silent values", "",
              "Every silent_value found, by kind and by the reading of the input the returned values matched "
              "(the reference evaluated on the input read that way, to 1e-3).", "",
              "| kind | returned values match | APIs | rows | example |", "|---|---|---|---|---|"]
        for r in sv:
            ex = r["example"]
            apis = ", ".join(f"`{md(a)}`" for a in r["apis"][:8]) + (f", … ({len(r['apis'])} APIs)" if len(r["apis"]) > 8 else "")
            L.append(f"| `{r['kind']}`{'' if r['judged'] else ' †'} | {md(r['reading'])} | {apis} | {r['rows']} | "
                     f"`{md(ex.case_id)}`: {md(str(ex.detail).split('; likely')[0].split('; matches')[0])} |")
        L.append("")
    return L


def matrix(df: pd.DataFrame, by: str = "category") -> list[str]:
    """API x (`by`, dtype): the worst status and largest graded ULP error of each cell. by:
    "category" (the loss matrix) or "quantity" (the gradient matrix: every case together)."""
    if by == "category":
        cats = [c for c in ["baseline", "extreme", "soft_labels", "weights", "shapes"] if c in set(df.category)]
        cats += sorted(set(df.category) - set(cats))
    else:
        cats = [q for q in QUANTITY_ABBR if q in set(df.quantity)]
    dts = [d for d in DTYPE_ABBR if d in set(df.dtype)]
    cols = [(c, d) for c in cats for d in dts]
    head = (lambda c: md(c)) if by == "category" else (lambda c: QUANTITY_ABBR[c])
    lines = ["| API | " + " | ".join(f"{head(c)} {DTYPE_ABBR[d]}" for c, d in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for (fw, api), g in df.groupby(["framework", "api"], sort=True):
        cells = []
        for c, d in cols:
            sub = g[(g[by] == c) & (g.dtype == d)]
            if sub.empty:
                cells.append("")
                continue
            w = _worst(sub)
            ulp_max = sub.loc[sub.status.isin(["match", "discrepancy"]), "max_ulp"].max()
            txt = CELL[w.status]
            if w.status in ("match", "discrepancy") and not np.isnan(ulp_max):
                txt += f" {fmt_ulp(ulp_max)}"
            cells.append(txt)
        lines.append(f"| `{md(label(fw, api))}` | " + " | ".join(cells) + " |")
    return lines


def coverage(apis: list[dict]) -> list[str]:
    """API x canonical parameter: the argument it maps to, or not expressible."""
    if not apis:
        return []
    params = sorted(apis[0]["params"], key=lambda p: (list(PARAMS).index(p) if p in PARAMS else len(PARAMS), p))
    L = ["## Parameter coverage", "",
         "Each canonical parameter and the argument an API takes it as; `—` not expressible; "
         "`fixed 1`: the API has no axis argument and its class axis is that one (PyTorch: 1); a "
         "qualified call: expressible only through that composition. "
         "Reductions name the API's own value where it differs (Keras' `sum_over_batch_size`).", "",
         "| API | family | " + " | ".join(params) + " | reductions | fixed | composition |",
         "|---|---|" + "---|" * len(params) + "---|---|---|"]
    for a in apis:
        cells = [f"`{md(a['params'][p])}`" if a["params"].get(p) else "—" for p in params]
        red = ", ".join(r if v == r else f"{r} (`{md(v)}`)" for r, v in a["reductions"].items())
        if a.get("reduction_arg"):
            red += f" via `{md(a['reduction_arg'])}`"
        fixed = ", ".join(f"{md(k)}={md(v)}" for k, v in a["fixed"].items())
        L.append(f"| `{md(label(a['framework'], a['api']))}` | {md(a['family'])} | " + " | ".join(cells)
                 + f" | {red} | {fixed} | {md(a['composition'])} |")
    return L + [""]


SEMANTIC_KINDS = ("by-design", "convention")


def differences(df: pd.DataFrame, known) -> list[str]:
    """Two tables, one row per known behaviour (an expectations entry): semantic differences by
    design (documented conventions, clipping, dtype policies) apart from numerical
    discrepancies (precision lost, bugs). Each row: the APIs it covers, an example, the reason.
    `df` is annotated (expectations.annotate)."""
    by_entry: dict[int, list] = {}
    for r in df[df.known].itertuples():
        by_entry.setdefault(r.known_entry, [known[r.known_entry], []])[1].append(r)
    out: list[str] = []
    for title, kinds in (("Semantic differences by design", SEMANTIC_KINDS),
                         ("Numerical discrepancies", ("precision", "bug"))):
        entries = [(k, rows) for k, rows in by_entry.values() if k.kind in kinds]
        out += [f"## {title}", "",
                ("Documented or deliberate conventions that differ from the mathematics (or between APIs a user "
                 "would take as interchangeable): what each returns and why." if kinds == SEMANTIC_KINDS else
                 "APIs missing the value of their own documented definition: precision lost or wrong results."),
                "", "| kind | APIs (rows) | example: case, input | reference | framework | why | source |",
                "|---|---|---|---|---|---|---|"]
        if not entries:
            out += ["| | none in this run | | | | | |", ""]
            continue
        for k, rows in entries:
            names = sorted({label(r.framework, r.api) for r in rows})
            shown = ", ".join(f"`{md(n)}`" for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            ex = max(rows, key=lambda r: (r.status == "nonfinite_mismatch", np.nan_to_num(r.max_ulp, posinf=1e300)))
            out.append(f"| {k.kind} | {shown} ({len(rows)}) | `{md(ex.case_id)}` {ex.dtype}: {md(ex.worst_input)} "
                       f"| {ex.expected:.9g} | {ex.actual:.9g} ({md(label(ex.framework, ex.api))}) | {md(k.reason)} "
                       f"| {md(k.ref) if k.ref else ''} |")
        out.append("")
    return out


def backend_disagreements(df: pd.DataFrame, limit: int = 60) -> list[str]:
    """Where the same Keras 3 call gives a different status on different backends, and why
    (the expectations that explain each backend's row)."""
    k = df[df.framework.str.startswith("keras[") & (df.status != "unsupported")]
    if k.empty or k.framework.nunique() < 2:
        return []
    rows = []
    for (api, case, dtype), g in k.groupby(["api", "case_id", "dtype"], sort=True):
        if g.status.nunique() > 1:
            rows.append((api, case, dtype, g))
    L = ["## Keras backends that disagree", "",
         f"The same `keras.losses` call on the same inputs, with a different outcome per backend: "
         f"{len(rows)} (API, case, dtype) combinations. Each cell: the backend's status and largest ULP "
         f"error on that case; the reasons are the expectations that cover the failing rows.", ""]
    if not rows:
        return L + ["None in this run.", ""]
    fws = sorted(k.framework.unique())
    L += ["| API | case | dtype | " + " | ".join(fws) + " | why |",
          "|---|---|---|" + "---|" * len(fws) + "---|"]
    for api, case, dtype, g in rows[:limit]:
        by = {r.framework: r for r in g.itertuples()}
        cells = [f"{by[f].status} ({fmt_ulp(by[f].max_ulp)} ulp)" if f in by else "" for f in fws]
        why = sorted({r.known_reason.split(":")[0] + ": " + r.known_reason.split(":", 1)[1][:110] + "…"
                      for r in g.itertuples() if r.known_reason})
        L.append(f"| `{md(api)}` | `{md(case)}` | {dtype} | "
                 + " | ".join(md(c) for c in cells) + " | " + md(" / ".join(why)) + " |")
    if len(rows) > limit:
        L.append(f"| … {len(rows) - limit} more in results.csv | | |" + " |" * len(fws) + " |")
    return L + [""]


EXHAUSTIVE = "exhaustive"
GRADED = ("match", "discrepancy", "nonfinite_mismatch")


def _reference_error(dtype: str, quantity: str) -> str:
    """The reference's own stated worst error (harness.mpref / harness.oracle)."""
    from harness.mpref import ORACLE_ERROR_BOUND_ULP
    from harness.oracle import GRAD_ERROR_BOUND_UREF

    if quantity == "loss":
        return f"≤ {ORACLE_ERROR_BOUND_ULP[dtype]:g}"
    return f"≤ {GRAD_ERROR_BOUND_UREF}·u·(P+N)"


def accuracy_rows(df: pd.DataFrame, certificates=(), quantity: str = "loss") -> pd.DataFrame:
    """One row per (framework, api, dtype): the largest finite ULP error over the exhaustive cases
    (certified: an upper bound over their domain) and over every other case (searched: a lower
    bound), the input of each, the condition number and error kind at the searched worst, and
    whether any row had a nonfinite mismatch. `certificates`: `xentc scan` results (dicts), each
    an upper bound over its own domain, which join the exhaustive figure of their dtype."""
    g = df[(df.quantity == quantity) & df.status.isin(GRADED)].copy()
    for col in ("max_ulp_finite", "cond", "cond_ulp"):  # absent from a results table before M4
        g[col] = pd.to_numeric(g[col], errors="coerce") if col in g else np.nan
    if "worst_input_finite" not in g:
        g["worst_input_finite"] = ""
    g["worst_input_finite"] = g["worst_input_finite"].fillna("").astype(str)
    g["max_ulp_finite"] = g["max_ulp_finite"].where(g["max_ulp_finite"].notna(),
                                                    pd.to_numeric(g["max_ulp"], errors="coerce").where(lambda v: np.isfinite(v)))
    out = []
    fixed = df[(df.category == EXHAUSTIVE) & (df.status == "unsupported")
               & df.detail.fillna("").str.startswith("reduction 'none' not expressible")]
    reduced_only = set(zip(fixed.framework, fixed.api, fixed.dtype))
    for (fw, api, dtype), rows in g.groupby(["framework", "api", "dtype"], sort=True):
        ex = rows[rows.category == EXHAUSTIVE]
        se = rows[rows.category != EXHAUSTIVE]
        rec = dict(framework=fw, api=api, dtype=dtype, certified_ulp=np.nan, certified_input="", certified_domain="",
                   searched_ulp=np.nan, searched_input="", searched_case="", cond=np.nan, cond_ulp=np.nan, kind="",
                   nonfinite=int((rows.status == "nonfinite_mismatch").sum()), reference_error=_reference_error(dtype, quantity))
        if ex.empty and (fw, api, dtype) in reduced_only:
            rec["certified_domain"] = "none: this entry fixes a reduction, so it has no unreduced output to certify"
        if not ex.empty:
            w = ex.loc[ex.max_ulp_finite.fillna(-1).idxmax()]
            rec.update(certified_ulp=float(w.max_ulp_finite), certified_input=w.worst_input_finite or w.worst_input,
                       certified_domain=", ".join(sorted({c.split("/", 1)[1].rsplit("-", 1)[0] for c in ex.case_id})),
                       cond=w.cond, cond_ulp=w.cond_ulp)
        if not se.empty and se.max_ulp_finite.notna().any():
            w = se.loc[se.max_ulp_finite.fillna(-1).idxmax()]
            rec.update(searched_ulp=float(w.max_ulp_finite), searched_input=w.worst_input_finite or w.worst_input,
                       searched_case=w.case_id)
            if not (rec["certified_ulp"] >= rec["searched_ulp"]):  # the condition at the overall worst
                rec.update(cond=w.cond, cond_ulp=w.cond_ulp)
        out.append(rec)
    for c in certificates:
        if c.get("complete") and quantity == "loss":
            k, line = _certificate_condition(c)
            out.append(dict(framework=c["framework"], api=c["api"], dtype=c["dtype"], certified_ulp=float(c["max_ulp"]),
                            certified_input=f"x={c['worst']['x']:.9g} ({c['worst']['x_bits']}) z={c['worst']['z']:g}",
                            certified_domain=f"{c['domain']} (xentc scan, {c['framework']} {c.get('framework_version', '')})",
                            searched_ulp=np.nan, searched_input="", searched_case="", cond=k, cond_ulp=line,
                            kind="", nonfinite=int(c.get("nonfinite_mismatches", 0)),
                            reference_error=_reference_error(c["dtype"], "loss") + " (scan: certified rounding)"))
    t = pd.DataFrame(out)
    if not t.empty:
        t["kind"] = [condition.error_kind(max(np.nan_to_num(a, nan=-1), np.nan_to_num(b, nan=-1)), l)
                     for a, b, l in zip(t.certified_ulp, t.searched_ulp, t.cond_ulp)]
    return t


def _certificate_condition(cert: dict) -> tuple[float, float]:
    """(cond, cond_ulp) at a scan certificate's worst input: its family's loss of one element."""
    try:
        w = cert["worst"]
        x, z = np.array([[float(w["x"])]]), np.array([[float(w["z"])]])
        params = {k: np.asarray(v, np.float64) for k, v in cert.get("params", {}).items()}
        conv = {"mean": "elements", "axis_mean": None}
        y = float(oracle.loss(cert["family"], x, z, params, conv, np.float64).reshape(-1)[0])
        k = float(condition.condition(cert["family"], x, z, params, conv, np.float64).reshape(-1)[0])
        return k, condition.cond_ulp(k, y, cert["dtype"], 1)
    except Exception:  # noqa: BLE001 - auxiliary: a figure it cannot form is left blank
        return float("nan"), float("nan")


def accuracy(df: pd.DataFrame, certificates=(), quantity: str = "loss") -> list[str]:
    t = accuracy_rows(df, certificates, quantity)
    if t.empty:
        return []
    what = "loss" if quantity == "loss" else f"gradient ({QUANTITY_ABBR[quantity]})"
    L = [f"## Accuracy table: {what}", "",
         "Largest finite ULP error per API and dtype, in the manner of the libm accuracy surveys. "
         "**Certified** figures are upper bounds: every input of the exhaustive domain was evaluated (every "
         "finite float16/bfloat16 x, probabilities: every x in [0, 1], against targets {0, 0.1, 0.25, 0.5, "
         "0.75, 0.9, 1}; families listed; float32 from `xentc scan`). **Searched** figures are lower bounds: the "
         "worst over every other case (corpus and found inputs). cond: the condition number at the worst input; "
         "kind: `implementation` when the error exceeds the log-sum-exp bound cond_ulp (harness/condition.py), "
         "`conditioning` when the input forces it. nonfinite: rows with a nan/inf mismatch besides. "
         "ref. error: the reference's own stated worst error in ulps.", "",
         "| API | dtype | certified ULP (upper bound) | at | domain | searched ULP (lower bound) | at | case | cond | bound ULP | kind | nonfinite | ref. error |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        L.append(f"| `{md(label(r.framework, r.api))}` | {r.dtype} | {fmt_ulp(r.certified_ulp) if r.certified_ulp == r.certified_ulp else '—'} | "
                 f"{md(r.certified_input)} | {md(r.certified_domain)} | "
                 f"{fmt_ulp(r.searched_ulp) if r.searched_ulp == r.searched_ulp else '—'} | {md(r.searched_input)} | "
                 f"`{md(r.searched_case)}` | {'' if r.cond != r.cond else f'{r.cond:.3g}'} | "
                 f"{'' if r.cond_ulp != r.cond_ulp else f'{r.cond_ulp:.3g}'} | {r.kind} | {r.nonfinite} | {md(r.reference_error)} |")
    return L + [""]


def load_certificates(directory: str = CERTIFIED_DIR) -> list[dict]:
    """The committed `xentc scan` certificates (cases/certified/*.json)."""
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def _poisoned(meta: dict) -> list[str]:
    """A header line when a framework's worker was replaced after a case left it unable to compute
    (adapters.poisoned: a CUDA device-side assert), else none."""
    n = {k: v.get("poisoned") for k, v in (meta.get("worker_s") or {}).items() if v.get("poisoned")}
    if not n:
        return []
    return ["- workers replaced after a case left them unable to compute (a CUDA device-side assert; "
            "each such case's row says why): " + ", ".join(f"{md(k)} {x}" for k, x in sorted(n.items()))]


def write(df: pd.DataFrame, meta: dict, out_dir: str, known=None, certificates=None) -> str:
    """Write out_dir/report.md and out_dir/repro/*.py; return the report's path."""
    known = expectations.load() if known is None else known
    df = expectations.annotate(df, known)
    failing = df[df.status.isin(FAILING)]
    repro_dir = os.path.join(out_dir, "repro")
    os.makedirs(repro_dir, exist_ok=True)

    L: list[str] = ["# Cross-entropy conformance report", ""]
    v = meta.get("versions", {})
    L += [f"- date: {md(meta.get('date', ''))}; revision: `{md(meta.get('revision', ''))}`; seed: {meta.get('seed')}; "
          f"cases: {md(meta.get('cases', ''))}",
          "- versions: " + ", ".join(f"{md(k)} {md(x)}" for k, x in sorted(v.items())),
          f"- platform: {md(meta.get('platform', {}).get('system', ''))}; device: {md(meta.get('device', 'cpu'))}; "
          f"wall time: {meta.get('elapsed_s', '?')} s" + _peaks(meta),
          *_poisoned(meta),
          "- reference: float64 numpy for float16/bfloat16/float32 results, long double for float64 "
          "(column `reference` of results.csv)", ""]

    counts = df.status.value_counts()
    L += ["## Summary", "", "| status | rows | meaning |", "|---|---|---|"]
    for s in SEVERITY:
        L.append(f"| {s} | {int(counts.get(s, 0))} | {md(STATUSES[s])} |")
    n_known = int(failing.known.sum())
    L += ["", f"{len(failing)} failing rows: {n_known} known (cases/expectations.toml), "
              f"{len(failing) - n_known} unknown.", ""]

    invalid = df[df.category == INVALID_CATEGORY]
    df = df[df.category != INVALID_CATEGORY]  # invalid input has its own section
    failing = failing[failing.category != INVALID_CATEGORY]
    L += ["## Compatibility matrix", "",
          "Cell: worst status over the cases of that category and dtype; the number is the largest ULP "
          "error among graded finite results. `ok` within tolerance, `ULP` out of tolerance, "
          "`NONFINITE` nan/inf where the reference is finite or the reverse, `RAISE` raised, "
          "`CRASH` worker died, `·` not expressible by the API.", ""]
    L += matrix(df[df.quantity == "loss"]) + [""]
    grads = df[df.quantity != "loss"]
    if not grads.empty:
        L += ["## Gradient compatibility matrix", "",
              "The backward pass through each framework's own autodiff, against the exact gradient of the "
              "sum of the API's outputs (with its mean's normalisation): ∂inputs (logits, probabilities or "
              "activations), ∂targets (dense targets) and ∂weights (the case's weight array). Cell: worst status over "
              "every case, largest graded ULP error; `NOGRAD` the framework returned no gradient.", ""]
        L += matrix(df, by="quantity") + [""]

    L += bad_input(invalid)

    certificates = load_certificates() if certificates is None else certificates
    L += accuracy(df, certificates) + accuracy(df, (), "grad_logits")

    L += coverage(meta.get("apis", []))

    L += ["## Tolerance", "", "| dtype | allowed ULP (n = terms summed into one output) |", "|---|---|"]
    L += [f"| {d} | {r} |" for d, r in tolerance_table()] + [""]

    # groups: (api, dtype, category, status)
    groups = []
    for (fw, api, dtype, cat, status, qty), g in failing.groupby(["framework", "api", "dtype", "category", "status",
                                                                 "quantity"], sort=False):
        groups.append(((label(fw, api), dtype, cat, status, qty), g, _worst(g)))
    groups.sort(key=lambda kg: (SEVERITY.index(kg[0][3]), -float(np.nan_to_num(kg[2].max_ulp, nan=-1.0, posinf=1e300)),
                                kg[0][0], kg[0][1], kg[0][2]))

    fin = failing[failing.status.isin(["discrepancy", "nonfinite_mismatch"])]
    if not fin.empty:
        L += ["## Worst findings", "", "The largest departure of each (API, dtype, quantity), worst first.", "",
              "| API | dtype | quantity | case | input | reference | framework | ULP | known |",
              "|---|---|---|---|---|---|---|---|---|"]
        per = [(_worst(g)) for _, g in fin.groupby(["framework", "api", "dtype", "quantity"])]
        per.sort(key=lambda r: (SEVERITY.index(r.status), -float(np.nan_to_num(r.max_ulp, posinf=1e300))))
        for r in per[:40]:
            L.append(f"| `{md(label(r.framework, r.api))}` | {r['dtype']} | {r.quantity} | `{md(r.case_id)}` | "
                     f"{md(r.worst_input)} | {r.expected:.9g} | {r.actual:.9g} | {fmt_ulp(r.max_ulp)} | "
                     f"{'yes' if r.known else '**no**'} |")
        L.append("")

    L += differences(df, known)
    L += backend_disagreements(df)

    L += ["## Discrepancy groups", "",
          "One group per (API, dtype, category, status), worst first; the repro calls the API on the exact "
          "inputs of the worst row (cut to its worst element or row when unreduced). Run the repro files "
          "from this directory (`python repro/NAME.py`): an array of more than 4,096 elements is loaded from "
          "`repro/arrays/`.", ""]
    for (api, dtype, cat, status, qty), g, w in groups:
        fname = safe_name(w.framework, api, w.case_id, dtype, *(() if qty == "loss" else (qty,)))
        if w.repro:
            with open(os.path.join(repro_dir, fname), "w") as f:
                f.write(w.repro)
        L += [f"### `{md(api)}` · {dtype} · {md(cat)} · {status}" + ("" if qty == "loss" else f" · {qty}"), "",
              f"- rows: {len(g)} ({', '.join(f'`{md(c)}`' for c in g.case_id.head(6))}{', …' if len(g) > 6 else ''})",
              f"- worst: `{md(w.case_id)}` at index ({md(w.worst_index)}): {md(w.worst_input)}"]
        if status in ("discrepancy", "nonfinite_mismatch"):
            L.append(f"- reference {w.expected:.17g}, framework {w.actual:.17g}, {fmt_ulp(w.max_ulp)} ulp "
                     f"(tolerance {fmt_ulp(w.tol_ulp)}), relative error {w.max_rel_err:.3g}")
        if w.detail:
            L.append(f"- detail: {md(w.detail)}")
        L.append(f"- known: {md(w.known_reason) if w.known else '**no** — not in cases/expectations.toml'}")
        if w.repro:
            L.append(f"- repro: `repro/{fname}`")
            if len(w.repro) <= INLINE_REPRO_MAX:
                L += ["", "```python", w.repro.rstrip(), "```"]
        L.append("")

    path = os.path.join(out_dir, "report.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(L) + "\n")
    os.replace(tmp, path)
    return path
