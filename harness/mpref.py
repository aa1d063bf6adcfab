"""An independent high-precision reference for every loss family, in mpmath.

`harness.oracle` is the reference the harness grades against (float64 / long double, with
stability rearrangements). This module exists to check it: the same families, parameters,
reductions and conventions, written again from the definitions in arbitrary precision
(default 128 bits), so `tests/test_oracle.py` can measure the oracle's own error.

Definitions used here (deliberately not the oracle's arrangements):

* sigmoid:  q*z*softplus(-x) + (1-z)*softplus(x), times w  -- i.e. -[q z log s(x) + (1-z) log(1-s(x))],
            the textbook form, with softplus(t) = log(1 + e^t) evaluated as log1p(e^t).
* binary:   -w*[z*log(p) + (1-z)*log(1-p)], 1-p formed exactly.
* softmax:  -log_softmax(x)_c = log(sum_j e^{x_j}) - x_c, straight from the definition; the
            exponent range of mpmath is unbounded, so e^{1e30} is an ordinary number.
* categorical / sparse variants: -w_k*log(p_k), sums of w_c*y_c*(-log p_c).

Accuracy without stability tricks: every coefficient product and 1-z, 1-p is formed exactly,
and where a result is a difference (log-sum-exp minus x_c, or terms of mixed sign) the
working precision is raised until the bits lost to cancellation are covered: the result has
`prec` correct bits, or, when it is smaller than 2**-1100 relative to the operands (far below
every tested dtype's smallest subnormal), an absolute error below 2**-(1100+prec) times the
operands' magnitude.

Conventions (the `harness.oracle` module docstring):

* 0 * anything = 0 for every coefficient (target, weight, pos_weight, class weight).
* Infinite logits are limits: softplus(+inf) = inf, softplus(-inf) = 0. A softmax row with
  exactly one +inf: -log_softmax is 0 there and +inf elsewhere; with two or more +inf: nan at
  those positions, +inf elsewhere. A row of all -inf: nan at every position.
* nan anywhere in a logit row makes that row's loss nan (softmax, sparse_softmax); a nan
  logit / probability makes its element's or term's value nan (then subject to the zero
  coefficient rule, like any other value).
* A class index outside [0, C) gives nan. A mean over nothing (or 0/0) is nan.

`loss()` returns a numpy object array of `mpmath.mpf`, the shape of `oracle.loss`'s result.
`to_float()` rounds such values correctly (ties to even, overflow to inf) to a tested dtype;
`oracle_error()` measures a float64 / long double result against them in ulps of a dtype.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import mpmath
import numpy as np
from mpmath import mp

from .dtypes import finfo, np_dtype
from .spec import CONVENTIONS, FAMILIES

MPF = mpmath.mpf
GUARD = 32  # extra bits carried by every intermediate
MARGIN = 12  # bits a result must have beyond `prec` after cancellation, else recompute
UNDERFLOW_BITS = 1100  # results this far below their operands are "zero" to every dtype
ZERO = MPF(0)
NAN = MPF("nan")
INF = MPF("inf")


# --- scalar helpers -------------------------------------------------------------------
def _mag(v: MPF) -> int:
    """floor(log2|v|) + 1 for a finite non-zero mpf (exact, from the representation)."""
    _sign, man, exp, bc = v._mpf_
    return exp + bc


def _isnan(v: MPF) -> bool:
    return v != v


def mul0(a: MPF, b: MPF) -> MPF:
    """a*b, exact, with 0*anything = 0 (including 0*inf and 0*nan)."""
    if a == 0 or b == 0:
        return ZERO
    if mp.isinf(a) or mp.isinf(b) or _isnan(a) or _isnan(b):
        return a * b
    return mp.fmul(a, b, exact=True)


def _one_minus(v: MPF) -> MPF:
    """1 - v, exact."""
    if not mp.isfinite(v):
        return 1 - v
    return mp.fsub(1, v, exact=True)


def _log(v: MPF) -> MPF:
    """Natural log on [0, inf]: log 0 = -inf; nan for negative or nan arguments."""
    if _isnan(v) or v < 0:
        return NAN
    if v == 0:
        return -INF
    return mp.log(v)


def _softplus(t: MPF) -> MPF:
    """log(1 + e^t) at the current working precision (log1p adds 1 exactly)."""
    if _isnan(t):
        return NAN
    if t == INF:
        return INF
    if t == -INF:
        return ZERO
    return mp.log1p(mp.exp(t))


def _special_sum(values: Sequence[MPF]) -> MPF | None:
    """The sum when some value is nan or infinite (IEEE rules), else None."""
    has_nan = has_pinf = has_ninf = False
    for v in values:
        if _isnan(v):
            has_nan = True
        elif v == INF:
            has_pinf = True
        elif v == -INF:
            has_ninf = True
    if has_nan or (has_pinf and has_ninf):
        return NAN
    if has_pinf:
        return INF
    if has_ninf:
        return -INF
    return None


def _sum(values: Sequence[MPF]) -> MPF:
    """Sum with a single rounding at the working precision (mpmath.fsum accumulates exactly)."""
    s = _special_sum(values)
    if s is not None:
        return s
    return mp.fsum(values)


def _accurate_sum(terms_at: Callable[[int], list], prec: int) -> MPF:
    """sum(terms_at(p)) with `prec` correct bits. terms_at(p) must return the terms, each
    with p correct bits. When the terms cancel, p is raised by the bits lost."""
    p = prec
    cap = None
    while True:
        with mp.workprec(p + GUARD):
            terms = terms_at(p)
            s = _sum(terms)
        if not mp.isfinite(s):
            return s
        nz = [t for t in terms if t != 0]
        if not nz or all(t > 0 for t in nz) or all(t < 0 for t in nz):
            return s  # no cancellation: relative error ~ 2**-p
        big = max(_mag(t) for t in nz)
        lost = big - _mag(s) if s != 0 else p + GUARD
        if lost <= p + GUARD - prec - MARGIN:
            return s
        if cap is None:
            cap = prec + GUARD + big - min(_mag(t) for t in nz) + UNDERFLOW_BITS
        if p >= cap:
            return s
        p = min(cap, max(2 * p, prec + lost + GUARD))


# --- elementwise families ---------------------------------------------------------------
def _exact_mul(a: float, b: float) -> MPF:
    """The exact product of two finite floats as an mpf."""
    return mp.fmul(MPF(a), MPF(b), exact=True)


def _two_terms(a: MPF, f: Callable[[], MPF], b: MPF, g: Callable[[], MPF], prec: int,
               same_sign: bool) -> MPF:
    """a*f() + b*g() with `prec` correct bits; a term whose coefficient is zero is 0, and f, g
    are evaluated (at the working precision in force) only when their coefficient is non-zero.
    same_sign: the two terms cannot cancel (a caller's cheap check on float operands)."""
    if same_sign or a == 0 or b == 0:
        # no cancellation possible: one rounding per operation at prec + GUARD bits
        with mp.workprec(prec + GUARD):
            terms = ([a * f()] if a != 0 else []) + ([b * g()] if b != 0 else [])
            return _sum(terms) if len(terms) != 1 else terms[0]

    def terms(p):
        with mp.workprec(p + GUARD):
            return [a * f(), b * g()]

    return _accurate_sum(terms, prec)


@lru_cache(maxsize=1 << 18)
def _sigmoid_elem(x: float, z: float, q: float, w: float | None, prec: int) -> MPF:
    """w * [q*z*softplus(-x) + (1-z)*softplus(x)]."""
    if w == 0:
        return ZERO
    if math.isnan(x):
        per = NAN
    else:
        Z, Q = MPF(z), MPF(q)
        a = mul0(Q, Z)  # coefficient of softplus(-x) = -log sigmoid(x)
        b = _one_minus(Z)  # coefficient of softplus(x) = -log(1 - sigmoid(x))
        if math.isinf(x):
            # softplus(+inf) = inf, softplus(-inf) = 0
            sp_pos, sp_neg = (INF, ZERO) if x > 0 else (ZERO, INF)
            per = _sum([mul0(a, sp_neg), mul0(b, sp_pos)])
        else:
            X = MPF(x)
            same = (q * z >= 0 and z <= 1) or (q * z <= 0 and z >= 1)  # softplus > 0: signs of a, b
            per = _two_terms(a, lambda: mp.log1p(mp.exp(-X)), b, lambda: mp.log1p(mp.exp(X)), prec, same)
    return per if w is None else mul0(MPF(w), per)


@lru_cache(maxsize=1 << 18)
def _binary_elem(p_: float, z: float, w: float | None, prec: int) -> MPF:
    """-w * [z*log(p) + (1-z)*log(1-p)]."""
    if w == 0:
        return ZERO
    if math.isnan(p_):
        per = NAN
    else:
        P, Z = MPF(p_), MPF(z)
        one_minus_p = _one_minus(P)
        # -log p >= 0 and -log(1-p) >= 0 for p in [0, 1]: then the signs are those of z, 1-z
        same = not (0 <= p_ <= 1) or 0 <= z <= 1
        per = _two_terms(Z, lambda: -_log(P), _one_minus(Z), lambda: -_log(one_minus_p), prec, same)
    return per if w is None else mul0(MPF(w), per)


# --- rows ---------------------------------------------------------------------------------
def _neg_log_softmax_row(xs: list[MPF], needed: Sequence[int], prec: int) -> dict[int, MPF]:
    """-log_softmax(xs)_c for c in `needed`, each with `prec` correct bits (see module doc)."""
    if any(_isnan(v) for v in xs):
        return {c: NAN for c in needed}
    n_pinf = sum(1 for v in xs if v == INF)
    if n_pinf == 1:
        return {c: (ZERO if xs[c] == INF else INF) for c in needed}
    if n_pinf >= 2:
        return {c: (NAN if xs[c] == INF else INF) for c in needed}
    finite = [v for v in xs if v != -INF]
    if not finite:
        return {c: NAN for c in needed}
    fin_needed = [c for c in needed if xs[c] != -INF]
    out = {c: INF for c in needed if xs[c] == -INF}
    if not fin_needed:
        return out
    mags = [_mag(v) for v in finite if v != 0]
    scale = max(mags) if mags else 0
    p = prec
    cap = prec + GUARD + max(scale, 1) + UNDERFLOW_BITS
    while True:
        with mp.workprec(p + GUARD):
            L = mp.log(mp.fsum([mp.exp(v) for v in finite]))  # log-sum-exp, straight
            r = {c: L - xs[c] for c in fin_needed}
        mL = _mag(L) if L != 0 else -(10**9)
        lost = 0
        for c, v in r.items():
            ref = max(mL, _mag(xs[c]) if xs[c] != 0 else -(10**9), 1)
            lost = max(lost, ref - _mag(v) if v > 0 else p + GUARD)
        if lost <= p + GUARD - prec - MARGIN or p >= cap:
            break
        p = min(cap, max(2 * p, prec + lost + GUARD))
    for c, v in r.items():
        out[c] = v if v > 0 else ZERO  # true value > 0; a non-positive v is below the floor
    return out


def _row_terms_sum(coefs: list[MPF], per_class: Callable[[int], dict[int, MPF]], prec: int) -> MPF:
    needed = [c for c, a in enumerate(coefs) if a != 0]
    if not needed:
        return ZERO

    def terms(p):
        vals = per_class(p)
        return [mul0(coefs[c], vals[c]) for c in needed]

    return _accurate_sum(terms, prec)


def _as_mpf_list(a: np.ndarray) -> list[MPF]:
    return [MPF(v) for v in np.asarray(a, dtype=np.float64).ravel().tolist()]


def _softmax_rows(x: np.ndarray, y: np.ndarray, cw, prec: int) -> np.ndarray:
    rows = x.reshape(-1, x.shape[-1])
    ys = y.reshape(-1, x.shape[-1])
    W = _as_mpf_list(cw) if cw is not None else None
    out = []
    for xr, yr in zip(rows, ys):
        xs = _as_mpf_list(xr)
        coefs = _as_mpf_list(yr)
        if W is not None:
            coefs = [mul0(a, b) for a, b in zip(coefs, W)]
        if any(_isnan(v) for v in xs):
            out.append(NAN)  # nan anywhere in a logit row: the row's loss is nan
            continue
        needed = [c for c, a in enumerate(coefs) if a != 0]
        out.append(_row_terms_sum(coefs, lambda p, xs=xs, needed=needed: _neg_log_softmax_row(xs, needed, p), prec))
    return _obj(out, x.shape[:-1])


def _sparse_softmax_rows(x: np.ndarray, k: np.ndarray, cw, prec: int) -> np.ndarray:
    C = x.shape[-1]
    rows = x.reshape(-1, C)
    ks = np.asarray(k).reshape(-1).tolist()
    W = _as_mpf_list(cw) if cw is not None else None
    out = []
    for xr, kk in zip(rows, ks):
        if not 0 <= kk < C:
            out.append(NAN)
            continue
        xs = _as_mpf_list(xr)
        if any(_isnan(v) for v in xs):
            out.append(NAN)
            continue
        coef = W[kk] if W is not None else MPF(1)
        if coef == 0:
            out.append(ZERO)
            continue
        out.append(mul0(coef, _neg_log_softmax_row(xs, [kk], prec)[kk]))
    return _obj(out, x.shape[:-1])


def _categorical_rows(pr: np.ndarray, y: np.ndarray, cw, prec: int) -> np.ndarray:
    C = pr.shape[-1]
    rows = pr.reshape(-1, C)
    ys = y.reshape(-1, C)
    W = _as_mpf_list(cw) if cw is not None else None
    out = []
    for prow, yr in zip(rows, ys):
        ps = _as_mpf_list(prow)
        coefs = _as_mpf_list(yr)
        if W is not None:
            coefs = [mul0(a, b) for a, b in zip(coefs, W)]

        def per_class(p, ps=ps, coefs=coefs):
            with mp.workprec(p + GUARD):
                return {c: -_log(ps[c]) for c, a in enumerate(coefs) if a != 0}

        out.append(_row_terms_sum(coefs, per_class, prec))
    return _obj(out, pr.shape[:-1])


def _sparse_categorical_rows(pr: np.ndarray, k: np.ndarray, cw, prec: int) -> np.ndarray:
    C = pr.shape[-1]
    rows = pr.reshape(-1, C)
    ks = np.asarray(k).reshape(-1).tolist()
    W = _as_mpf_list(cw) if cw is not None else None
    out = []
    for prow, kk in zip(rows, ks):
        if not 0 <= kk < C:
            out.append(NAN)
            continue
        pk = MPF(float(np.float64(prow[kk])))
        coef = W[kk] if W is not None else MPF(1)
        with mp.workprec(prec + GUARD):
            out.append(mul0(coef, -_log(pk)))
    return _obj(out, pr.shape[:-1])


def _obj(values: list, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out.reshape(shape)


# --- entry points ---------------------------------------------------------------------------
def _f64(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a).astype(np.float64)


def unreduced(family: str, inputs, targets, params: Mapping[str, Any] | None = None, prec: int = 128) -> np.ndarray:
    """The loss before any reduction: the inputs' shape (elementwise) or inputs.shape[:-1] (rows)."""
    params = dict(params or {})
    fam = FAMILIES[family]
    x = _f64(inputs)
    t = np.asarray(targets) if fam.targets == "index" else _f64(targets)
    pw, ew, cw = _f64(params.get("pos_weight")), _f64(params.get("weight")), _f64(params.get("class_weight"))

    if family in ("sigmoid", "binary"):
        xs = x.ravel().tolist()
        zs = np.broadcast_to(t, x.shape).ravel().tolist()
        ws = np.broadcast_to(ew, x.shape).ravel().tolist() if ew is not None else [None] * len(xs)
        if family == "sigmoid":
            qs = np.broadcast_to(pw, x.shape).ravel().tolist() if pw is not None else [1.0] * len(xs)
            vals = [_sigmoid_elem(a, b, c, d, prec) for a, b, c, d in zip(xs, zs, qs, ws)]
        else:
            vals = [_binary_elem(a, b, d, prec) for a, b, d in zip(xs, zs, ws)]
        return _obj(vals, x.shape)
    if family == "softmax":
        return _softmax_rows(x, t, cw, prec)
    if family == "sparse_softmax":
        return _sparse_softmax_rows(x, t, cw, prec)
    if family == "categorical":
        return _categorical_rows(x, t, cw, prec)
    if family == "sparse_categorical":
        return _sparse_categorical_rows(x, t, cw, prec)
    raise ValueError(f"unknown family {family!r}")


def _divide(num: MPF, den: MPF) -> MPF:
    """num/den with IEEE semantics for den = 0 (0/0 and nan/0 are nan, x/0 is +-inf)."""
    if den == 0:
        if num == 0 or _isnan(num):
            return NAN
        return INF if num > 0 else -INF
    return num / den


def _mean(values: list[MPF]) -> MPF:
    if not values:
        return NAN
    return _divide(_sum(values), MPF(len(values)))


def reduce(per: np.ndarray, family: str, targets, params: Mapping[str, Any] | None = None,
           conventions: Mapping[str, Any] | None = None, prec: int = 128) -> np.ndarray:
    """Apply axis_mean (elementwise families) and the case's reduction to `unreduced` values."""
    params = dict(params or {})
    conv = {**CONVENTIONS, **(conventions or {})}
    fam = FAMILIES[family]
    reduction = params.get("reduction", "none")
    per = np.asarray(per, dtype=object)
    with mp.workprec(prec + GUARD):
        if conv["axis_mean"] and not fam.rowwise:
            flat = per.reshape(-1, per.shape[-1]) if per.shape[-1] else np.empty((int(np.prod(per.shape[:-1])), 0), object)
            per = _obj([_mean(list(r)) for r in flat], per.shape[:-1])
        if reduction == "none":
            res = per
        elif reduction == "sum":
            res = _obj([_sum(list(per.ravel()))], ())
        elif reduction == "mean":
            cw = params.get("class_weight")
            k = np.asarray(targets)
            if conv["mean"] == "target_weight" and fam.targets == "index" and cw is not None:
                W = _as_mpf_list(cw)
                den = mp.fsum([W[i] for i in k.ravel().tolist() if 0 <= i < len(W)])
                res = _obj([_divide(_sum(list(per.ravel())), den)], ())
            else:
                res = _obj([_mean(list(per.ravel()))], ())
        else:
            raise ValueError(f"unknown reduction {reduction!r}")
    with mp.workprec(prec):
        return _obj([+v for v in res.ravel()], res.shape)


def loss(family: str, inputs, targets, params: Mapping[str, Any] | None = None,
         conventions: Mapping[str, Any] | None = None, prec: int = 128) -> np.ndarray:
    """The loss of `family` on exactly these values, as an object array of mpf (`prec` bits)."""
    per = unreduced(family, inputs, targets, params, prec)
    return reduce(per, family, targets, params, conventions, prec)


# --- rounding to a tested dtype and measuring against it ------------------------------------
@lru_cache(maxsize=None)
def _format(dtype: str) -> tuple[int, int, int]:
    """(p, emin, emax): significand bits incl. the implicit one, min normal and max exponent."""
    fi = finfo(dtype)
    return int(fi.nmant) + 1, int(fi.minexp), int(fi.maxexp) - 1


def from_float(a) -> np.ndarray:
    """Exact mpf values of a float array (any numpy float type, long double included)."""
    a = np.asarray(a)
    out = np.empty(a.shape, dtype=object)
    flat = out.reshape(-1)
    if a.dtype == np.longdouble and np.finfo(np.longdouble).nmant > 52:
        m, e = np.frexp(a.ravel())
        bits = np.finfo(np.longdouble).nmant + 1
        for i, (mi, ei, v) in enumerate(zip(m, e.tolist(), a.ravel())):
            if not np.isfinite(v):
                flat[i] = NAN if np.isnan(v) else (INF if v > 0 else -INF)
            else:
                with mp.workprec(bits + 8):  # exact: the significand has `bits` bits
                    flat[i] = mp.ldexp(MPF(int(np.ldexp(mi, bits))), int(ei) - bits)
        return out
    for i, v in enumerate(a.astype(np.float64).ravel().tolist()):
        flat[i] = MPF(v)
    return out


def _round_scalar(v: MPF, dtype: str) -> float:
    """v rounded to nearest (ties to even) in `dtype`, as a float64 holding that value."""
    if _isnan(v):
        return math.nan
    if mp.isinf(v):
        return math.inf if v > 0 else -math.inf
    if v == 0:
        return 0.0
    p, emin, emax = _format(dtype)
    sign, man, exp, bc = v._mpf_
    e = exp + bc - 1  # floor(log2 |v|)
    if e > emax:
        return -math.inf if sign else math.inf
    if e < emin - p:  # |v| < 2**(emin-p): below half the smallest subnormal
        return -0.0 if sign else 0.0
    q = max(e, emin) - (p - 1)  # exponent of the quantum (ulp) at |v|
    if exp >= q:
        n = man << (exp - q)
    else:
        shift = q - exp
        n = man >> shift
        rem = man & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and n & 1):
            n += 1
    if n.bit_length() - 1 + q >= emax + 1:
        return -math.inf if sign else math.inf
    r = math.ldexp(n, q)
    return -r if sign else r


def to_float(a, dtype_name: str) -> np.ndarray:
    """Correctly rounded values (nearest, ties to even, overflow to inf) of mpf values in a dtype."""
    a = np.asarray(a, dtype=object)
    vals = [_round_scalar(MPF(v), dtype_name) for v in a.ravel()]
    return np.array(vals, dtype=np.float64).reshape(a.shape).astype(np_dtype(dtype_name))


def ulp_at(v: MPF, dtype: str) -> MPF:
    """Spacing of `dtype` at |v| (the gap above |v|'s binade floor; the subnormal gap near 0)."""
    p, emin, _ = _format(dtype)
    if v == 0:
        return mp.ldexp(MPF(1), emin - (p - 1))
    e = _mag(v) - 1
    return mp.ldexp(MPF(1), max(e, emin) - (p - 1))


def _cls(x: float) -> int:
    return 1 if math.isnan(x) else 2 if x == math.inf else 3 if x == -math.inf else 0


def oracle_error(approx, exact, dtype: str) -> dict[str, np.ndarray]:
    """Error of `approx` (a float64 / long double array, e.g. oracle.loss's result) against
    `exact` (mpf values) in ulps of `dtype`.

    Returns arrays of the result's shape:
      ulps:      |approx - exact| / ulp_dtype(exact) as float (0 where both round to the
                 same non-finite class, inf where the classes differ after rounding to dtype)
      rounded:   approx rounded to dtype the harness's way (dtypes.to_dtype), as float64
      correct:   exact correctly rounded to dtype, as float64
      class_ok:  the non-finite classes (after rounding) agree
      rounds_ok: rounded == correct (nan == nan, +0 == -0)
    """
    from .dtypes import to_dtype  # the harness's rounding, applied to the oracle's values

    approx = np.asarray(approx)
    exact = np.asarray(exact, dtype=object)
    with np.errstate(over="ignore"):
        rounded = to_dtype(approx.astype(np.float64), dtype).astype(np.float64)
    correct = to_float(exact, dtype).astype(np.float64)
    a_mp = from_float(approx)
    ulps = np.zeros(approx.shape, dtype=np.float64)
    class_ok = np.ones(approx.shape, dtype=bool)
    rounds_ok = np.ones(approx.shape, dtype=bool)
    with mp.workprec(64):  # the error itself needs only a few correct digits
        for idx in np.ndindex(approx.shape):
            r, c = float(rounded[idx]), float(correct[idx])
            cr, cc = _cls(r), _cls(c)
            if cr != cc:
                class_ok[idx] = False
                rounds_ok[idx] = False
                ulps[idx] = math.inf
                continue
            rounds_ok[idx] = (r == c) or cr != 0
            if cr != 0:
                continue
            ex = exact[idx]
            d = mp.fsub(a_mp[idx], ex)  # one rounding, to 64 bits
            ulps[idx] = float(abs(d) / ulp_at(ex, dtype)) if d != 0 else 0.0
    return {"ulps": ulps, "rounded": rounded, "correct": correct, "class_ok": class_ok, "rounds_ok": rounds_ok}


# --- checking the oracle ----------------------------------------------------------------------
def conventions_for(family: str) -> list[dict[str, Any]]:
    """The convention sets under which a family's reference is computed: the defaults, plus
    mean="target_weight" (index targets) and axis_mean=True (elementwise families)."""
    fam = FAMILIES[family]
    convs: list[dict[str, Any]] = [{}]
    if fam.targets == "index":
        convs.append({"mean": "target_weight"})
    if not fam.rowwise:
        convs.append({"axis_mean": True})
    return convs


def compare_case(case, dtype: str, prec: int = 128, per: np.ndarray | None = None) -> list[dict[str, Any]]:
    """harness.oracle against this module on one case in one dtype, for every convention set
    of `conventions_for`: one dict per set with the oracle's and this module's values and
    `oracle_error`'s arrays. `per` may pass precomputed `unreduced` values of the case."""
    from . import oracle
    from .dtypes import reference_precision

    x, t, p = case.in_dtype(dtype)
    ref_prec, label = reference_precision(dtype)
    if per is None:
        per = unreduced(case.family, x, t, p, prec)
    out = []
    for conv in conventions_for(case.family):
        o = oracle.loss(case.family, x, t, p, conv, ref_prec)
        m = reduce(per, case.family, t, p, conv, prec)
        if o.shape != m.shape:
            raise AssertionError(f"{case.id} [{dtype}] {conv}: oracle shape {o.shape} != mpref shape {m.shape}")
        out.append({"case": case.id, "dtype": dtype, "conventions": conv, "reference": label,
                    "oracle": o, "mp": m, **oracle_error(o, m, dtype)})
    return out
