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
* Poly-1 (softmax, poly_epsilon e): each class term -log p_c + e*(1 - p_c), 1 - p_c = -expm1(log p_c).
* focal: a(z)*(1-p_t)^gamma*CE with 1-p_t = z*(1-p) + (1-z)*p, p = 1/(1+e^-x) (or the
  probability), a(z) = alpha*z + (1-alpha)*(1-z); categorical: alpha*sum_c y_c*(1-p_c)^gamma*(-log p_c).
  Label smoothing smooths the targets exactly first (focal losses are not affine in them).
* sampled softmax / NCE: harness.sampled.mp_loss_rows.
* axis and where: the same layout as the oracle (`oracle.to_last_axis`, `oracle.full_where`:
  left-out classes are -inf logits with zero coefficients; a left-out index target gives 0).

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
from mpmath.libmp import fnan, finf, fninf, fzero

from .dtypes import finfo, np_dtype
from .spec import CONVENTIONS, DEFAULT_GAMMA, FAMILIES, FOCAL_FAMILIES, SAMPLED_FAMILIES

MPF = mpmath.mpf
GUARD = 32  # extra bits carried by every intermediate
MARGIN = 12  # bits a result must have beyond `prec` after cancellation, else recompute
UNDERFLOW_BITS = 1100  # results this far below their operands are "zero" to every dtype
ZERO = MPF(0)
ONE = MPF(1)
NAN = MPF("nan")
INF = MPF("inf")


# --- scalar helpers -------------------------------------------------------------------
# Predicates read the (sign, mantissa, exponent, bitcount) representation: mpf comparisons are
# slow, and these run for every element. A zero mantissa means 0 (exponent 0), inf or nan.
def _mag(v: MPF) -> int:
    """floor(log2|v|) + 1 for a finite non-zero mpf (exact, from the representation)."""
    _sign, man, exp, bc = v._mpf_
    return exp + bc


def _is_zero(v: MPF) -> bool:
    return v._mpf_ == fzero


def _isnan(v: MPF) -> bool:
    return v._mpf_ == fnan


def _is_finite(v: MPF) -> bool:
    _sign, man, exp, _bc = v._mpf_
    return bool(man) or not exp


def _is_pos(v: MPF) -> bool:
    """v > 0 (finite or +inf)."""
    sign, man, exp, _bc = v._mpf_
    return not sign and (bool(man) or v._mpf_ == finf)


def _is_neg(v: MPF) -> bool:
    """v < 0 (finite or -inf)."""
    sign, man, exp, _bc = v._mpf_
    return bool(sign) and (bool(man) or v._mpf_ == fninf)


def mul0(a: MPF, b: MPF) -> MPF:
    """a*b, exact, with 0*anything = 0 (including 0*inf and 0*nan)."""
    if _is_zero(a) or _is_zero(b):
        return ZERO
    if not (_is_finite(a) and _is_finite(b)):
        return a * b
    return mp.fmul(a, b, exact=True)


def _one_minus(v: MPF) -> MPF:
    """1 - v, exact."""
    if not _is_finite(v):
        return 1 - v
    return mp.fsub(1, v, exact=True)


def _log(v: MPF) -> MPF:
    """Natural log on [0, inf]: log 0 = -inf; nan for negative or nan arguments."""
    if _isnan(v) or _is_neg(v):
        return NAN
    if _is_zero(v):
        return -INF
    return mp.log(v)


def _softplus(t: MPF) -> MPF:
    """log(1 + e^t) at the current working precision (log1p adds 1 exactly)."""
    if not _is_finite(t):
        return NAN if _isnan(t) else (INF if _is_pos(t) else ZERO)
    return mp.log1p(mp.exp(t))


def _special_sum(values: Sequence[MPF]) -> MPF | None:
    """The sum when some value is nan or infinite (IEEE rules), else None."""
    specials = {v._mpf_ for v in values if not _is_finite(v)}
    if not specials:
        return None
    if fnan in specials or (finf in specials and fninf in specials):
        return NAN
    return INF if finf in specials else -INF


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
        if not _is_finite(s):
            return s
        nz = [t for t in terms if not _is_zero(t)]
        if not nz or all(_is_pos(t) for t in nz) or all(_is_neg(t) for t in nz):
            return s  # no cancellation: relative error ~ 2**-p
        big = max(_mag(t) for t in nz)
        lost = big - _mag(s) if not _is_zero(s) else p + GUARD
        if lost <= p + GUARD - prec - MARGIN:
            return s
        if cap is None:
            cap = prec + GUARD + big - min(_mag(t) for t in nz) + UNDERFLOW_BITS
        if p >= cap:
            return s
        p = min(cap, max(2 * p, prec + lost + GUARD))


# --- elementwise families ---------------------------------------------------------------
def _two_terms(a: MPF, f: Callable[[], MPF], b: MPF, g: Callable[[], MPF], prec: int,
               same_sign: bool) -> MPF:
    """a*f() + b*g() with `prec` correct bits; a term whose coefficient is zero is 0, and f, g
    are evaluated (at the working precision in force) only when their coefficient is non-zero.
    same_sign: the two terms cannot cancel (a caller's cheap check on float operands)."""
    if same_sign or _is_zero(a) or _is_zero(b):
        # no cancellation possible: one rounding per operation at prec + GUARD bits
        with mp.workprec(prec + GUARD):
            terms = ([a * f()] if not _is_zero(a) else []) + ([b * g()] if not _is_zero(b) else [])
            return _sum(terms) if len(terms) != 1 else terms[0]

    def terms(p):
        with mp.workprec(p + GUARD):
            return [a * f(), b * g()]

    return _accurate_sum(terms, prec)


def _sigmoid_elem(x: float, z: float, q: float, w: float | None, prec: int) -> MPF:
    """w * [q*z*softplus(-x) + (1-z)*softplus(x)]; nan in any input gives nan."""
    if any(v is not None and math.isnan(v) for v in (x, z, q, w)):
        return NAN
    if w == 0:
        return ZERO
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
        per = _two_terms(a, lambda: _softplus(-X), b, lambda: _softplus(X), prec, same)
    return per if w is None else mul0(MPF(w), per)


def _binary_elem(p_: float, z: float, w: float | None, prec: int) -> MPF:
    """-w * [z*log(p) + (1-z)*log(1-p)]; nan in any input gives nan."""
    if any(v is not None and math.isnan(v) for v in (p_, z, w)):
        return NAN
    if w == 0:
        return ZERO
    P, Z = MPF(p_), MPF(z)
    one_minus_p = _one_minus(P)
    # -log p >= 0 and -log(1-p) >= 0 for p in [0, 1]: then the signs are those of z, 1-z
    same = not (0 <= p_ <= 1) or 0 <= z <= 1
    per = _two_terms(Z, lambda: -_log(P), _one_minus(Z), lambda: -_log(one_minus_p), prec, same)
    return per if w is None else mul0(MPF(w), per)


# --- rows ---------------------------------------------------------------------------------
def _neg_log_softmax_row(x: np.ndarray, needed: Sequence[int], prec: int) -> dict[int, MPF]:
    """-log_softmax(x)_c for c in `needed` (x: one float64 row), each with `prec` correct bits,
    with the limits of the module doc for non-finite logits."""
    if np.isnan(x).any():
        return {c: NAN for c in needed}
    n_pinf = int(np.count_nonzero(x == np.inf))
    if n_pinf == 1:
        return {c: (ZERO if x[c] == np.inf else INF) for c in needed}
    if n_pinf >= 2:
        return {c: (NAN if x[c] == np.inf else INF) for c in needed}
    fin = x > -np.inf  # no +inf or nan left: the finite entries
    if not fin.any():
        return {c: NAN for c in needed}
    out = {c: INF for c in needed if not fin[c]}  # e^-inf = 0: -log softmax = +inf
    fin_needed = [c for c in needed if fin[c]]
    if not fin_needed:
        return out
    finite = [MPF(v) for v in x[fin].tolist()]
    xc = {c: MPF(float(x[c])) for c in fin_needed}
    scale = max([_mag(v) for v in finite if not _is_zero(v)] or [0])
    p = prec
    cap = prec + GUARD + max(scale, 1) + UNDERFLOW_BITS
    NEVER = -(10**9)
    while True:
        with mp.workprec(p + GUARD):
            L = mp.log(mp.fsum([mp.exp(v) for v in finite]))  # log-sum-exp, straight from the definition
            r = {c: L - v for c, v in xc.items()}
        mL = _mag(L) if not _is_zero(L) else NEVER
        lost = 0
        for c, v in r.items():
            ref = max(mL, _mag(xc[c]) if not _is_zero(xc[c]) else NEVER, 1)
            lost = max(lost, ref - _mag(v) if _is_pos(v) else p + GUARD)
        if lost <= p + GUARD - prec - MARGIN or p >= cap:
            break
        p = min(cap, max(2 * p, prec + lost + GUARD))
    for c, v in r.items():
        out[c] = v if _is_pos(v) else ZERO  # true value > 0; a non-positive v is below the floor
    return out


def _row_terms_sum(coefs: dict[int, MPF], per_class: Callable[[int], dict[int, MPF]], prec: int) -> MPF:
    """sum over c of coefs[c] * per_class(p)[c] (coefs: the non-zero coefficients only)."""
    if not coefs:
        return ZERO

    def terms(p):
        vals = per_class(p)
        return [mul0(a, vals[c]) for c, a in coefs.items()]

    return _accurate_sum(terms, prec)


def _coefficients(y: np.ndarray, w: np.ndarray | None) -> dict[int, MPF]:
    """{c: y_c * w_c} (exact) for the classes whose coefficient is not zero."""
    nz = (y != 0) if w is None else (y != 0) & (w != 0)
    out = {}
    for c in np.flatnonzero(nz).tolist():
        out[c] = MPF(float(y[c])) if w is None else mul0(MPF(float(y[c])), MPF(float(w[c])))
    return out


def _softmax_rows(x: np.ndarray, y: np.ndarray, cw, prec: int) -> np.ndarray:
    C = x.shape[-1]
    out = []
    for xr, yr in zip(x.reshape(-1, C), y.reshape(-1, C)):
        if np.isnan(xr).any():
            out.append(NAN)  # nan anywhere in a logit row: the row's loss is nan
            continue
        coefs = _coefficients(yr, cw)
        out.append(_row_terms_sum(coefs, lambda p, xr=xr, cs=list(coefs): _neg_log_softmax_row(xr, cs, p), prec))
    return _obj(out, x.shape[:-1])


def _sparse_softmax_rows(x: np.ndarray, k: np.ndarray, cw, prec: int) -> np.ndarray:
    C = x.shape[-1]
    out = []
    for xr, kk in zip(x.reshape(-1, C), np.asarray(k).reshape(-1).tolist()):
        if not 0 <= kk < C or np.isnan(xr).any():
            out.append(NAN)  # a target outside [0, C), or nan in the row
            continue
        coef = MPF(float(cw[kk])) if cw is not None else MPF(1)
        if _is_zero(coef):
            out.append(ZERO)
            continue
        out.append(mul0(coef, _neg_log_softmax_row(xr, [kk], prec)[kk]))
    return _obj(out, x.shape[:-1])


def _categorical_rows(pr: np.ndarray, y: np.ndarray, cw, prec: int) -> np.ndarray:
    C = pr.shape[-1]
    out = []
    for prow, yr in zip(pr.reshape(-1, C), y.reshape(-1, C)):
        coefs = _coefficients(yr, cw)

        def per_class(p, prow=prow, cs=list(coefs)):
            with mp.workprec(p + GUARD):
                return {c: -_log(MPF(float(prow[c]))) for c in cs}

        out.append(_row_terms_sum(coefs, per_class, prec))
    return _obj(out, pr.shape[:-1])


def _sparse_categorical_rows(pr: np.ndarray, k: np.ndarray, cw, prec: int) -> np.ndarray:
    C = pr.shape[-1]
    out = []
    for prow, kk in zip(pr.reshape(-1, C), np.asarray(k).reshape(-1).tolist()):
        if not 0 <= kk < C:
            out.append(NAN)
            continue
        coef = MPF(float(cw[kk])) if cw is not None else MPF(1)
        with mp.workprec(prec + GUARD):
            out.append(mul0(coef, -_log(MPF(float(prow[kk])))))
    return _obj(out, pr.shape[:-1])


def _poly_rows(x: np.ndarray, y: np.ndarray, cw, eps: float, prec: int) -> np.ndarray:
    """sum_c w_c*y_c*[-log p_c + eps*(1 - p_c)] per row; each class term summed accurately."""
    C = x.shape[-1]
    out = []
    E = MPF(eps)
    for xr, yr in zip(x.reshape(-1, C), y.reshape(-1, C)):
        if np.isnan(xr).any():
            out.append(NAN)
            continue
        coefs = _coefficients(yr, cw)

        def per_class(p, xr=xr, cs=list(coefs)):
            def class_terms(c):
                def terms(p2):
                    nls = _neg_log_softmax_row(xr, [c], p2)[c]
                    with mp.workprec(p2 + GUARD):
                        u = ONE if not _is_finite(nls) else -mp.expm1(-nls)
                        return [nls, mul0(E, u)]
                return _accurate_sum(terms, p)
            return {c: class_terms(c) for c in cs}

        out.append(_row_terms_sum(coefs, per_class, prec))
    return _obj(out, x.shape[:-1])


def _sigmoid_mp(X: MPF) -> MPF:
    if not _is_finite(X):
        return ONE if _is_pos(X) else ZERO
    return 1 / (1 + mp.exp(-X))


def _focal_elem(family: str, x: float, z: MPF, alpha, gamma: float, prec: int) -> MPF:
    """a(z) * (1-p_t)^gamma * CE(x, z) (z: an mpf, exactly smoothed when label smoothing applies)."""
    if math.isnan(x) or _isnan(z):
        return NAN
    with mp.workprec(prec + 2 * GUARD):  # no cancellation for z, alpha in [0, 1]
        if family == "sigmoid_focal":
            ce = _sigmoid_elem(x, z, 1.0, None, prec + GUARD)
            p, q = _sigmoid_mp(MPF(x)), _sigmoid_mp(-MPF(x))
        else:
            ce = _binary_elem(x, z, None, prec + GUARD)
            p, q = MPF(x), _one_minus(MPF(x))
        m = mul0(z, q) + mul0(_one_minus(z), p)
        factor = ONE if gamma == 0 else (ZERO if _is_zero(m) else mp.power(m, MPF(gamma)))
        v = mul0(factor, ce)
        if alpha is not None:
            A = MPF(alpha)
            v = mul0(mul0(A, z) + mul0(_one_minus(A), _one_minus(z)), v)
        return v


def _focal_rows(family: str, x: np.ndarray, y: np.ndarray, alpha, gamma: float, prec: int) -> np.ndarray:
    """alpha * sum_c y_c*(1-p_c)^gamma*(-log p_c) per row (y: mpf coefficients)."""
    C = x.shape[-1]
    out = []
    for xr, yr in zip(x.reshape(-1, C), y.reshape(-1, C)):
        if np.isnan(xr).any() or any(_isnan(v) for v in yr):
            out.append(NAN)
            continue
        cs = [c for c in range(C) if not _is_zero(yr[c])]
        nls = _neg_log_softmax_row(xr, cs, prec + GUARD) if family == "softmax_focal" else None
        with mp.workprec(prec + 2 * GUARD):
            terms = []
            for c in cs:
                if family == "softmax_focal":
                    L = nls[c]
                    u = ONE if not _is_finite(L) else -mp.expm1(-L)
                else:
                    L, u = -_log(MPF(float(xr[c]))), _one_minus(MPF(float(xr[c])))
                factor = ONE if gamma == 0 else (ZERO if _is_zero(u) else mp.power(u, MPF(gamma)))
                terms.append(mul0(yr[c], mul0(factor, L)))
            v = _sum(terms) if terms else ZERO
            out.append(v if alpha is None else mul0(MPF(alpha), v))
    return _obj(out, x.shape[:-1])


def _smooth_exact(t: np.ndarray, eps: float, n: int) -> np.ndarray:
    """(1-eps)*t + eps/n for every target, exactly (an object array of mpf)."""
    E = MPF(eps)
    with mp.workprec(4096):
        vals = [mul0(_one_minus(E), MPF(v)) + E / n for v in np.asarray(t, np.float64).ravel().tolist()]
    return _obj(vals, np.shape(t))


def _obj(values: list, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out.reshape(shape)


# --- entry points ---------------------------------------------------------------------------
def _f64(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a).astype(np.float64)


def unreduced(family: str, inputs, targets, params: Mapping[str, Any] | None = None, prec: int = 128) -> np.ndarray:
    """The loss before any reduction: the inputs' shape (elementwise) or the inputs' shape
    without the class axis (rows).

    label_smoothing eps uses that every non-focal family's loss is affine in its targets:
    loss((1-eps)*y + eps/C) = (1-eps)*loss(y) + eps*loss(1/C), C outcomes (2 for the binary
    families), with index targets as one-hot rows. sample_weight multiplies each sample's loss."""
    from .oracle import full_where, to_last_axis

    if family in SAMPLED_FAMILIES:
        from .sampled import mp_loss_rows

        return mp_loss_rows(family, inputs, targets, params or {}, prec)
    inputs, targets, params, restore = to_last_axis(family, inputs, targets, dict(params or {}), False)
    params = dict(params)
    params.pop("axis", None)
    eps = params.pop("label_smoothing", None)
    sw = params.pop("sample_weight", None)
    ii = params.pop("ignore_index", None)
    wh = params.pop("where", None)
    fam = FAMILIES[family]
    ignored = None
    if ii is not None and fam.targets == "index":
        ignored = np.asarray(targets) == ii
        targets = np.where(ignored, 0, targets)
    if wh is not None:
        wh = full_where(wh, np.shape(inputs))
        inputs = np.where(wh, _f64(inputs), -np.inf)
        if fam.targets == "dense":
            targets = np.where(wh, _f64(targets), 0.0)
    if family in FOCAL_FAMILIES:
        n = np.shape(inputs)[-1] if fam.rowwise else 2
        t = _smooth_exact(targets, float(eps), n) if eps is not None else _obj(
            [MPF(v) for v in _f64(targets).ravel().tolist()], np.shape(targets))
        per = _focal(family, inputs, t, params, prec)
    else:
        per = _unreduced(family, inputs, targets, params, prec)
        if eps is not None:
            per = _smoothed(per, family, inputs, params, float(eps), prec, wh)
    if wh is not None and fam.targets == "index":  # a left-out target: an empty sum
        k = np.asarray(targets)
        C = wh.shape[-1]
        kin = [bool(0 <= kk < C and w[kk]) or not 0 <= kk < C
               for kk, w in zip(k.ravel().tolist(), wh.reshape(-1, C))]
        per = _obj([v if keep else ZERO for keep, v in zip(kin, per.ravel())], per.shape)
    if sw is not None:
        sw = _f64(sw)
        swb = np.broadcast_to(sw if per.ndim == sw.ndim else sw[..., None], per.shape)
        with mp.workprec(prec + GUARD):
            vals = [NAN if math.isnan(w) else mul0(MPF(w), v) for w, v in zip(swb.ravel().tolist(), per.ravel())]
        per = _obj(vals, per.shape)
    if ignored is not None:  # an ignored row contributes exactly 0, whatever its values
        per = _obj([ZERO if ig else v for ig, v in zip(ignored.ravel().tolist(), per.ravel())], per.shape)
    return restore(per)


def _focal(family: str, inputs, t: np.ndarray, params: Mapping[str, Any], prec: int) -> np.ndarray:
    x = _f64(inputs)
    alpha, gamma = params.get("alpha"), float(params.get("gamma", DEFAULT_GAMMA))
    if FAMILIES[family].rowwise:
        return _focal_rows(family, x, t, alpha, gamma, prec)
    memo: dict[tuple, MPF] = {}
    vals = []
    for a in zip(x.ravel().tolist(), t.ravel()):
        v = memo.get(a)
        if v is None:
            v = memo[a] = _focal_elem(family, a[0], a[1], alpha, gamma, prec)
        vals.append(v)
    return _obj(vals, x.shape)


def _smoothed(per: np.ndarray, family: str, inputs, params: Mapping[str, Any], eps: float, prec: int,
              where=None) -> np.ndarray:
    fam = FAMILIES[family]
    x = _f64(inputs)
    if fam.rowwise:
        dense = {"sparse_softmax": "softmax", "sparse_categorical": "categorical"}.get(family, family)
        ones = np.ones(x.shape) if where is None else where.astype(np.float64)
        uniform = _unreduced(dense, x, ones, params, prec)  # sum over all (included) classes
        C = np.sum(ones, axis=-1).ravel().tolist()
        with mp.workprec(prec + GUARD):
            a = _one_minus(MPF(eps))
            bs = [MPF(eps) / c if c else NAN for c in C]
            vals = [_sum([mul0(a, u), mul0(b, v)]) for u, v, b in zip(per.ravel(), uniform.ravel(), bs)]
        return _obj(vals, per.shape)
    else:
        uniform = _unreduced(family, x, np.full(x.shape, 0.5), params, prec)
        with mp.workprec(prec + GUARD):
            a, b = _one_minus(MPF(eps)), MPF(eps)
    with mp.workprec(prec + GUARD):
        vals = [_sum([mul0(a, u), mul0(b, v)]) for u, v in zip(per.ravel(), uniform.ravel())]
    return _obj(vals, per.shape)


def _unreduced(family: str, inputs, targets, params: Mapping[str, Any], prec: int) -> np.ndarray:
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
            args = zip(xs, zs, qs, ws)
            elem = _sigmoid_elem
        else:
            args = zip(xs, zs, ws)
            elem = _binary_elem
        memo: dict[tuple, MPF] = {}  # low-precision dtypes repeat values; local, so nothing outlives the call
        vals = []
        for a in args:
            v = memo.get(a)
            if v is None:
                v = memo[a] = elem(*a, prec)
            vals.append(v)
        return _obj(vals, x.shape)
    if family == "softmax" and params.get("poly_epsilon") is not None:
        return _poly_rows(x, t, cw, float(params["poly_epsilon"]), prec)
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
    """A mean's num/den; a zero denominator (no weight at all) leaves the mean undefined: nan."""
    if _is_zero(den):
        return NAN
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
            per = np.moveaxis(per, params.get("axis", -1), -1)
            n_rows = int(np.prod(per.shape[:-1]))
            flat = per.reshape(-1, per.shape[-1]) if per.shape[-1] else np.empty((n_rows, 0), object)
            per = _obj([_mean(list(r)) for r in flat], per.shape[:-1])
        if reduction == "none":
            res = per
        elif reduction == "sum":
            res = _obj([_sum(list(per.ravel()))], ())
        elif reduction == "mean":
            cw = params.get("class_weight")
            k = np.asarray(targets)
            ii = params.get("ignore_index") if fam.targets == "index" else None
            kept = [i for i in k.ravel().tolist() if ii is None or i != ii] if fam.targets == "index" else None
            if conv["mean"] == "target_weight" and fam.targets == "index" and cw is not None:
                W = [MPF(v) for v in np.asarray(cw, dtype=np.float64).ravel().tolist()]
                den = mp.fsum([W[i] for i in kept if 0 <= i < len(W)])
                res = _obj([_divide(_sum(list(per.ravel())), den)], ())
            elif conv["mean"] in ("weight_sum", "nonzero_weights"):
                keep = None if ii is None else (k != ii)
                res = _obj([_divide(_sum(list(per.ravel())), _weight_den(per.shape, params, fam, conv, keep))], ())
            elif ii is not None:  # ignored rows leave the count
                res = _obj([_divide(_sum(list(per.ravel())), MPF(len(kept)))], ())
            else:
                res = _obj([_mean(list(per.ravel()))], ())
        else:
            raise ValueError(f"unknown reduction {reduction!r}")
    with mp.workprec(prec):
        return _obj([+v for v in res.ravel()], res.shape)


def _weight_den(shape, params, fam, conv, keep=None) -> MPF:
    """Weighted-mean denominators (TF v1, Keras mean_with_sample_weight): the sum of the applied
    weights, or the number of nonzero ones; ignored rows (keep False) leave it."""
    one = np.ones(shape)
    sw, ew = params.get("sample_weight"), params.get("weight")
    a = one if sw is None else np.broadcast_to(
        np.asarray(sw, np.float64) if len(shape) == np.ndim(sw) else np.asarray(sw, np.float64)[..., None], shape)
    b = one if (ew is None or fam.rowwise or conv["axis_mean"]) else np.broadcast_to(np.asarray(ew, np.float64), shape)
    kk = np.ones(shape, bool) if keep is None else np.broadcast_to(keep, shape)
    w = [MPF(u) * MPF(v) if k else ZERO for u, v, k in zip(a.ravel().tolist(), b.ravel().tolist(), kk.ravel().tolist())]
    if conv["mean"] == "nonzero_weights":
        return MPF(sum(1 for v in w if not _is_zero(v)))
    return mp.fsum(w)


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


def _exact_mpf(v) -> MPF:
    """A Python / numpy number as an mpf, without rounding."""
    if isinstance(v, np.floating) and np.dtype(type(v)) == np.longdouble:
        return from_float(np.asarray(v))[()]
    if isinstance(v, (int, np.integer)):
        with mp.workprec(max(53, int(v).bit_length() + 1)):
            return MPF(int(v))
    return MPF(float(v))


def to_float(a, dtype_name: str) -> np.ndarray:
    """Correctly rounded values (nearest, ties to even, overflow to inf) of mpf values in a dtype."""
    a = np.asarray(a, dtype=object)
    vals = [_round_scalar(v if isinstance(v, MPF) else _exact_mpf(v), dtype_name) for v in a.ravel()]
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
#: Bound on harness.oracle's error, in ulps of the tested dtype (float64 is graded against long
#: double, the others against float64). Measured by tests/measure_reference_error.py on the
#: corpus (seed 0): float16 3.5e-13, bfloat16 4.3e-14, float32 2.7e-9, float64 1.4e-3; on 2000
#: random finite Hypothesis cases (cases/strategies.py): float32 4.2e-9, float64 1.6e-3. The
#: bounds sit a little above those, far below the 0.5 ulp correct rounding needs. M2's focal
#: families raise the worst case ((1-p_t)^gamma multiplies relative errors by gamma; smoothed
#: focal targets are rounded once): 5e-12 (float16), 1.7e-8 (float32), 3.3e-3 (float64).
ORACLE_ERROR_BOUND_ULP = {"float16": 1e-11, "bfloat16": 1e-12, "float32": 1e-7, "float64": 1e-2}


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


def midpoint_distance(exact, rounded: float, correct: float, dtype: str) -> float:
    """Distance, in ulps of `dtype`, from `exact` to the midpoint of two adjacent values."""
    with mp.workprec(256):
        mid = (mp.mpf(rounded) + mp.mpf(correct)) / 2
        return float(abs(exact - mid) / ulp_at(exact, dtype))


def oracle_problems(records, dtype: str, bound: float | None = None) -> list[str]:
    """Problems in `compare_case` records, one line each (none when all is well): a non-finite
    class that differs, an error of `bound` ulps or more (default ORACLE_ERROR_BOUND_ULP), and a
    to_dtype(oracle) that is not the correctly rounded value although the exact value is
    farther from the rounding midpoint than the oracle's error (i.e. avoidable misrounding)."""
    bound = ORACLE_ERROR_BOUND_ULP[dtype] if bound is None else bound
    problems = []
    for r in records:
        where = f"{r['case']} [{dtype}] {r['conventions'] or 'default conventions'}"
        u = np.atleast_1d(r["ulps"])
        shape = u.shape

        def flat_idx(i, shp=r["ulps"].shape):
            return tuple(int(j) for j in np.unravel_index(i, shp)) if shp else ()

        oracle_v, mp_v = np.atleast_1d(r["oracle"]), np.atleast_1d(r["mp"])
        rounded, correct = np.atleast_1d(r["rounded"]), np.atleast_1d(r["correct"])
        for i in np.flatnonzero(~np.atleast_1d(r["class_ok"]).reshape(shape)):
            problems.append(f"{where} element {flat_idx(i)}: oracle {oracle_v.flat[i]!r} vs mpmath "
                            f"{mp.nstr(mp_v.flat[i], 20)}: non-finite class differs")
        finite = np.where(np.isfinite(u), u, 0.0)
        if finite.size and finite.max() >= bound:
            i = int(np.argmax(finite))
            problems.append(f"{where} element {flat_idx(i)}: oracle {oracle_v.flat[i]!r} vs mpmath "
                            f"{mp.nstr(mp_v.flat[i], 25)}: error {finite.flat[i]:.3g} ulp >= bound {bound:g}")
        bad_round = np.atleast_1d(r["rounds_ok"]).reshape(shape) | ~np.atleast_1d(r["class_ok"]).reshape(shape)
        for i in np.flatnonzero(~bad_round):
            dist = midpoint_distance(mp_v.flat[i], float(rounded.flat[i]), float(correct.flat[i]), dtype)
            if not dist <= u.flat[i] * (1 + 1e-6):
                problems.append(
                    f"{where} element {flat_idx(i)}: to_dtype(oracle) = {rounded.flat[i]!r} but the correctly "
                    f"rounded value is {correct.flat[i]!r} (exact {mp.nstr(mp_v.flat[i], 25)}, oracle "
                    f"{oracle_v.flat[i]!r}, error {u.flat[i]:.3g} ulp, exact value {dist:.3g} ulp from the midpoint)")
    return problems
