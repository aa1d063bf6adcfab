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


def softmax_probs(x, nls):
    """softmax(x) along the last axis as exp(x_j - m)/(1 + t) (m the row's max, t the sum of the
    other terms): the shift is exact in the reference precision for the tested dtypes' values, so
    each p_j keeps a few ulps of relative accuracy, where exp(-nls) would amplify nls's rounding
    by |log p_j|. Rows with a +inf, nan or only -inf logits take exp(-nls) (their limits)."""
    if x.size == 0:
        return np.empty(x.shape, dtype=x.dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        e = np.exp(x - np.where(np.isfinite(m), m, 0))
        p = e / np.sum(e, axis=-1, keepdims=True)
        regular = np.isfinite(m) & ~np.any(np.isnan(x), axis=-1, keepdims=True)
        return np.where(regular, p, np.exp(-nls))


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
class Prepared:
    """A case in the reference's layout: the class (or mean) axis last, every array widened to
    the reference precision, ignored index targets and `where` applied, focal targets smoothed.
    Shared by `loss` and `grad`, so both evaluate exactly the same definition."""

    def __init__(self, family: str, inputs, targets, params, conv, precision) -> None:
        fam = FAMILIES[family]
        self.family, self.fam, self.conv, self.precision = family, fam, conv, precision
        self.shape = np.shape(inputs)
        axis = params.get("axis")
        self.axis = axis % len(self.shape) if axis is not None and len(self.shape) else None
        inputs, targets, params, self.restore = to_last_axis(family, inputs, targets, params, conv["axis_mean"])

        def w(a):
            return None if a is None else np.asarray(a).astype(np.float64).astype(precision)

        x = w(inputs)
        t = np.asarray(targets) if fam.targets == "index" else w(targets)
        self.pw, self.ew, self.cw = w(params.get("pos_weight")), w(params.get("weight")), w(params.get("class_weight"))
        self.sw = w(params.get("sample_weight"))
        eps = params.get("label_smoothing")
        self.extra = {k: params[k] for k in ("alpha", "gamma", "poly_epsilon") if params.get(k) is not None}
        self.ignored = None
        if params.get("ignore_index") is not None and fam.targets == "index":
            self.ignored = t == params["ignore_index"]
            t = np.where(self.ignored, 0, t)  # any valid class: the row's value is discarded below
        self.wh = None
        if params.get("where") is not None:  # left-out classes: -inf logits, zero coefficients
            self.wh = full_where(params["where"], x.shape)
            x = np.where(self.wh, x, precision(-np.inf))
            if fam.targets == "dense":
                t = np.where(self.wh, t, precision(0))
        self.target_scale = precision(1)  # d(smoothed target)/d(target)
        if eps is not None and family in FOCAL_FAMILIES:  # not affine in the targets: smooth them
            e = precision(eps)
            t = mul0(precision(1) - e, t) + e / precision(x.shape[-1] if fam.rowwise else 2)
            self.target_scale = precision(1) - e
            eps = None
        self.x, self.t, self.eps = x, t, eps

    def smoothing_parts(self):
        """Affine label smoothing as [(coefficient, targets, family)]: the loss is the sum of
        coefficient * family's loss at those targets (one part without smoothing)."""
        x, family, p = self.x, self.family, self.precision
        if self.eps is None:
            return [(p(1), self.t, family)]
        e = p(self.eps)
        if self.fam.rowwise:
            dense = {"sparse_softmax": "softmax", "sparse_categorical": "categorical"}.get(family, family)
            ones = np.ones(x.shape, dtype=x.dtype) if self.wh is None else self.wh.astype(x.dtype)
            with np.errstate(divide="ignore", invalid="ignore"):
                b = e / np.sum(ones, axis=-1)
            return [(p(1) - e, self.t, family), (b, ones, dense)]
        return [(p(1) - e, self.t, family), (e, np.full(x.shape, 0.5, dtype=x.dtype), family)]

    def target_left_out(self):
        """Rows whose index target `where` leaves out (their loss is an empty sum), or None."""
        if self.wh is None or self.fam.targets != "index":
            return None
        return _pick(self.wh.astype(self.x.dtype), self.t, None) == 0

    def per_sample(self):
        """The loss per output before sample weights, ignored rows and the reduction."""
        parts = self.smoothing_parts()
        per = None
        for coef, t, fam in parts:
            part = _unreduced(fam, self.x, t, self.pw, self.ew, self.cw, **self.extra)
            part = part if len(parts) == 1 else mul0(coef, part)
            per = part if per is None else per + part
        if len(parts) > 1:
            per = _nan_if(per, _unreduced(self.family, self.x, self.t, self.pw, self.ew, self.cw, **self.extra))
        left = self.target_left_out()
        if left is not None:
            per = np.where(left, per.dtype.type(0), per)
        if self.conv["axis_mean"] and not self.fam.rowwise:
            per = _mean(per, axis=-1)
        return per

    def sample_weight_b(self, shape):
        """The sample weights in the per-output shape `shape`."""
        return self.sw if len(shape) == self.sw.ndim else self.sw[..., None]

    def applied_weights(self, shape):
        """The weights the loss was multiplied by, in the per-output shape (TF v1 means)."""
        applied = np.ones(shape, dtype=self.precision)
        if self.sw is not None:
            applied = applied * self.sample_weight_b(shape)
        if self.ew is not None and not self.fam.rowwise and not self.conv["axis_mean"]:
            applied = applied * self.ew
        return applied


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
    reduction = params.get("reduction", "none")
    if family in SAMPLED_FAMILIES:
        from .sampled import loss_rows

        return reduce(loss_rows(family, inputs, targets, params, precision), reduction)
    c = Prepared(family, inputs, targets, params, conv, precision)
    per = c.per_sample()
    if c.sw is not None:
        swb = c.sample_weight_b(per.shape)
        per = _nan_if(mul0(swb, per), np.broadcast_to(swb, per.shape))
    if c.ignored is not None:
        per = np.where(c.ignored, per.dtype.type(0), per)
    applied = c.applied_weights(per.shape) if conv["mean"] in ("weight_sum", "nonzero_weights") else None
    per = c.restore(per)
    if applied is not None:
        applied = c.restore(applied)
    return reduce(per, reduction, conv["mean"], family=family, targets=c.t, class_weight=c.cw, ignored=c.ignored,
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


# --- gradients -------------------------------------------------------------------------
# Each gradient is written beside its loss below as a pair (P, N) of non-negative arrays with
# gradient = P - N, every term placed by its sign, so nothing cancels inside P or N. The value
# is P - N; P + N is its scale: where P and N nearly cancel, the reference carries an absolute
# error of about u_ref * (P + N), which `grad` returns so the grading can widen the tolerance by
# exactly that much (see harness.compare.grade's `ref_bound`).
# Convention (harness.spec GRADIENTS): the gradient of the sum of the outputs, i.e. the
# vector-Jacobian product with a cotangent of ones; for `mean`, the API's normalisation.
def _signed(v):
    """(P, N) of an array of either sign (nan kept in both)."""
    v = np.asarray(v)
    z = v.dtype.type(0)
    return np.where(np.isnan(v) | (v > 0), v, z), np.where(np.isnan(v), v, np.where(v < 0, -v, z))


def _times(g, c):
    """(P, N) * c for a coefficient c of any sign (0 annihilates; nan propagates)."""
    P, N = g
    c = np.asarray(c)
    nonneg = ~(c < 0)
    nc = np.where(nonneg, c, -c)
    return np.where(nonneg, mul0(P, nc), mul0(N, nc)), np.where(nonneg, mul0(N, nc), mul0(P, nc))


def _plus(a, b):
    """(P, N) + (P', N'). A part is negative only where a coefficient outside the family's domain
    (a negative weight, a target beyond [0, 1]) flipped it; inf - inf there is nan: undefined."""
    with np.errstate(invalid="ignore"):
        return a[0] + b[0], a[1] + b[1]


def _excl_sum(h):
    """sum over c != j of h_c, for every j, along the last axis (h >= 0): the row total less
    h_j, except at each row's largest term, whose complement is summed directly (that is the
    only place the subtraction could cancel)."""
    total = np.sum(h, axis=-1, keepdims=True)
    if h.shape[-1] == 0:
        return np.zeros_like(h)
    k = np.argmax(np.where(np.isnan(h), -np.inf, h), axis=-1)[..., None]
    rest = h.copy()
    np.put_along_axis(rest, k, 0, axis=-1)
    with np.errstate(invalid="ignore"):
        out = total - h
    np.put_along_axis(out, k, np.sum(rest, axis=-1, keepdims=True), axis=-1)
    return out


def _softmax_pullback(p, u, h):
    """(P, N) of p_j*sum_c h_c - h_j = p_j*sum_{c != j} h_c - h_j*(1 - p_j), for h of any sign:
    the gradient through softmax of sum_c f_c(p_c) with h_c = -p_c*f_c'(p_c) (CE: h = w*y)."""
    hp, hn = _signed(h)
    return mul0(p, _excl_sum(hp)) + mul0(hn, u), mul0(p, _excl_sum(hn)) + mul0(hp, u)


def sigmoid_elementwise_grad(x, z, pos_weight=None, weight=None):
    """d/dx = w*[(1-z)*sigmoid(x) - q*z*sigmoid(-x)];  d/dz = w*[q*softplus(-x) - softplus(x)]
    (= w*[-x + (q-1)*softplus(-x)]);  d/dq = w*z*softplus(-x);  d/dw = the unweighted loss."""
    one = np.ones((), dtype=x.dtype)
    q = one if pos_weight is None else pos_weight
    qz = mul0(q, z)
    gx = (mul0(one - z, sigmoid(x)), mul0(qz, sigmoid(-x)))
    # d/dz as -x + (q-1)*softplus(-x): each term placed by its sign, so q = 1 gives -x exactly
    # (q*softplus(-x) - softplus(x) cancels to nothing near x = 0)
    qm1 = q - one
    zero = np.zeros((), dtype=x.dtype)
    gz = (np.maximum(-x, zero) + mul0(np.maximum(qm1, zero), softplus(-x)),
          np.maximum(x, zero) + mul0(np.maximum(-qm1, zero), softplus(-x)))
    gq = (mul0(z, softplus(-x)), np.zeros_like(x))
    out = {"x": gx, "t": gz, "pos_weight": gq}
    if weight is not None:
        out = {k: _times(v, weight) for k, v in out.items()}
        out["weight"] = _signed(sigmoid_elementwise(x, z, pos_weight))
    return {k: tuple(_nan_if(a, x, z, pos_weight, weight) for a in v) for k, v in out.items()}


def binary_elementwise_grad(p, z, weight=None):
    """d/dp = w*[(1-z)/(1-p) - z/p];  d/dz = w*[-log(p) + log(1-p)];  d/dw = the unweighted loss."""
    one = np.ones((), dtype=p.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        gp = (mul0(one - z, one / (one - p)), mul0(z, one / p))
        gz = (-np.log(p), -np.log1p(-p))
        # near p = 1/2 the two logs cancel: log((1-p)/p) = log1p((1-2p)/p), with 1-2p exact there
        mid = (p >= 0.25) & (p <= 0.75)
        v = np.log1p((one - 2 * p) / np.where(mid, p, one))
        gz = (np.where(mid, np.maximum(v, 0), gz[0]), np.where(mid, np.maximum(-v, 0), gz[1]))
    out = {"x": gp, "t": gz}
    if weight is not None:
        out = {k: _times(v, weight) for k, v in out.items()}
        out["weight"] = _signed(binary_elementwise(p, z))
    return {k: tuple(_nan_if(a, p, z, weight) for a in v) for k, v in out.items()}


def _row_nan(g, *deps):
    """A row-wise gradient pair with nan over the whole row wherever the row's loss is nan."""
    bad = np.zeros(np.shape(g[0]), dtype=bool)
    for d in deps:
        if d is not None:
            bad = bad | np.any(np.isnan(np.asarray(d, dtype=np.float64)), axis=-1, keepdims=True)
    return tuple(np.where(bad, np.nan, a) for a in g)


def softmax_rows_grad(x, y, class_weight=None, poly_epsilon=None):
    """With a_c = w_c*y_c and p = softmax(x):  d/dx_j = p_j*sum_c a_c - a_j  (plus Poly-1's
    eps*(p_j*sum_c a_c*p_c - a_j*p_j));  d/dy_c = w_c*[-log p_c + eps*(1-p_c)];  d/dw_c =
    y_c*[-log p_c + eps*(1-p_c)]."""
    a = y if class_weight is None else mul0(y, class_weight)
    nls = neg_log_softmax(x)
    p = softmax_probs(x, nls)
    u = one_minus_softmax(nls)
    gx = _softmax_pullback(p, u, a)
    per_class = (nls, np.zeros_like(nls))
    if poly_epsilon is not None:
        e = x.dtype.type(poly_epsilon)
        gx = _plus(gx, _times(_softmax_pullback(p, u, mul0(a, p)), e))
        per_class = _plus(per_class, _times((u, np.zeros_like(u)), e))
    cw = None if class_weight is None else np.broadcast_to(class_weight, np.shape(x))
    out = {"x": gx, "t": per_class if cw is None else _times(per_class, cw), "class_weight": _times(per_class, y)}
    return {k: _row_nan(v, x, y, cw) for k, v in out.items()}


def _one_hot(k, C, dtype):
    """Index targets as one-hot rows; a row with k outside [0, C) is nan."""
    k = np.asarray(k)
    valid = (k >= 0) & (k < C)
    oh = (np.arange(C) == np.where(valid, k, -1)[..., None]).astype(dtype)
    return np.where(valid[..., None], oh, np.nan)


def categorical_rows_grad(p, y, class_weight=None):
    """d/dp_c = -w_c*y_c/p_c;  d/dy_c = -w_c*log p_c;  d/dw_c = -y_c*log p_c."""
    a = y if class_weight is None else mul0(y, class_weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv, nlp = p.dtype.type(1) / p, -np.log(p)
    gp = _times((np.zeros_like(p), inv), a)
    per_class = (nlp, np.zeros_like(nlp))
    cw = None if class_weight is None else np.broadcast_to(class_weight, np.shape(p))
    out = {"x": gp, "t": per_class if cw is None else _times(per_class, cw), "class_weight": _times(per_class, y)}
    return {k: _row_nan(v, p, y, cw) for k, v in out.items()}


def focal_elementwise_grad(family, x, z, alpha=None, gamma=DEFAULT_GAMMA):
    """L = a(z)*m^g*ce, m = 1-p_t = z*(1-p) + (1-z)*p:
    d/dx = a*[g*m^(g-1)*m_x*ce + m^g*ce_x], m_x = (1-2z)*p*(1-p) (or 1-2z for probabilities),
    ce_x = p - z (or (1-z)/(1-p) - z/p);  d/dz = a'*m^g*ce + a*[g*m^(g-1)*(q-p)*ce + m^g*ce_z],
    a' = 2*alpha - 1, ce_z = -x (or -log p + log(1-p))."""
    one = np.ones((), dtype=x.dtype)
    g = x.dtype.type(gamma)
    if family == "sigmoid_focal":
        ce, p, q = sigmoid_elementwise(x, z), sigmoid(x), sigmoid(-x)
        dm = mul0(p, q)  # |dm/dx| before the (1-2z) split
        ce_x = (mul0(one - z, p), mul0(z, q))
        ce_z = _signed(-x)
    else:
        ce, p, q = binary_elementwise(x, z), x, one - x
        dm = np.ones_like(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            ce_x = (mul0(one - z, one / q), mul0(z, one / p))
            ce_z = (-np.log(p), -np.log1p(-p))
    m = mul0(z, q) + mul0(one - z, p)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mg = np.power(m, g)
        mg1 = mul0(g, np.power(m, g - one))  # g*m^(g-1); 0 when g = 0
    k = mul0(mul0(mg1, dm), ce)  # g*m^(g-1)*|dm/dx|*ce >= 0
    gx = _plus((mul0(one - z, k), mul0(z, k)), (mul0(mg, ce_x[0]), mul0(mg, ce_x[1])))
    gz = _plus(_times((q, p), mul0(mg1, ce)), _times(ce_z, mg))
    if alpha is not None:
        bal = _balance(z, alpha)
        gx, gz = _times(gx, bal), _times(gz, bal)
        gz = _plus(gz, _times((mul0(mg, ce), np.zeros_like(ce)), x.dtype.type(2 * alpha - 1)))
    return {k_: tuple(_nan_if(a_, x, z) for a_ in v) for k_, v in {"x": gx, "t": gz}.items()}


def focal_rows_grad(family, x, y, alpha=None, gamma=DEFAULT_GAMMA):
    """L = alpha*sum_c y_c*f(p_c), f(p) = (1-p)^g*(-log p), f'(p) = -g*(1-p)^(g-1)*(-log p) - (1-p)^g/p.
    Probabilities: d/dp_c = alpha*y_c*f'(p_c). Logits: h_c = -p_c*f'(p_c)*y_c >= 0 and
    d/dx_j = alpha*(p_j*sum_c h_c - h_j).  d/dy_c = alpha*f(p_c)."""
    one = np.ones((), dtype=x.dtype)
    g = x.dtype.type(gamma)
    if family == "softmax_focal":
        nls = neg_log_softmax(x)
        p = softmax_probs(x, nls)
        u = one_minus_softmax(nls)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            nls = -np.log(x)
        p, u = x, one - x
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ug = np.power(u, g)
        ug1 = mul0(g, np.power(u, g - one))
        f = mul0(ug, nls)
        if family == "softmax_focal":  # -p*f'(p) = g*(1-p)^(g-1)*p*(-log p) + (1-p)^g
            h = mul0(y, mul0(mul0(ug1, p), nls) + ug)
            gx = _softmax_pullback(p, u, h)
        else:
            gx = (np.zeros_like(x), mul0(y, mul0(ug1, nls) + mul0(ug, one / p)))
    gy = (f, np.zeros_like(f))
    if alpha is not None:
        gx, gy = _times(gx, x.dtype.type(alpha)), _times(gy, x.dtype.type(alpha))
    return {"x": _row_nan(gx, x, y), "t": _row_nan(gy, x, y)}


def _unreduced_grad(family, x, t, pw, ew, cw, alpha=None, gamma=DEFAULT_GAMMA, poly_epsilon=None):
    """The gradient pairs of `_unreduced` per output: {"x", "t" (dense targets), and the weights
    it takes: "pos_weight", "weight" (the inputs' shape), "class_weight" (the inputs' shape, to be
    summed over rows)}."""
    if family in ("sigmoid_focal", "binary_focal"):
        return focal_elementwise_grad(family, x, t, alpha, gamma)
    if family in ("softmax_focal", "categorical_focal"):
        return focal_rows_grad(family, x, t, alpha, gamma)
    if family == "sigmoid":
        return sigmoid_elementwise_grad(x, t, pw, ew)
    if family == "binary":
        return binary_elementwise_grad(x, t, ew)
    if family in ("softmax", "sparse_softmax"):
        y = t if family == "softmax" else _one_hot(t, x.shape[-1], x.dtype)
        return softmax_rows_grad(x, y, cw, poly_epsilon)
    if family in ("categorical", "sparse_categorical"):
        y = t if family == "categorical" else _one_hot(t, x.shape[-1], x.dtype)
        return categorical_rows_grad(x, y, cw)
    raise ValueError(f"unknown family {family!r}")  # pragma: no cover


#: A bound on a reference gradient's absolute error, in units of u_ref * (P + N), u_ref the unit
#: roundoff of the reference precision: P and N are each a few correctly rounded operations, and
#: the largest measured against mpmath is 50 (tests/test_oracle_grad.py asserts this bound;
#: tests/measure_gradient_error.py prints the table).
GRAD_ERROR_BOUND_UREF = 64

#: the weight array `grad_weights` is taken with respect to: the first of these a case has
WEIGHT_PARAMS = ("weight", "sample_weight", "class_weight", "pos_weight", "output_weights")


def weight_param(params: Mapping[str, Any]) -> str | None:
    """The parameter `grad_weights` differentiates (None: the case has no weight array)."""
    return next((k for k in WEIGHT_PARAMS if params.get(k) is not None), None)


def _unbroadcast(a, shape):
    """Sum `a` down to `shape` (the inverse of numpy broadcasting)."""
    a = np.asarray(a)
    while a.ndim > len(shape):
        a = np.sum(a, axis=0)
    for i, n in enumerate(shape):
        if n == 1 and a.shape[i] != 1:
            a = np.sum(a, axis=i, keepdims=True)
    return a


def grad(
    family: str,
    inputs: np.ndarray,
    targets: np.ndarray,
    params: Mapping[str, Any] | None = None,
    conventions: Mapping[str, Any] | None = None,
    precision=np.float64,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The reference gradients of `loss` (the sum of its outputs, with the API's mean):
    {"grad_logits": (value, scale), "grad_targets": ... (dense targets), "grad_weights": ...
    (w.r.t. `weight_param(params)`)}, each value of its argument's shape, in `precision`;
    scale = P + N, the magnitude of the terms the value is the difference of."""
    params = dict(params or {})
    conv = {**CONVENTIONS, **(conventions or {})}
    if family in SAMPLED_FAMILIES:
        from .sampled import grad_rows

        return grad_rows(family, inputs, targets, params, params.get("reduction", "none"), precision)
    c = Prepared(family, inputs, targets, params, conv, precision)
    fam, pr = c.fam, precision
    reduction = params.get("reduction", "none")
    per = c.per_sample()  # per output, before sample weights
    keep = np.ones(per.shape, bool) if c.ignored is None else ~c.ignored
    # d(reduced)/d(weighted output): 1, or 1/denominator of the mean; nan where undefined
    den, dden = None, {}  # dden: d(denominator)/d(weight) per weight parameter
    if reduction == "mean":
        mean = conv["mean"]
        if mean in ("weight_sum", "nonzero_weights"):
            a = np.where(keep, c.applied_weights(per.shape), pr(0))
            den = np.sum(a) if mean == "weight_sum" else pr(np.count_nonzero(a))
            if mean == "weight_sum":
                elementwise_w = c.ew is not None and not fam.rowwise and not conv["axis_mean"]
                if c.sw is not None:  # d(sum of sw*ew)/d(sw) = ew, /d(ew) = sw
                    dden["sample_weight"] = np.where(keep, c.ew if elementwise_w else pr(1), pr(0))
                if elementwise_w:
                    dden["weight"] = np.where(keep, pr(1) if c.sw is None else c.sample_weight_b(per.shape), pr(0))
        elif mean == "target_weight" and fam.targets == "index" and c.cw is not None:
            valid = (c.t >= 0) & (c.t < c.cw.shape[0]) & keep
            den = np.sum(np.where(valid, c.cw[np.where(valid, c.t, 0)], pr(0)))
            dden["class_weight"] = np.bincount(np.where(valid, c.t, 0).ravel(), weights=valid.ravel().astype(np.float64),
                                               minlength=c.cw.shape[0]).astype(pr)
        else:
            den = pr(np.count_nonzero(keep))
        undefined = den == 0 or per.size == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            seed = np.full(per.shape, pr(np.nan) if undefined else pr(1) / den, dtype=pr)
    else:
        undefined = False
        seed = np.ones(per.shape, dtype=pr)
    seed = np.where(keep, seed, pr(0))
    left = c.target_left_out()
    if left is not None:
        seed = np.where(left, pr(0), seed)
    seed_nosw = seed
    if c.sw is not None:
        swb = c.sample_weight_b(per.shape)
        seed = np.where(np.isnan(swb), pr(np.nan), mul0(seed, swb))
    # down to the inputs' shape: one seed per element
    if fam.rowwise:
        s_el = seed[..., None]
    elif conv["axis_mean"]:
        n = c.x.shape[-1]
        s_el = np.broadcast_to(seed[..., None] / pr(n) if n else seed[..., None], c.x.shape)
    else:
        s_el = seed

    def seeded(g):
        P, N = _times(g, s_el)
        bad = np.broadcast_to(np.isnan(s_el), P.shape)
        return np.where(bad, np.nan, P), np.where(bad, np.nan, N)

    total: dict[str, tuple] = {}
    for coef, t, fname in c.smoothing_parts():
        part = _unreduced_grad(fname, c.x, t, c.pw, c.ew, c.cw, **c.extra)
        coef = coef[..., None] if np.ndim(coef) == c.x.ndim - 1 and np.ndim(coef) else coef  # one per row
        for k, v in part.items():
            v = seeded(_times(v, coef))
            if k == "t" and t is not c.t:
                continue  # the uniform part does not depend on the targets
            total[k] = v if k not in total else _plus(total[k], v)

    def layout(a):  # the class (or mean) axis back where the inputs have it
        return a if c.axis is None or c.axis == len(c.shape) - 1 else np.moveaxis(a, -1, c.axis)

    def finish(g, mask=None):
        P, N = g
        if mask is not None:
            P, N = np.where(mask, P, pr(0)), np.where(mask, N, pr(0))
        with np.errstate(invalid="ignore"):
            return layout(P - N), layout(P + N)

    out = {"grad_logits": finish(total["x"], c.wh)}
    if fam.targets == "dense":
        out["grad_targets"] = finish(_times(total["t"], c.target_scale), c.wh)
    wp = weight_param(params)
    if wp is not None:
        if wp == "sample_weight":  # d/d(sw) = seed * the output's unweighted loss
            gw = _times(_signed(per), seed_nosw)
            value, scale = _finish_weight(gw, den, dden.get(wp), per, seed, keep)
            if value.ndim > c.sw.ndim:  # one weight per sample, broadcast over the last axis
                value, scale = np.sum(value, axis=-1), np.sum(scale, axis=-1)
            out["grad_weights"] = (value, scale)
        elif wp in total:
            g = total[wp]
            if wp == "class_weight":
                g = tuple(np.sum(a.reshape(-1, a.shape[-1]), axis=0) for a in g)
            value, scale = _finish_weight(g, den, dden.get(wp), per, seed, keep)
            if wp in ("weight", "pos_weight"):
                value, scale = layout(value), layout(scale)
            if wp == "pos_weight":
                shape = np.shape(params["pos_weight"])
                value, scale = _unbroadcast(value, shape), _unbroadcast(scale, shape)
            out["grad_weights"] = (value, scale)
    if undefined:  # a mean over nothing: undefined, and so is every gradient of it
        out = {k: (np.full(np.shape(v), np.nan, pr), np.full(np.shape(v), np.nan, pr)) for k, (v, _) in out.items()}
    return out


def _finish_weight(g, den, dden, per, seed, keep):
    """(value, scale) of a weight gradient: the numerator's pair, less mean * d(den)/dw / den
    when the mean's denominator depends on the weight."""
    P, N = g
    if dden is not None and den is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            num = np.sum(np.where(keep, mul0(seed, per), 0))  # the mean itself, sum(w*l)/den
            corr = _times((np.asarray(dden, dtype=P.dtype) / den, np.zeros_like(P)), num)
        P, N = P + corr[1], N + corr[0]
    with np.errstate(invalid="ignore"):
        return P - N, P + N
