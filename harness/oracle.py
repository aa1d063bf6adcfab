"""The exact reference: each loss family's definition, evaluated in float64 or long double.

Independent of every framework under test (numpy only). Conventions, stated once:

* Coefficient zero annihilates: 0 * inf = 0, and 0 * (an undefined limit) = 0. This is the
  "0 * log 0 = 0" convention of cross-entropy extended to every coefficient (a zero target,
  a zero weight, a zero pos_weight): a term whose coefficient is zero contributes nothing.
* nan in, nan out: a nan in any value an output depends on (a logit or probability of its
  element or row, its target, its weight) makes that output nan, zero coefficients or not.
* Infinite logits are limits. softplus(+inf) = inf, softplus(-inf) = 0. In a softmax row with
  exactly one +inf logit, softmax is the one-hot of that class (log-softmax 0 there, -inf
  elsewhere); with several +inf logits the limit depends on their rates, so it is undefined (nan).
* A row of all -inf logits has no softmax (nan terms).
* Undefined reductions are nan: a mean over nothing, and a weighted mean whose weights sum
  to zero (whatever the weighted sum).
* `axis` moves the class axis (or the axis of a per-sample mean) last; the result keeps the
  other axes in order. `where` leaves classes out of the softmax and of the sum (optax's
  documented "elements to include"); a row with none left, or whose index target is left
  out, contributes 0 (an empty sum).
* Focal losses are not affine in the targets: label smoothing smooths the targets first.

Accuracy: every formula is arranged so its terms are non-negative for valid inputs (no
cancellation), log(sum exp) is computed as log1p(sum of the non-maximal terms), and
softplus as max(x,0) + log1p(exp(-|x|)). The inputs are the dtype-rounded values, widened
exactly. `tests/test_oracle.py` measures the remaining error against mpmath at 128 bits.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .spec import CONVENTIONS, DEFAULT_GAMMA, FAMILIES, FOCAL_FAMILIES, SAMPLED_FAMILIES


def mul0(a, b):
    """a*b with 0*anything = 0 (the coefficient-zero convention)."""
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where((a == 0) | (b == 0), np.zeros((), dtype=np.result_type(a, b)), a * b)


def _nan_if(loss, *deps, axis=None):
    """nan where any dependency is nan (reduced over `axis` for row-wise families)."""
    bad = np.zeros(np.shape(loss), dtype=bool)
    for d in deps:
        if d is None:
            continue
        m = np.isnan(np.asarray(d, dtype=np.float64))
        bad = bad | (np.any(m, axis=axis) if axis is not None else np.broadcast_to(m, bad.shape))
    return np.where(bad, np.nan, loss)


def softplus(x):
    """log(1 + exp(x)), stable: max(x, 0) + log1p(exp(-|x|))."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# --- elementwise families -------------------------------------------------------
def sigmoid_elementwise(x, z, pos_weight=None, weight=None):
    """w*[(1-z)*x + (1+(q-1)*z)*softplus(-x)], split at x=0 so both terms are >= 0:
    x >= 0: (1-z)*x + L*log1p(exp(-x));  x < 0: -q*z*x + L*log1p(exp(x)),
    with L = 1+(q-1)*z formed as (1-z) + q*z (no cancellation for small q)."""
    one = np.ones((), dtype=x.dtype)
    q = one if pos_weight is None else pos_weight
    with np.errstate(over="ignore", invalid="ignore"):
        L = (one - z) + mul0(q, z)
        tail = mul0(L, np.log1p(np.exp(-np.abs(x))))
        pos = mul0(one - z, x)  # x >= 0 branch
        neg = -mul0(mul0(q, z), x)  # x < 0 branch
        loss = np.where(x >= 0, pos, neg) + tail
    loss = loss if weight is None else mul0(weight, loss)
    return _nan_if(loss, x, z, pos_weight, weight)


def binary_elementwise(p, z, weight=None):
    """-w*[z*log(p) + (1-z)*log(1-p)], with log(1-p) as log1p(-p)."""
    one = np.ones((), dtype=p.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -(mul0(z, np.log(p)) + mul0(one - z, np.log1p(-p)))
    loss = loss if weight is None else mul0(weight, loss)
    return _nan_if(loss, p, z, weight)


# --- row-wise (class axis last) ---------------------------------------------------
def neg_log_softmax(x):
    """-log_softmax(x) along the last axis, with the limits described in the module doc.

    Computed as (m - x_c) + log1p(t), m = max, t = sum of exp(x_j - m) over all j but one
    argmax, so the term of the largest logit keeps full relative accuracy."""
    x = np.asarray(x)
    C = x.shape[-1]
    out = np.empty(x.shape, dtype=x.dtype)
    if x.size == 0:
        return out
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        n_pinf = np.sum(x == np.inf, axis=-1, keepdims=True)
        has_nan = np.any(np.isnan(x), axis=-1, keepdims=True)
        finite_x = np.where(np.isinf(x) & (x > 0), -np.inf, x)  # the +inf handled by rule
        m = np.max(finite_x, axis=-1, keepdims=True)
        safe_m = np.where(np.isfinite(m), m, 0)
        e = np.exp(finite_x - safe_m)
        # drop one argmax term (it is exactly 1 when m is finite)
        k = np.argmax(finite_x, axis=-1)[..., None]
        np.put_along_axis(e, k, 0, axis=-1)
        t = np.sum(e, axis=-1, keepdims=True)
        regular = (safe_m - finite_x) + np.log1p(t)
        # one +inf: 0 at it, +inf elsewhere; several: undefined at them, +inf elsewhere
        at_inf = x == np.inf
        one_inf = np.where(at_inf, 0.0, np.inf).astype(x.dtype)
        many_inf = np.where(at_inf, np.nan, np.inf).astype(x.dtype)
        out = np.where(n_pinf == 0, regular, np.where(n_pinf == 1, one_inf, many_inf))
        # all -inf row (and no +inf): softmax undefined
        out = np.where((n_pinf == 0) & ~np.isfinite(m), np.nan, out)
        out = np.where(has_nan, np.nan, out)
    assert out.shape[-1] == C
    return out


def one_minus_softmax(nls):
    """1 - softmax_c from nls = -log_softmax_c, as -expm1(-nls): full relative accuracy near 1."""
    with np.errstate(invalid="ignore"):
        return -np.expm1(-nls)


def poly1(nls, eps):
    """-log p + eps*(1-p) from nls = -log p. For eps >= -1 it is h(nls) + (1+eps)*(1-p) with
    h(t) = t - (1 - e^-t) = sum_{k>=2} (-t)^k/k! >= 0 (the series below t = 1/2), so no term
    cancels; for eps < -1 the value itself may cancel and is formed directly."""
    u = one_minus_softmax(nls)
    e = nls.dtype.type(eps)
    if eps < -1:
        return nls + e * u
    t = np.where(np.isfinite(nls) & (nls < 0.5), nls, 0).astype(nls.dtype)
    series = np.zeros_like(t)
    term = -t
    for k in range(2, 30):  # (1/2)^k/k! < 2**-64 * h(1/2) well before k = 30
        term = term * -t / nls.dtype.type(k)
        series = series + term
    with np.errstate(invalid="ignore"):
        h = np.where(np.isfinite(nls) & (nls < 0.5), series, nls - u)
    return h + mul0(nls.dtype.type(1) + e, u)


def softmax_rows(x, y, class_weight=None, poly_epsilon=None):
    """-sum_c w_c*y_c*log_softmax(x)_c per row (plus the Poly-1 term eps*w_c*y_c*(1-p_c))."""
    coef = y if class_weight is None else mul0(y, class_weight)
    nls = neg_log_softmax(x)
    per_class = nls if poly_epsilon is None else poly1(nls, poly_epsilon)
    loss = np.sum(mul0(coef, per_class), axis=-1)
    return _nan_if(loss, x, y, None if class_weight is None else np.broadcast_to(class_weight, np.shape(x)), axis=-1)


def sparse_rows(x, k, class_weight=None):
    """w_k * -log_softmax(x)_k per row; nan for a target outside [0, C)."""
    return _nan_if(_pick(neg_log_softmax(x), k, class_weight), x, axis=-1)


def _pick(per_class, k, class_weight):
    """Row loss of class k from a per-class loss array; nan for k outside [0, C)."""
    C = per_class.shape[-1]
    k = np.asarray(k)
    valid = (k >= 0) & (k < C)
    kk = np.where(valid, k, 0)[..., None]
    loss = np.take_along_axis(per_class, kk, axis=-1)[..., 0] if per_class.size else np.zeros(k.shape, per_class.dtype)
    if class_weight is not None:
        loss = mul0(np.asarray(class_weight)[kk[..., 0]], loss)
    return np.where(valid, loss, np.nan)


def sparse_categorical_rows(p, k, class_weight=None):
    """w_k * -log(p_k) per row; nan for a target outside [0, C)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _nan_if(_pick(-np.log(p), k, class_weight), p, axis=-1)


def categorical_rows(p, y, class_weight=None):
    """-sum_c w_c*y_c*log(p_c) per row."""
    coef = y if class_weight is None else mul0(y, class_weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.sum(-mul0(coef, np.log(p)), axis=-1)
    return _nan_if(loss, p, y, None if class_weight is None else np.broadcast_to(class_weight, np.shape(p)), axis=-1)


# --- focal ---------------------------------------------------------------------------
def sigmoid(x):
    """sigmoid(x) with one exp of an exact argument: e^x/(1+e^x) below 0, 1/(1+e^-x) above."""
    with np.errstate(over="ignore", invalid="ignore"):
        ex = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + ex), ex / (1 + ex))


def _balance(z, alpha):
    """alpha*z + (1-alpha)*(1-z), the binary focal class balance."""
    one = np.ones((), dtype=z.dtype)
    a = z.dtype.type(alpha)
    return mul0(a, z) + mul0(one - a, one - z)


def focal_elementwise(family, x, z, alpha=None, gamma=DEFAULT_GAMMA):
    """a(z) * (1-p_t)^gamma * CE, 1-p_t = z*(1-p) + (1-z)*p; p = sigmoid(x) or x itself."""
    one = np.ones((), dtype=x.dtype)
    if family == "sigmoid_focal":
        ce, p, q = sigmoid_elementwise(x, z), sigmoid(x), sigmoid(-x)
    else:
        ce, p, q = binary_elementwise(x, z), x, one - x
    m = mul0(z, q) + mul0(one - z, p)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        factor = np.power(m, x.dtype.type(gamma))
    loss = mul0(factor, ce)
    if alpha is not None:
        loss = mul0(_balance(z, alpha), loss)
    return _nan_if(loss, x, z)


def focal_rows(family, x, y, alpha=None, gamma=DEFAULT_GAMMA):
    """-alpha * sum_c y_c*(1-p_c)^gamma*log(p_c) per row; p = softmax(x) or x itself."""
    if family == "softmax_focal":
        nls = neg_log_softmax(x)
        u = one_minus_softmax(nls)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            nls = -np.log(x)
        u = np.ones((), dtype=x.dtype) - x
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        factor = np.power(u, x.dtype.type(gamma))
    loss = np.sum(mul0(y, mul0(factor, nls)), axis=-1)
    if alpha is not None:
        loss = mul0(x.dtype.type(alpha), loss)
    return _nan_if(loss, x, y, axis=-1)


def to_last_axis(family: str, x, t, params: Mapping[str, Any], axis_mean: bool):
    """The case with its `axis` (class axis, or per-sample mean axis) moved last: (x, t, params,
    restore), where restore puts an elementwise result back in the inputs' layout. Layout only,
    shared by both references."""
    axis = params.get("axis")
    x = np.asarray(x)
    if axis is None or x.ndim == 0 or axis % x.ndim == x.ndim - 1:
        return x, t, params, (lambda r: r)
    ax = axis % x.ndim
    fam = FAMILIES[family]

    def mv(a):
        return np.moveaxis(np.asarray(a), ax, -1)

    p = dict(params)
    for k in ("weight", "where"):
        if k in p and np.ndim(p[k]) == x.ndim:
            p[k] = mv(p[k])
    if "pos_weight" in p:
        p["pos_weight"] = mv(np.broadcast_to(p["pos_weight"], x.shape))
    t = mv(t) if fam.targets == "dense" else t
    restore = (lambda r: np.moveaxis(r, -1, ax)) if not (fam.rowwise or axis_mean) else (lambda r: r)
    return mv(x), t, p, restore


def full_where(where, shape):
    """A `where` mask of the inputs' shape (a per-row mask is broadcast over the class axis)."""
    w = np.asarray(where, dtype=bool)
    return np.broadcast_to(w[..., None] if w.ndim == len(shape) - 1 else w, shape)


# --- entry point ------------------------------------------------------------------
def loss(
    family: str,
    inputs: np.ndarray,
    targets: np.ndarray,
    params: Mapping[str, Any] | None = None,
    conventions: Mapping[str, Any] | None = None,
    precision=np.float64,
) -> np.ndarray:
    """The reference loss of `family` on exactly these (dtype-rounded) values.

    Arrays are widened to `precision` (np.float64 or np.longdouble); the result is in it."""
    params = dict(params or {})
    conv = {**CONVENTIONS, **(conventions or {})}
    fam = FAMILIES[family]
    reduction = params.get("reduction", "none")
    if family in SAMPLED_FAMILIES:
        from .sampled import loss_rows

        return reduce(loss_rows(family, inputs, targets, params, precision), reduction)
    inputs, targets, params, restore = to_last_axis(family, inputs, targets, params, conv["axis_mean"])

    def w(a):
        return None if a is None else np.asarray(a).astype(np.float64).astype(precision)

    x = w(inputs)
    t = np.asarray(targets) if fam.targets == "index" else w(targets)
    pw, ew, cw = w(params.get("pos_weight")), w(params.get("weight")), w(params.get("class_weight"))
    sw = w(params.get("sample_weight"))
    eps = params.get("label_smoothing")
    extra = {k: params[k] for k in ("alpha", "gamma", "poly_epsilon") if params.get(k) is not None}
    ignored = None
    if params.get("ignore_index") is not None and fam.targets == "index":
        ignored = t == params["ignore_index"]
        t = np.where(ignored, 0, t)  # any valid class: the row's value is discarded below
    wh = None
    if params.get("where") is not None:  # left-out classes: -inf logits, zero coefficients
        wh = full_where(params["where"], x.shape)
        x = np.where(wh, x, precision(-np.inf))
        if fam.targets == "dense":
            t = np.where(wh, t, precision(0))
    if eps is not None and family in FOCAL_FAMILIES:  # not affine in the targets: smooth them
        e = precision(eps)
        t = mul0(precision(1) - e, t) + e / precision(x.shape[-1] if fam.rowwise else 2)
        eps = None

    per = _unreduced(family, x, t, pw, ew, cw, **extra)
    if eps is not None:  # affine in the targets: no smoothed target is ever rounded
        e = precision(eps)
        one = precision(1)
        if fam.rowwise:
            dense = {"sparse_softmax": "softmax", "sparse_categorical": "categorical"}.get(family, family)
            ones = np.ones(x.shape, dtype=x.dtype) if wh is None else wh.astype(x.dtype)
            uniform = _unreduced(dense, x, ones, pw, ew, cw, **extra)
            with np.errstate(divide="ignore", invalid="ignore"):
                b = e / np.sum(ones, axis=-1)
        else:
            uniform = _unreduced(family, x, np.full(x.shape, 0.5, dtype=x.dtype), pw, ew, cw, **extra)
            b = e
        per = _nan_if(mul0(one - e, per) + mul0(b, uniform), per)
    if wh is not None and fam.targets == "index":  # a left-out target: an empty sum
        kin = _pick(wh.astype(x.dtype), t, None)
        per = np.where(kin == 0, per.dtype.type(0), per)

    if conv["axis_mean"] and not fam.rowwise:
        per = _mean(per, axis=-1)
    if sw is not None:
        swb = sw if per.ndim == sw.ndim else sw[..., None]
        per = _nan_if(mul0(swb, per), np.broadcast_to(swb, per.shape))
    if ignored is not None:
        per = np.where(ignored, per.dtype.type(0), per)
    applied = None  # the weights the loss was multiplied by, in its shape (TF v1 means)
    if conv["mean"] in ("weight_sum", "nonzero_weights"):
        applied = np.ones(per.shape, dtype=per.dtype)
        if sw is not None:
            applied = applied * (sw if per.ndim == sw.ndim else sw[..., None])
        if ew is not None and not fam.rowwise and not conv["axis_mean"]:
            applied = applied * ew
    per = restore(per)
    if applied is not None:
        applied = restore(applied)
    return reduce(per, reduction, conv["mean"], family=family, targets=t, class_weight=cw, ignored=ignored,
                  weights=applied)


def _unreduced(family, x, t, pw, ew, cw, alpha=None, gamma=DEFAULT_GAMMA, poly_epsilon=None):
    """The family's loss per element (elementwise) or per row, before any reduction."""
    if family in ("sigmoid_focal", "binary_focal"):
        return focal_elementwise(family, x, t, alpha, gamma)
    if family in ("softmax_focal", "categorical_focal"):
        return focal_rows(family, x, t, alpha, gamma)
    if family == "sigmoid":
        return sigmoid_elementwise(x, t, pw, ew)
    if family == "binary":
        return binary_elementwise(x, t, ew)
    if family == "softmax":
        return softmax_rows(x, t, cw, poly_epsilon)
    if family == "sparse_softmax":
        return sparse_rows(x, t, cw)
    if family == "categorical":
        return categorical_rows(x, t, cw)
    if family == "sparse_categorical":
        return sparse_categorical_rows(x, t, cw)
    raise ValueError(f"unknown family {family!r}")  # pragma: no cover


def _mean(a, axis=None):
    a = np.asarray(a)
    n = a.size if axis is None else a.shape[axis]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(a, axis=axis) / a.dtype.type(n) if n else np.full(
            a.shape[:-1] if axis is not None else (), np.nan, a.dtype
        )


def reduce(per, reduction, mean="elements", *, family=None, targets=None, class_weight=None, ignored=None,
           weights=None):
    """Apply a canonical reduction. mean="target_weight" divides by the sum of the
    targets' class weights (PyTorch's weighted mean for class-index targets); ignored rows
    (ignore_index) leave the denominator. A zero denominator leaves the mean undefined (nan)."""
    per = np.asarray(per)
    if reduction == "none":
        return per
    if reduction == "sum":
        return np.asarray(np.sum(per))
    if reduction != "mean":
        raise ValueError(f"unknown reduction {reduction!r}")
    keep = np.ones(per.shape, bool) if ignored is None else ~np.asarray(ignored)
    if mean in ("weight_sum", "nonzero_weights"):
        w = np.ones(per.shape, per.dtype) if weights is None else np.broadcast_to(weights, per.shape)
        w = np.where(keep, w, per.dtype.type(0))  # ignored rows leave the denominator
        den = np.sum(w) if mean == "weight_sum" else per.dtype.type(np.count_nonzero(w))
        if per.size == 0 or den == 0:  # no weight: undefined
            return np.asarray(np.nan, dtype=per.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.sum(per) / den)
    if mean == "target_weight" and targets is not None and np.asarray(targets).dtype.kind in "iu" \
            and class_weight is not None:
        k = np.asarray(targets)
        valid = (k >= 0) & (k < class_weight.shape[0]) & keep
        den = np.sum(np.where(valid, class_weight[np.where(valid, k, 0)], 0))
        if den == 0:  # no weight at all: the weighted mean is undefined, whatever the sum
            return np.asarray(np.nan, dtype=per.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.sum(per) / den)
    if ignored is not None:
        n = int(np.sum(keep))
        if n == 0:
            return np.asarray(np.nan, dtype=per.dtype)
        return np.asarray(np.sum(per) / per.dtype.type(n))
    return np.asarray(_mean(per))
