"""Grade a framework's output against the reference: per-element ULP, absolute and
relative error, non-finite classes compared exactly, and one status for the row."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dtypes import to_dtype
from .ulp import rounded_distance, ulp, value_class


@dataclass
class Grade:
    status: str
    max_ulp: float
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple[int, ...] | None
    expected: float
    actual: float
    detail: str = ""
    #: max ULP over the elements where both values are finite and the reference is certain to
    #: half an ulp (nan if none), and where it is: the accuracy figure beside any nonfinite mismatch
    max_ulp_finite: float = float("nan")
    worst_finite_index: tuple[int, ...] | None = None
    #: per-element ULP distance where max_ulp_finite counts it, nan elsewhere (for profiles)
    ulps_certain: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: at the worst element: its distance less what it is allowed (> 0: a discrepancy); nan
    #: where the worst element is a non-finite mismatch (merge_rows picks by it)
    excess: float = float("nan")


def _uncertain(extra: float) -> str:
    """A row's detail where its worst element's reference is certain only to `extra` ulps."""
    return f"the reference is certain to {extra:.3g} ulp here (its terms cancel)"


def _errors(act: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute and relative error of `act` (float64) against the unrounded reference, in float64
    (inf beyond its range; relative: 0 where both are 0, inf where only the reference is). Taken
    in the reference's precision (long double for float64 results): a float64 reference's
    difference with a narrower dtype's value is rounded once, to float64."""
    ref_hp = reference if reference.dtype == np.float64 else reference.astype(np.longdouble)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        abs_err = np.abs(act.astype(ref_hp.dtype, copy=False) - ref_hp)
        rel_err = abs_err / np.abs(ref_hp)
        nonzero = ref_hp != 0
        if not nonzero.all():
            rel_err = np.where(nonzero, rel_err, np.where(abs_err == 0, 0, np.inf))
        return abs_err.astype(np.float64, copy=False), rel_err.astype(np.float64, copy=False)


def grade(actual: np.ndarray, reference: np.ndarray, dtype: str, tol_ulp: float,
          ref_err: np.ndarray | None = None) -> Grade:
    """Compare `actual` (any float array) with the high-precision `reference`.

    The reference is first rounded correctly to `dtype`; the ULP distance is measured
    between that and `actual` rounded to `dtype` (a no-op when the framework returned
    `dtype`, as it should). Absolute and relative errors use the unrounded reference.
    `ref_err`: a bound on the reference's own absolute error per element, where it is not
    negligible (a gradient that is a difference of nearly equal terms): an element fails only
    when its distance exceeds tol_ulp plus that bound in ulps, so a discrepancy is certain."""
    actual = np.asarray(actual)
    reference = np.asarray(reference)
    if actual.shape != reference.shape:
        return Grade("discrepancy", np.inf, np.inf, np.inf, None, np.nan, np.nan,
                     f"shape {actual.shape} differs from the reference's {reference.shape}")
    if actual.size == 0:
        return Grade("match", 0.0, 0.0, 0.0, None, np.nan, np.nan, "empty result")

    # one rounding: long double -> float64 for float64 results, float64 -> dtype otherwise
    with np.errstate(over="ignore"):
        ref_rounded = to_dtype(reference.astype(np.float64), dtype)
    act = np.asarray(actual, dtype=np.float64)
    # classes in the tested dtype: a wider result (float32 for float16 inputs) that overflows
    # the dtype is inf there, as the reference is
    act_rounded = to_dtype(act, dtype)
    ca, cr = value_class(act_rounded), value_class(ref_rounded)
    special = bool(ca.any() or cr.any())  # a non-finite value on either side
    ulps = rounded_distance(act_rounded, ref_rounded, ca, cr, dtype)
    abs_err, rel_err = _errors(act, reference)
    if special:  # errors of finite pairs only (a matching nan is 0 off, not nan)
        both = (ca == 0) & (cr == 0)
        abs_err, rel_err = np.where(both, abs_err, 0.0), np.where(both, rel_err, 0.0)

    mismatch = ca != cr
    allow = np.full(ulps.shape, float(tol_ulp))
    if ref_err is not None:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            extra = np.asarray(ref_err, dtype=np.float64) / ulp(ref_rounded, dtype)
        allow = allow + np.where((cr == 0) & np.isfinite(extra), extra, 0.0)
    detail = ""
    excess = float("nan")
    if special and mismatch.any():
        flat = int(np.flatnonzero(mismatch.ravel())[0])
        status = "nonfinite_mismatch"
    else:
        over = ulps - allow
        flat = int(np.argmax(over.ravel())) if (over > 0).any() else int(np.argmax(ulps.ravel()))
        status = "discrepancy" if over.ravel()[flat] > 0 else "match"
        excess = float(over.ravel()[flat])
        if allow.ravel()[flat] - tol_ulp >= 0.5:
            detail = _uncertain(allow.ravel()[flat] - tol_ulp)
    idx = tuple(int(i) for i in np.unravel_index(flat, actual.shape)) if actual.ndim else ()
    finite = ~mismatch
    if special or ref_err is not None:
        certain = (ca == 0) & (cr == 0) & (allow - float(tol_ulp) < 0.5)
        ulps_certain = np.where(certain, ulps, np.nan)
        uf = np.where(certain, ulps, -1.0).ravel() if certain.any() else None
    else:  # every element: both finite, the reference certain to half an ulp
        ulps_certain, uf = ulps, ulps.ravel()
    max_f, idx_f = float("nan"), None
    if uf is not None:
        ff = int(np.argmax(uf))
        max_f = float(uf[ff])
        idx_f = tuple(int(i) for i in np.unravel_index(ff, actual.shape)) if actual.ndim else ()
    errs = (abs_err[finite], rel_err[finite]) if special else (abs_err, rel_err)
    return Grade(
        status=status,
        max_ulp=float(np.max(ulps)),
        max_abs_err=float(np.max(errs[0])) if errs[0].size else float("nan"),
        max_rel_err=float(np.max(errs[1])) if errs[1].size else float("nan"),
        worst_index=idx,
        expected=float(reference.ravel()[flat]),
        actual=float(act.ravel()[flat]),
        detail=detail,
        max_ulp_finite=max_f,
        worst_finite_index=idx_f,
        ulps_certain=ulps_certain,
        excess=excess,
    )


def _first_max(key: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment of `key` (given by its starts and sizes): its maximum, and where it first
    occurs (np.argmax's choice), as an index into key; a segment holding nan: not meaningful."""
    top = np.maximum.reduceat(key, starts)
    hits = np.flatnonzero(key == np.repeat(top, sizes))
    return top, hits[np.minimum(np.searchsorted(hits, starts), hits.size - 1)]


#: the value classes (ulp.value_class) of arrays whose every value is finite, for rounded_distance
_NO_CLASSES = np.zeros(0, np.int64)


def grade_many(items: list[tuple[np.ndarray, np.ndarray, str, float, np.ndarray | None]]) -> list[Grade]:
    """[grade(actual, reference, dtype, tol_ulp, ref_err) for each item], the same Grades
    (tests/test_grade_many.py), computed at once where that is possible: pairs of one dtype and
    reference dtype, of equal shapes (ref_err's too, if given), not empty (most rows). Their
    elements are graded as one array, each pair's maxima and first worst elements taken by
    reductions over its segment: a few numpy calls for the lot instead of some forty per pair.
    Any other pair goes to grade()."""
    out: list[Grade | None] = [None] * len(items)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (a, r, dtype, tol, err) in enumerate(items):
        a, r = np.asarray(a), np.asarray(r)
        if a.shape == r.shape and a.size and (err is None or np.shape(err) == r.shape):
            groups.setdefault((dtype, r.dtype.str), []).append(i)
        else:
            out[i] = grade(a, r, dtype, tol, err)
    for (dtype, _), idx in groups.items():
        acts = [np.asarray(items[i][0], dtype=np.float64) for i in idx]
        refs = [np.asarray(items[i][1]) for i in idx]
        sizes = np.array([a.size for a in acts])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        act = np.concatenate([a.ravel() for a in acts])
        ref = np.concatenate([r.ravel() for r in refs])
        tol = np.repeat(np.array([float(items[i][3]) for i in idx]), sizes)
        with np.errstate(over="ignore"):  # as grade: one rounding of each side to dtype
            ref_rounded = to_dtype(ref.astype(np.float64, copy=False), dtype)
        act_rounded = to_dtype(act, dtype)
        # a non-finite value somewhere: grade's special pairs are among these
        special = not (np.isfinite(act_rounded).all() and np.isfinite(ref_rounded).all())
        if special:
            ca, cr = value_class(act_rounded), value_class(ref_rounded)
        else:  # every value finite: no class to compare (rounded_distance reads none)
            ca = cr = _NO_CLASSES
        ulps = rounded_distance(act_rounded, ref_rounded, ca, cr, dtype)
        abs_err, rel_err = _errors(act, ref)
        if special:  # errors of finite pairs only (a matching nan is 0 off, not nan)
            both = (ca == 0) & (cr == 0)
            abs_err, rel_err = np.where(both, abs_err, 0.0), np.where(both, rel_err, 0.0)
            mismatch = ca != cr
        allow = tol
        bounded = [j for j, i in enumerate(idx) if items[i][4] is not None]
        if bounded:  # the reference's own error in ulps, where a pair gives it (grade's ref_err)
            err = np.concatenate([np.asarray(items[i][4], np.float64).ravel() if items[i][4] is not None
                                  else np.zeros(acts[j].size) for j, i in enumerate(idx)])
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                extra = err / ulp(ref_rounded, dtype)
            allow = tol + np.where(((cr == 0) if special else True) & np.isfinite(extra), extra, 0.0)
        over = ulps - allow
        top_over, at_over = _first_max(over, starts, sizes)
        top_ulps, at_ulps = _first_max(ulps, starts, sizes)
        if special or bounded:  # the elements where the accuracy figure is certain
            certain = allow - tol < 0.5
            if special:
                certain &= both
            top_f, at_f = _first_max(np.where(certain, ulps, -1.0), starts, sizes)
            certain_any = np.logical_or.reduceat(certain, starts).tolist()
            ulps_certain = np.where(certain, ulps, np.nan)
        else:  # every element
            top_f, at_f, certain_any, ulps_certain = top_ulps, at_ulps, [True] * len(idx), ulps
        worst = np.where(top_over > 0, at_over, at_ulps)  # each pair's worst element
        if special and mismatch.any():  # a pair with a class mismatch: its first is the worst; its errors leave them out
            has_mis = np.logical_or.reduceat(mismatch, starts)
            hits = np.flatnonzero(mismatch)
            worst = np.where(has_mis, hits[np.minimum(np.searchsorted(hits, starts), hits.size - 1)], worst)
            kept = np.add.reduceat(~mismatch, starts) > 0
            max_abs = np.where(kept, np.maximum.reduceat(np.where(mismatch, -np.inf, abs_err), starts), np.nan)
            max_rel = np.where(kept, np.maximum.reduceat(np.where(mismatch, -np.inf, rel_err), starts), np.nan)
            has_mis = has_mis.tolist()
        else:
            max_abs, max_rel = np.maximum.reduceat(abs_err, starts), np.maximum.reduceat(rel_err, starts)
            has_mis = [False] * len(idx)
        over_k, act_k, extra_k = over[worst].tolist(), act[worst].tolist(), (allow - tol)[worst].tolist()
        top_ulps, top_f, at_f = top_ulps.tolist(), top_f.tolist(), at_f.tolist()
        max_abs, max_rel = max_abs.tolist(), max_rel.tolist()
        worst, starts_l = worst.tolist(), starts.tolist()
        for j, i in enumerate(idx):
            s, shape, k = starts_l[j], acts[j].shape, worst[j]

            def index(e: int) -> tuple[int, ...]:
                if len(shape) > 1:
                    return tuple(int(v) for v in np.unravel_index(e - s, shape))
                return (e - s,) * len(shape)

            seg = slice(s, s + acts[j].size)
            mis = has_mis[j]
            out[i] = Grade(
                status="nonfinite_mismatch" if mis else "discrepancy" if over_k[j] > 0 else "match",
                max_ulp=top_ulps[j], max_abs_err=max_abs[j], max_rel_err=max_rel[j], worst_index=index(k),
                expected=float(refs[j].ravel()[k - s]), actual=act_k[j],
                detail=_uncertain(extra_k[j]) if not mis and extra_k[j] >= 0.5 else "",
                max_ulp_finite=top_f[j] if certain_any[j] else float("nan"),
                worst_finite_index=index(at_f[j]) if certain_any[j] else None,
                ulps_certain=ulps_certain[seg].reshape(shape),
                excess=float("nan") if mis else over_k[j])
    return out


def merge_rows(parts: list[tuple[int, Grade]]) -> Grade:
    """One Grade of a whole array from the Grades of its consecutive blocks of rows, each given
    with its first row: the same as grading the array at once (tests/test_chunked.py), but for
    ulps_certain, which is not kept. Lets a large case be graded a block at a time
    (harness.chunked)."""
    def at(k: int, idx):
        return None if idx is None else (idx[0] + k, *idx[1:])

    def first_max(key):  # argmax over blocks, the first on ties, as np.argmax over the whole
        best = None
        for k, g in parts:
            v = key(g)
            if not np.isnan(v) and (best is None or v > key(best[1])):
                best = (k, g)
        return best

    bad = [(k, g) for k, g in parts if g.status == "nonfinite_mismatch"]
    if bad:
        k, w = bad[0]
    elif any(g.status == "discrepancy" for _, g in parts):
        k, w = first_max(lambda g: g.excess)
    else:
        k, w = first_max(lambda g: g.max_ulp) or parts[0]
    fin = first_max(lambda g: g.max_ulp_finite)

    def nanmax(vals):
        vals = [v for v in vals if not np.isnan(v)]
        return max(vals) if vals else float("nan")

    return Grade(status=w.status, max_ulp=max(g.max_ulp for _, g in parts),
                 max_abs_err=nanmax([g.max_abs_err for _, g in parts]),
                 max_rel_err=nanmax([g.max_rel_err for _, g in parts]),
                 worst_index=at(k, w.worst_index), expected=w.expected, actual=w.actual, detail=w.detail,
                 max_ulp_finite=float("nan") if fin is None else fin[1].max_ulp_finite,
                 worst_finite_index=None if fin is None else at(fin[0], fin[1].worst_finite_index),
                 excess=w.excess)
