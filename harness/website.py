"""The published compatibility report: a static HTML site rendered from one run's results table.

`xentc report RUN_DIR [--out SITE_DIR]` reads RUN_DIR/results.parquet and RUN_DIR/run.json (the
results table is the only input, with cases/expectations.toml for what is known and
cases/certified/ for `xentc scan` certificates) and writes SITE_DIR (default RUN_DIR/site):

  index.html          the compatibility matrix (API x category x dtype, loss and gradient),
                      colour-coded by status, worst ULP per cell, filterable by framework, dtype
                      and quantity; the status summary and the run's metadata
  accuracy.html       max ULP per API x dtype with its input, upper (certified) or lower bound
  errors.html         raised, crashed and no_gradient rows
  discrepancies.html  numerical discrepancies, one group per API x dtype x quantity x status
  differences.html    semantic differences by design and conventions, each with its source
  plots.html          ULP error against x for the exhaustive domains; status heat map
  api/*.html          one page per API: parameters, results, discrepancies with repro snippets
  run.html            versions, platform, seed, revision, date, tolerance
  style.css, site.js  local assets: nothing is fetched at view time

Every value is escaped by Jinja2's autoescape (a case id holding markup renders as text). The
site is built in a temporary directory next to SITE_DIR and moved into place, so a failed build
leaves the previous site whole.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter

import numpy as np
import pandas as pd

from harness import expectations, profile, report
from harness.spec import DTYPES, FAILING, PARAMS, STATUSES

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
#: the matrix's quantity groups: the loss, and every gradient together
QGROUPS = {"loss": ("loss",), "gradient": ("grad_logits", "grad_targets", "grad_weights")}
CATEGORY_ORDER = ["baseline", "extreme", "soft_labels", "weights", "shapes", "exhaustive", "found"]
#: a documented-source link for a file path cited in a reason, by its top package
SOURCE_REPOS = {"keras": "https://github.com/keras-team/keras/blob/master/",
                "tensorflow": "https://github.com/tensorflow/tensorflow/blob/master/",
                "optax": "https://github.com/google-deepmind/optax/blob/main/",
                "torch": "https://github.com/pytorch/pytorch/blob/main/",
                "aten": "https://github.com/pytorch/pytorch/blob/main/",
                "jax": "https://github.com/jax-ml/jax/blob/main/"}
_SOURCE_PATH = re.compile(r"\b((?:keras|tensorflow|optax|torch|aten|jax)/[\w/]+\.(?:py|cpp|h|cc))\b")
SEMANTIC_KINDS = ("by-design", "convention")
PROFILE_QUANTITIES = ("loss", "grad_logits")


def slug(framework: str, api: str) -> str:
    """The API page's file name (report.safe_name's alphabet: it cannot leave api/)."""
    return report.safe_name(framework, api)[:-3] + ".html"


_num = report.as_float


def _categories(df: pd.DataFrame) -> list[str]:
    cats = [c for c in CATEGORY_ORDER if c in set(df.category)]
    return cats + sorted(set(df.category) - set(cats))


def _cell(sub: pd.DataFrame) -> dict | None:
    """One matrix cell: the worst status over its rows, the largest graded ULP, counts."""
    if sub.empty:
        return None
    w = report._worst(sub)
    graded = sub[sub.status.isin(["match", "discrepancy"])]
    u = graded.max_ulp.astype(float).replace([np.inf], np.nan).max() if not graded.empty else np.nan
    counts = Counter(sub.status)
    known = int(sub.known.sum())
    failing = int(sub.status.isin(FAILING).sum())
    text = report.CELL[w.status] + (f" {report.fmt_ulp(u)}" if w.status in ("match", "discrepancy") and u == u else "")
    title = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    if failing:
        title += f"; {known} of {failing} failing rows known"
    return {"status": w.status, "text": text, "title": title, "unknown": failing - known > 0}


def matrix(df: pd.DataFrame) -> dict:
    """Rows (framework, api, quantity group) x columns (category, dtype)."""
    cats = _categories(df)
    dts = [d for d in DTYPES if d in set(df.dtype)]
    cols = [{"category": c, "dtype": d} for c in cats for d in dts]
    rows = []
    for (fw, api), g in df.groupby(["framework", "api"], sort=True):
        for qg, qs in QGROUPS.items():
            gq = g[g.quantity.isin(qs)]
            if gq.empty or (gq.status == "unsupported").all():
                continue
            cells = []
            for c in cols:
                cells.append(_cell(gq[(gq.category == c["category"]) & (gq.dtype == c["dtype"])]))
            rows.append({"framework": fw, "api": api, "label": report.label(fw, api), "quantity": qg,
                         "page": "api/" + slug(fw, api), "cells": cells})
    shown = {(r["framework"], r["api"]) for r in rows}
    idle = [{"framework": fw, "api": api, "label": report.label(fw, api), "page": "api/" + slug(fw, api)}
            for fw, api in sorted(set(zip(df.framework, df.api)) - shown)]
    return {"categories": cats, "dtypes": dts, "cols": cols, "rows": rows, "idle": idle}


def _first_line(text) -> str:
    s = str(text or "").strip()
    return s.splitlines()[0] if s else ""


def errors(df: pd.DataFrame) -> list[dict]:
    """raised / crashed / no_gradient rows, grouped by API, status, quantity and message."""
    e = df[df.status.isin(["raised", "crashed", "no_gradient"])].copy()
    if e.empty:
        return []
    e["message"] = e.detail.map(_first_line)
    out = []
    for (fw, api, st, q, msg), g in e.groupby(["framework", "api", "status", "quantity", "message"], sort=True):
        out.append({"framework": fw, "api": api, "label": report.label(fw, api), "page": "api/" + slug(fw, api),
                    "status": st, "quantity": q, "message": msg, "rows": len(g),
                    "cases": sorted(set(g.case_id))[:6], "more": max(0, g.case_id.nunique() - 6),
                    "dtypes": [d for d in DTYPES if d in set(g.dtype)],
                    "known": bool(g.known.all()), "reason": g.known_reason.iloc[0]})
    out.sort(key=lambda r: (report.SEVERITY.index(r["status"]), r["label"], r["quantity"]))
    return out


#: a repro snippet longer than this (it embeds a large reduced case whole) is shown cut
SITE_REPRO_MAX = 6000


def _repro(text, case_id: str) -> dict:
    """The snippet as the site shows it: whole, or its head with a note where it is too large."""
    text = text or ""
    if len(text) <= SITE_REPRO_MAX:
        if "np.load('repro/arrays/" in text:  # harness.repro.ARRAYS: the large inputs are the run's files
            text += ("# the np.load files are in the run directory's repro/arrays/, named by content (`xentc run`, "
                     "e.g. `make report` -> reports/latest, writes the same ones): run this from that directory\n")
        return {"repro": text, "repro_cut": 0}
    head = text[:SITE_REPRO_MAX].rsplit("\n", 1)[0]
    note = (f"\n# ... cut here: the whole snippet ({len(text):,} characters) embeds every input of the reduced "
            f"case {case_id!r}; it is in the run directory's repro/ files and results.csv (column repro)")
    return {"repro": head + note, "repro_cut": len(text)}


def _group_rows(df: pd.DataFrame, statuses) -> list[dict]:
    f = df[df.status.isin(statuses)]
    out = []
    for (fw, api, dtype, q, st), g in f.groupby(["framework", "api", "dtype", "quantity", "status"], sort=False):
        w = report._worst(g)
        out.append({"framework": fw, "api": api, "label": report.label(fw, api), "page": "api/" + slug(fw, api),
                    "dtype": dtype, "quantity": q, "status": st, "rows": len(g), "case": w.case_id,
                    "input": w.worst_input, "expected": _num(w.expected), "actual": _num(w.actual),
                    "ulp": _num(w.max_ulp), "ulp_text": report.fmt_ulp(_num(w.max_ulp)),
                    "tol": report.fmt_ulp(_num(w.tol_ulp)), "known": bool(w.known), "reason": w.known_reason,
                    "kind": w.known_reason.split(":", 1)[0] if w.known else "unknown", **_repro(w.repro, w.case_id),
                    "detail": w.detail or "", "anchor": report.safe_name(fw, api, dtype, q, st)[:-3]})
    out.sort(key=lambda r: (not (r["kind"] == "unknown"), report.SEVERITY.index(r["status"]),
                            -np.nan_to_num(r["ulp"], nan=-1.0, posinf=1e300), r["label"]))
    return out


def differences(df: pd.DataFrame, known: list) -> list[dict]:
    """The by-design and convention entries of the expectations, with the rows each explains and
    its source: the entry's `ref`, else the source files its reason cites."""
    used = Counter(df.known_entry[df.known_entry >= 0])
    out = []
    for i, k in enumerate(known):
        if k.kind not in SEMANTIC_KINDS or not used.get(i):
            continue
        sources = ([{"href": k.ref, "text": k.ref}] if k.ref else [])
        for path in dict.fromkeys(_SOURCE_PATH.findall(k.reason)):
            sources.append({"href": SOURCE_REPOS[path.split("/", 1)[0]] + path, "text": path})
        out.append({"kind": k.kind, "apis": list(k.api), "frameworks": list(k.framework), "cases": list(k.case),
                    "quantity": k.quantity, "statuses": list(k.status), "rows": int(used[i]),
                    "reason": k.reason, "sources": sources})
    return out


def _fmt(v) -> str:
    f = _num(v)
    return "" if f != f else f"{f:.3g}"


def accuracy(df: pd.DataFrame, certificates, quantity: str) -> list[dict]:
    """The accuracy table's rows; a certificate of an API this run did not call has no page."""
    t = report.accuracy_rows(df, certificates, quantity)
    has_page = set(zip(df.framework, df.api))
    out = []
    for r in t.itertuples():
        out.append({"framework": r.framework, "api": r.api, "label": report.label(r.framework, r.api),
                    "page": "api/" + slug(r.framework, r.api) if (r.framework, r.api) in has_page else "",
                    "dtype": r.dtype,
                    "certified": report.fmt_ulp(r.certified_ulp) if r.certified_ulp == r.certified_ulp else "",
                    "certified_input": r.certified_input, "domain": r.certified_domain,
                    "searched": report.fmt_ulp(r.searched_ulp) if r.searched_ulp == r.searched_ulp else "",
                    "searched_input": r.searched_input, "searched_case": r.searched_case,
                    "cond": _fmt(r.cond), "cond_ulp": _fmt(r.cond_ulp), "kind": r.kind, "nonfinite": r.nonfinite,
                    "reference_error": r.reference_error})
    return out


def _profiles(df: pd.DataFrame) -> pd.DataFrame:
    if "ulp_profile" not in df:
        return df.iloc[0:0]
    p = df[(df.ulp_profile.fillna("") != "") & df.quantity.isin(PROFILE_QUANTITIES)]
    return p


def _merge(profiles: list[dict]) -> dict:
    """Band-wise maximum of profiles over the same bands (one framework's APIs)."""
    base = profiles[0]
    m = []
    for vals in zip(*(p["max_ulp"] for p in profiles)):
        v = [u for u in vals if u is not None]
        m.append(max(v) if v else None)
    return {**base, "max_ulp": m}


def _xlabel(family: str) -> str:
    return "probability p" if family.startswith("binary") else "logit x"


def plots(df: pd.DataFrame, out_dir: str) -> tuple[list[dict], dict[tuple[str, str], list[dict]], dict | None]:
    """Render the figures; returns (family figures, {(framework, api): its figures}, heat map)."""
    from harness import plots as P

    pr = _profiles(df)
    fam_figs, api_figs = [], {}
    for (case_id, q), g in pr.groupby(["case_id", "quantity"], sort=True):
        by_fw: dict[str, list[dict]] = {}
        for r in g.itertuples():
            by_fw.setdefault(r.framework, []).append(profile.parse(r.ulp_profile))
        curves = [(f"{fw} ({len(ps)} API{'s' if len(ps) > 1 else ''})", _merge(ps)) for fw, ps in sorted(by_fw.items())]
        fam = g.family.iloc[0]
        name = report.safe_name("family", case_id, q)[:-3] + ".png"
        tol = _num(g.tol_ulp.iloc[0])
        qname = report.QUANTITY_ABBR[q]
        P.ulp_vs_x(os.path.join(out_dir, "plots", name), f"{case_id} · {qname} (worst API of each framework)",
                   curves, _xlabel(fam), tol if tol == tol else None)
        fam_figs.append({"src": "plots/" + name, "case": case_id, "quantity": qname,
                         "alt": f"max ULP error of {qname} against x, {case_id}, one curve per framework"})
    for (fw, api, q), g in pr.groupby(["framework", "api", "quantity"], sort=True):
        curves = [(c.split("/", 1)[1], profile.parse(t)) for c, t in zip(g.case_id, g.ulp_profile)]
        fam = g.family.iloc[0]
        name = report.safe_name("api", fw, api, q)[:-3] + ".png"
        qname = report.QUANTITY_ABBR[q]
        tol = _num(g.tol_ulp.iloc[0])
        P.ulp_vs_x(os.path.join(out_dir, "plots", name), f"{report.label(fw, api)} · {qname}", curves, _xlabel(fam),
                   tol if tol == tol else None)
        api_figs.setdefault((fw, api), []).append(
            {"src": "../plots/" + name, "quantity": qname,
             "alt": f"max ULP error of {qname} against x for {report.label(fw, api)}, one curve per exhaustive domain"})
    heat = None
    graded = df[df.status != "unsupported"]
    if not graded.empty:
        fws = sorted(set(graded.framework))
        cats = _categories(graded)
        share = np.full((len(fws), len(cats)), np.nan)
        counts = np.zeros((len(fws), len(cats)))
        for i, fw in enumerate(fws):
            for j, c in enumerate(cats):
                s = graded[(graded.framework == fw) & (graded.category == c)]
                if len(s):
                    counts[i, j] = len(s)
                    share[i, j] = float(s.status.isin(FAILING).mean())
        P.status_heatmap(os.path.join(out_dir, "plots", "status-heatmap.png"), fws, cats, share, counts,
                         "share of rows failing (any status but match), by framework and category")
        heat = {"src": "plots/status-heatmap.png",
                "alt": "heat map: share of failing rows per framework and case category"}
    return fam_figs, api_figs, heat


def api_pages(df: pd.DataFrame, meta: dict, api_figs: dict) -> list[dict]:
    decl = {(a["framework"], a["api"]): a for a in meta.get("apis", [])}
    pages = []
    for (fw, api), g in df.groupby(["framework", "api"], sort=True):
        a = decl.get((fw, api), {})
        params = [{"name": k, "arg": v} for k, v in sorted((a.get("params") or {}).items(), key=lambda kv: (
            list(PARAMS).index(kv[0]) if kv[0] in PARAMS else len(PARAMS), kv[0])) if v is not None]
        summary = []
        for d in [d for d in DTYPES if d in set(g.dtype)]:
            s = g[g.dtype == d]
            c = Counter(s.status)
            summary.append({"dtype": d, "counts": [(st, c.get(st, 0)) for st in report.SEVERITY]})
        groups = _group_rows(g, ["discrepancy", "nonfinite_mismatch", "raised", "crashed", "no_gradient"])
        unsupported = g[g.status == "unsupported"].detail.map(_first_line).value_counts().head(8)
        bad = g[(g.category == report.INVALID_CATEGORY) & (g.status != "unsupported")]
        bad_rows = [{"case": r.case_id, "kind": r.invalid, "status": r.status, "detail": r.detail,
                     "known": bool(r.known)} for r in bad.itertuples()]
        pages.append({"framework": fw, "api": api, "label": report.label(fw, api), "file": slug(fw, api),
                      "family": a.get("family", g.family.iloc[0]), "version": str(g.framework_version.dropna().iloc[0])
                      if g.framework_version.notna().any() else "",
                      "params": params, "reductions": a.get("reductions", {}), "reduction_arg": a.get("reduction_arg"),
                      "fixed": a.get("fixed", {}), "composition": a.get("composition", ""),
                      "dtypes": a.get("dtypes", []), "conventions": a.get("conventions", {}),
                      "summary": summary, "statuses": report.SEVERITY, "groups": groups,
                      "unsupported": [(m, int(n)) for m, n in unsupported.items()], "bad_input": bad_rows,
                      "figures": api_figs.get((fw, api), [])})
    return pages


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["g"] = lambda v: "" if _num(v) != _num(v) else f"{_num(v):.9g}"
    return env


def bad_input(df: pd.DataFrame) -> dict:
    """The invalid-input page's context (report.bad_input_tables, report.silent_values)."""
    from harness.badinput import KINDS

    tables = report.bad_input_tables(df)
    for t in tables:
        for r in t["rows"]:
            r["page"] = "api/" + slug(r["framework"], r["api"])
    silent = [{**{k: v for k, v in s.items() if k != "example"}, "case": s["example"].case_id,
               "value": str(s["example"].detail).split("; likely")[0].split("; matches")[0],
               "repro": str(s["example"].repro or "")[:6000]} for s in report.silent_values(df)]
    return {"tables": tables, "silent": silent, "kinds": list(KINDS.values()),
            "judged": {k: v.judged for k, v in KINDS.items()}}


NAV = [("index.html", "Matrix"), ("bad-input.html", "Invalid input"), ("accuracy.html", "Accuracy"), ("errors.html", "Errors"),
       ("discrepancies.html", "Discrepancies"), ("differences.html", "By design"), ("plots.html", "Plots"),
       ("run.html", "Run")]


def render_page(env, template: str, out_path: str, root: str, nav=None, **ctx) -> None:
    html = env.get_template(template).render(root=root, nav=nav or NAV, statuses=STATUSES, **ctx)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(html)


def build(run_dir: str, out_dir: str | None = None, *, known=None, certificates=None, with_plots: bool = True,
          against: str | None = None, versions: list[str] | None = None) -> str:
    """Render the site of RUN_DIR into out_dir (default RUN_DIR/site); returns index.html's path.
    against: an earlier run, for a page of what changed (harness.diff); versions: runs of other
    framework versions, for the version matrix page."""

    out_dir = os.path.join(run_dir, "site") if out_dir is None else out_dir
    from harness import diff as D

    df, meta = D.load_run(run_dir)
    raw = df
    known = expectations.load() if known is None else known
    certificates = report.load_certificates() if certificates is None else certificates
    df = expectations.annotate(df, known)
    for col in ("repro", "detail", "worst_input", "known_reason"):
        df[col] = df[col].fillna("").astype(str) if col in df else ""

    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".site-", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, "api"))
        for asset in ("style.css", "site.js"):
            shutil.copyfile(os.path.join(TEMPLATES, asset), os.path.join(tmp, asset))
        fam_figs, api_figs, heat = plots(df, tmp) if with_plots else ([], {}, None)
        env = _env()
        nav = list(NAV)

        if against:
            nav.insert(-1, ("diff.html", "Diff"))
        if versions:
            nav.insert(-1, ("versions.html", "Versions"))
        if against:
            a, ma = D.load_run(against)
            D.write_pages(tmp, diff_ctx=D.html_context(D.compare(a, raw), ma, meta, against, run_dir),
                          meta=meta, nav=nav)
        if versions:
            D.write_pages(tmp, versions_ctx=D.version_matrix([(v, *D.load_run(v)) for v in versions]), meta=meta, nav=nav)
        common_nav = {"nav": nav}
        counts = df.status.value_counts()
        failing = df[df.status.isin(FAILING)]
        summary = [{"status": s, "rows": int(counts.get(s, 0)), "meaning": STATUSES[s]} for s in report.SEVERITY]
        common = {"meta": meta, "title": "Cross-entropy conformance", **common_nav}
        invalid = df[df.category == report.INVALID_CATEGORY]
        mx = matrix(df[df.category != report.INVALID_CATEGORY])  # invalid input has its own page
        with open(os.path.join(tmp, "site.json"), "w") as f:  # what the site shows, for checks and tools
            json.dump({"date": meta.get("date"), "revision": meta.get("revision"), "versions": meta.get("versions"),
                       "rows": len(df), "status_counts": {k: int(v) for k, v in counts.items()},
                       "matrix_rows": len(mx["rows"]), "api_pages": int(df.groupby(["framework", "api"]).ngroups)},
                      f, indent=1, sort_keys=True)
        render_page(env, "index.html", os.path.join(tmp, "index.html"), "", page="index.html", matrix=mx,
                    summary=summary, n_failing=len(failing), n_known=int(failing.known.sum()),
                    frameworks=sorted(set(df.framework)), **common)
        render_page(env, "bad_input.html", os.path.join(tmp, "bad-input.html"), "", page="bad-input.html",
                    **bad_input(invalid), **common)
        render_page(env, "accuracy.html", os.path.join(tmp, "accuracy.html"), "", page="accuracy.html",
                    tables=[("loss", accuracy(df, certificates, "loss")),
                            ("gradient ∂inputs", accuracy(df, (), "grad_logits"))], **common)
        render_page(env, "errors.html", os.path.join(tmp, "errors.html"), "", page="errors.html", rows=errors(df), **common)
        render_page(env, "discrepancies.html", os.path.join(tmp, "discrepancies.html"), "", page="discrepancies.html",
                    groups=_group_rows(df, ["discrepancy", "nonfinite_mismatch"]), **common)
        render_page(env, "differences.html", os.path.join(tmp, "differences.html"), "", page="differences.html",
                    rows=differences(df, known), **common)
        render_page(env, "plots.html", os.path.join(tmp, "plots.html"), "", page="plots.html", figures=fam_figs,
                    heat=heat, **common)
        from harness.tolerance import table as tolerance_table

        render_page(env, "run.html", os.path.join(tmp, "run.html"), "", page="run.html",
                    tolerance=tolerance_table(), n_rows=len(df), **common)
        for p in api_pages(df, meta, api_figs):
            render_page(env, "api.html", os.path.join(tmp, "api", p["file"]), "../", page="", a=p, **common)
        old = out_dir + ".old"
        if os.path.exists(out_dir):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(out_dir, "index.html")
