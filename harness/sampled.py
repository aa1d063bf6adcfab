"""The exact reference for TensorFlow's sampled losses, given the sampled values.

Source: tensorflow/python/ops/nn_impl.py, `_compute_sampled_logits`, `nce_loss`,
`sampled_softmax_loss` (tf.nn.nce_loss / tf.nn.sampled_softmax_loss; the v1 names call the
same code). With the sampled values fixed -- ids s [S], true_expected_count q_t [N, T] and
sampled_expected_count q_s [S] -- both losses are functions of the inputs x [N, d], the labels
[N, T] (T = num_true), the output weights W [C, d] and biases b [C]:

    true_logit[i, j]    = x_i . W[labels[i, j]] + b[labels[i, j]] - log(q_t[i, j])
    sampled_logit[i, k] = x_i . W[s_k] + b[s_k] - log(q_s[k]), removed when
                          remove_accidental_hits and s_k is one of labels[i, :]
    logits_i = [true_logits_i, sampled_logits_i]  (T+S),   y = [1/T] * T + [0] * S
    sampled_softmax[i] = -sum_c y_c * log_softmax(logits_i)_c                 (softmax CE)
    nce[i]             = -sum_c [y_c log sig(l_c) + (1 - y_c) log(1 - sig(l_c))]  (sigmoid CE)

A removed logit is -inf (a nan logit stays nan): the term leaves the softmax and contributes 0
to NCE. TF adds -FLT_MAX (float32's largest, cast to the logits' dtype) instead, which in exact
arithmetic gives the same loss to within exp(-3.4e38)-sized terms; whatever TF's rounding makes
of it (e.g. -FLT_MAX is -inf in float16) is for the harness to report.

Conventions: `harness.oracle`'s (0 * anything = 0 for coefficients, nan in a row's values ->
nan for the row, infinite logits as limits), and: the dot products are IEEE (inf * 0 = nan,
inf - inf = nan); log 0 = -inf, so an expected count of 0 gives a +inf logit, a negative count
nan; a label or sampled id outside [0, C) makes the logits that use it nan (its row, or every
row for a sampled id).

Accuracy. A loss much smaller than its logits (the true logit well above all others) is a
cancellation: its relative error is the logits' absolute error. So `loss_rows` writes each logit
as 2d + 4 exact terms in `precision` (x_k*W_ck as a double word by Dekker's splitting, b_c, and
-log q as -k*ln2_hi - k*ln2_lo - log1p(f - 1), q = 2**k * f, accurate to ~ulp(0.35)), sums them
as hi + lo by Ogita-Rump-Oishi Sum2 (error ~(n*eps)**2 * sum of |terms|), evaluates
`harness.oracle`'s row functions at hi and adds the first-order term sum_c dloss/dl_c * lo_c (the
neglected terms are O(loss * lo**2)). The softmax is evaluated at l - l_r, r the row's largest
logit, from the Sum2 of the two logits' terms subtracted pairwise: the shift is exact at r (no
rounding inside log-sum-exp) and a class sampled twice cancels exactly, whatever its size.
Measured against `mp_loss_rows` (tests/test_sampled.py): ~5e-9 ulp of float32 from float64,
~1.3e-3 ulp of float64 from long double.

`mp_loss_rows` is the independent check: mpmath straight from the definitions, the dot products
exact (libmp's mpf_sum without rounding: mp.fsum drops terms over 2*prec bits below the running
sum), the working precision raised past the bits lost to cancellation.
"""
from __future__ import annotations

from typing import Any, Mapping

import mpmath
import numpy as np
from mpmath import mp
from mpmath.libmp import fnan, from_float, mpf_add, mpf_mul, mpf_sum, round_nearest

from .mpref import GUARD, INF, MARGIN, NAN, UNDERFLOW_BITS, ZERO, _is_finite, _is_pos, _isnan, _log, _mag, \
    _softplus, _sum, mul0 as mp_mul0
from .oracle import mul0, neg_log_softmax, sigmoid, sigmoid_elementwise, softmax_rows

PARAM_KEYS = ("output_weights", "output_biases", "sampled", "true_expected_count", "sampled_expected_count",
              "remove_accidental_hits")
FAMILIES = ("sampled_softmax", "nce")
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: 32 significant bits, so k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI (|error| < 2**-86)


def _ids(labels, params):
    labels = np.asarray(labels).astype(np.int64)
    labels = labels if labels.ndim == 2 else labels.reshape(labels.shape[0], -1)
    return labels, np.asarray(params["sampled"]).astype(np.int64).reshape(-1)


# --- double-word arithmetic in `precision` (error-free transformations) ------------------
def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a):
    """(hi, lo), hi + lo = a, each with at most half the significand (Veltkamp)."""
    c = (a.dtype.type(2) ** ((np.finfo(a.dtype).nmant + 2) // 2) + 1) * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    """(p, e) with p = fl(a * b) and p + e = a * b exactly (Dekker)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _neg_log_terms(q):
    """Three terms summing to -log(q) with an absolute error ~ulp(0.35): q = 2**k * f with
    f in [sqrt(1/2), sqrt(2)), -log q = -k*ln2_hi - k*ln2_lo - log1p(f - 1), f - 1 exact."""
    f, k = np.frexp(q)
    low = f < np.sqrt(q.dtype.type(0.5))
    f, k = np.where(low, 2 * f, f), np.where(low, k - 1, k).astype(q.dtype)
    return [-k * q.dtype.type(_LN2_HI), -k * q.dtype.type(_LN2_LO), -np.log1p(f - 1)]


def _sum2(terms):
    """(hi, lo) with hi = fl(hi + lo), hi + lo = sum(terms) to within ~(n*eps)**2 * sum|terms|
    (Ogita, Rump & Oishi, "Accurate sum and dot product", SISC 26(6), 2005: Sum2)."""
    acc, err = terms[0], np.zeros_like(terms[0])
    for t in terms[1:]:
        acc, d = _two_sum(acc, t)
        err = err + d
    return _two_sum(acc, err)


def _logits(x, labels, params, precision):
    """(hi, lo, terms, y): the logits [N, T+S] as hi + lo (hi = fl(hi + lo)); the 2d + 4 exact
    terms they are the Sum2 of (x_k*W_ck as a double word each, b_c, -log q_c as three terms),
    meaningful where hi is finite; the labels y."""
    def w(a):
        return np.asarray(a).astype(np.float64).astype(precision)

    labels, s = _ids(labels, params)
    x, W, b = w(x), w(params["output_weights"]), w(params["output_biases"]).reshape(-1)
    N, T = labels.shape
    C = W.shape[0]
    ids = np.concatenate([labels, np.broadcast_to(s, (N, s.size))], axis=1)
    q = np.concatenate([w(params["true_expected_count"]).reshape(N, T),
                        np.broadcast_to(w(params["sampled_expected_count"]).reshape(-1), (N, s.size))], axis=1)
    valid = (ids >= 0) & (ids < C)
    safe = np.where(valid, ids, 0)
    with np.errstate(all="ignore"):
        Wg, xb, bg = W[safe], x[:, None, :], b[safe]  # [N, T+S, d], [N, 1, d], [N, T+S]
        p, e = _two_prod(xb, Wg)
        terms = [*np.moveaxis(p, -1, 0), *np.moveaxis(e, -1, 0), bg, *_neg_log_terms(q)]
        hi, lo = _sum2(terms)
        # a non-finite term: the IEEE value (the error terms are meaningless there)
        special = ~(np.isfinite(hi) & np.isfinite(lo))
        hi = np.where(special, np.sum(xb * Wg, axis=-1) + bg - np.log(q), hi)
        hi, lo = np.where(valid, hi, np.nan), np.where(valid & ~special, lo, 0)
    if params.get("remove_accidental_hits", False):
        hit = np.zeros(ids.shape, dtype=bool)
        hit[:, T:] = (labels[:, :, None] == s[None, None, :]).any(axis=1)
        hi, lo = np.where(hit & ~np.isnan(hi), -np.inf, hi).astype(precision), np.where(hit, 0, lo)
    y = np.zeros(ids.shape, dtype=precision)
    y[:, :T] = precision(1) / precision(T)
    return hi, lo, terms, y


def sampled_logits(x, labels, params: Mapping[str, Any], precision=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(out_logits [N, T+S], out_labels [N, T+S]) in `precision` (np.float64 or np.longdouble):
    the logits rounded once from their double-word value; removed accidental hits are -inf."""
    hi, _lo, _terms, y = _logits(x, labels, params, precision)
    return hi, y


def loss_rows(family: str, x, labels, params: Mapping[str, Any], precision=np.float64) -> np.ndarray:
    """family 'sampled_softmax' or 'nce': the per-example loss [N] in `precision`.

    sampled_softmax: (sum over the T true columns of -log_softmax(s)_c + sum_c g_c*d_c) / T,
    s + d = l - l_r (r: the row's largest logit, so s_r = 0 exactly; the Sum2 of the terms of l
    and l_r subtracted pairwise, so a class sampled twice cancels exactly), s = fl(s + d),
    g_c = T*softmax_c - [c true] (the derivative; expm1 keeps T=1's 1 - softmax_true accurate).
    nce: sum_c sigmoid_ce(hi_c, y_c) + (sigmoid(hi_c) - y_c)*lo_c (-sigmoid(-hi) at y = 1)."""
    hi, lo, terms, y = _logits(x, labels, params, precision)
    T = np.shape(labels)[-1] if np.ndim(labels) > 1 else 1
    with np.errstate(all="ignore"):
        if family == "sampled_softmax":
            fin = np.isfinite(hi)
            r = np.argmax(np.where(fin, hi, -np.inf), axis=-1)[:, None]
            s, d = _sum2([v for u in terms for v in (u, -np.take_along_axis(u, r, axis=-1))])
            s, d = np.where(fin, s, hi), np.where(fin, d, 0)
            true = (y != 0).astype(precision)
            base = softmax_rows(s, true)  # sum of the true columns' -log_softmax
            nls = neg_log_softmax(s)
            g = np.where(true != 0, np.expm1(np.log(precision(T)) - nls), precision(T) * np.exp(-nls))
            corr = np.sum(mul0(g, d), axis=-1)
            return np.where(np.isfinite(base), base + corr, base) / precision(T)
        if family == "nce":
            base = sigmoid_elementwise(hi, y)
            g = np.where(y == 1, -sigmoid(-hi), sigmoid(hi) - y)
            return np.sum(np.where(np.isfinite(base), base + mul0(g, lo), base), axis=-1)
    raise ValueError(f"unknown sampled family {family!r} (known: {', '.join(FAMILIES)})")



def _signed_matmul(g, a, spec):
    """(P, N) of einsum(spec, P - N, a) for an array a of either sign: each product placed by sign."""
    P, N = g
    ap, an = np.where(a > 0, a, 0), np.where(a < 0, -a, 0)
    nan = np.isnan(a)
    ap, an = np.where(nan, a, ap), np.where(nan, a, an)
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.einsum(spec, P, ap) + np.einsum(spec, N, an), np.einsum(spec, P, an) + np.einsum(spec, N, ap))


def grad_rows(family: str, x, labels, params: Mapping[str, Any], reduction: str = "none",
              precision=np.float64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The gradients of the sum of the outputs (with `mean`'s 1/N) as (value, scale) pairs (see
    `harness.oracle`'s gradient section): "grad_logits" w.r.t. the inputs x [N, d], "grad_weights"
    w.r.t. output_weights [C, d]. With G = dloss/dlogits (softmax(l) - y, or sigmoid(l) - y for
    NCE; 0 at removed hits): dx_i = sum_c G_ic W[id_c], dW_k = sum_{(i, c): id_c = k} G_ic x_i."""
    from .oracle import _excl_sum, _softmax_pullback, _times, one_minus_softmax

    hi, lo, terms, y = _logits(x, labels, params, precision)
    labels_, s = _ids(labels, params)
    N = hi.shape[0]
    with np.errstate(all="ignore"):
        if family == "sampled_softmax":  # softmax of the double-word logits, shifted exactly (as loss_rows)
            fin = np.isfinite(hi)
            r = np.argmax(np.where(fin, hi, -np.inf), axis=-1)[:, None]
            sh, d = _sum2([v for u in terms for v in (u, -np.take_along_axis(u, r, axis=-1))])
            sh, d = np.where(fin, sh, hi), np.where(fin, d, 0)
            e = np.exp(sh) * (1 + d)
            total = np.sum(e, axis=-1, keepdims=True)
            regular = np.all(np.isfinite(hi) | (hi == -np.inf), axis=-1, keepdims=True) & np.any(fin, axis=-1,
                                                                                                 keepdims=True)
            nls = neg_log_softmax(hi)
            p = np.where(regular, e / total, np.exp(-nls))
            u = np.where(regular, _excl_sum(e) / total, one_minus_softmax(nls))
            G = _softmax_pullback(p, u, y)
        else:  # sigmoid(hi + lo) to first order in lo
            one = precision(1)
            sp, sn = sigmoid(hi), sigmoid(-hi)
            dl = np.where(np.isfinite(hi), sp * sn * lo, 0)
            G = (mul0(one - y, sp + dl), mul0(y, sn - dl))
    bad = np.any(np.isnan(hi), axis=-1, keepdims=True)
    G = tuple(np.where(bad, np.nan, a) for a in G)
    if reduction == "mean":
        G = _times(G, precision(1) / precision(N) if N else precision(np.nan))
    W = np.asarray(params["output_weights"]).astype(np.float64).astype(precision)
    xx = np.asarray(x).astype(np.float64).astype(precision)
    C = W.shape[0]
    ids = np.concatenate([labels_, np.broadcast_to(s, (N, s.size))], axis=1)
    valid = (ids >= 0) & (ids < C)
    Wg = np.where(valid[..., None], W[np.where(valid, ids, 0)], np.nan)  # [N, T+S, d]
    gx = _signed_matmul(G, Wg, "ic,icd->id")
    per = _signed_matmul(G, np.broadcast_to(xx[:, None, :], Wg.shape), "ic,icd->icd")  # [N, T+S, d]
    gW = tuple(np.zeros(W.shape, dtype=precision) for _ in range(2))
    for part, acc in zip(per, gW):
        np.add.at(acc, np.where(valid, ids, 0).ravel(), np.where(valid[..., None], part, 0).reshape(-1, W.shape[1]))
    if reduction == "mean" and N == 0:  # a mean over nothing: undefined, and so is its gradient
        gW = (np.full(W.shape, np.nan, precision),) * 2
    with np.errstate(invalid="ignore"):
        return {"grad_logits": (gx[0] - gx[1], gx[0] + gx[1]), "grad_weights": (gW[0] - gW[1], gW[0] + gW[1])}


# --- mpmath ------------------------------------------------------------------------------
def _mp_logits(cols, w: int) -> tuple[list, int]:
    """The row's logits at working precision w, and the magnitude (bits) of the largest of
    |logit| and |log q| (the scale of their absolute error, ~2**(scale - w))."""
    out, scale = [], 1
    with mp.workprec(w):
        for exact, q, removed in cols:
            nlq = -_log(mpmath.mpf(q))  # nan for q < 0 or nan, +inf for q = 0
            v = mpmath.mpf(mpf_add(exact, nlq._mpf_, w, round_nearest))  # exact part - log q, one rounding
            for u in (v, nlq):
                if _is_finite(u) and u:
                    scale = max(scale, _mag(u))
            out.append((NAN if _isnan(v) else -INF) if removed else v)
    return out, scale


def _mp_softmax_row(cols, T: int, prec: int):
    """log(sum_c e^{l_c}) - (1/T) sum_{true} l_t, with the conventions' limits."""
    w = prec + GUARD
    while True:
        ls, scale = _mp_logits(cols, w)
        if any(_isnan(v) for v in ls):
            return NAN
        n_pinf = sum(1 for v in ls if not _is_finite(v) and _is_pos(v))
        if n_pinf:  # -log_softmax: 0 at a lone +inf, nan at several, +inf elsewhere
            per = [(ZERO if n_pinf == 1 else NAN) if not _is_finite(v) and _is_pos(v) else INF for v in ls[:T]]
            return NAN if any(_isnan(v) for v in per) else INF if any(v == INF for v in per) else ZERO
        fin = [v for v in ls if _is_finite(v)]
        if not fin:
            return NAN  # all -inf: no softmax
        if any(not _is_finite(v) for v in ls[:T]):
            return INF  # a true class with probability 0
        if len(fin) == 1:
            return ZERO  # T = 1 and every sampled logit removed
        with mp.workprec(w):
            lse = mp.log(mp.fsum([mp.exp(v) for v in fin]))
            loss = mp.fsum([lse] + [-v / T for v in ls[:T]])
        scale = max(scale, _mag(lse) if lse else 1)
        lost = scale - _mag(loss) if _is_pos(loss) else w
        if lost + 4 + MARGIN <= w - prec:
            return loss
        cap = prec + GUARD + scale + UNDERFLOW_BITS
        if w >= cap:
            return loss if _is_pos(loss) else ZERO  # below 2**-1100 of the logits: zero to every dtype
        w = min(cap, max(2 * w, prec + lost + 4 + MARGIN + GUARD))


def _mp_nce_row(cols, T: int, prec: int):
    """sum_c [y_c softplus(-l_c) + (1 - y_c) softplus(l_c)]: non-negative terms, so only the
    logits' absolute error (~2**(scale - w)) needs covering."""
    w = prec + GUARD
    while True:
        ls, scale = _mp_logits(cols, w)
        if scale + 2 + MARGIN <= w - prec or w > prec + GUARD:
            break
        w = prec + GUARD + scale
    if any(_isnan(v) for v in ls):
        return NAN
    with mp.workprec(w):
        a, b = mpmath.mpf(1) / T, mpmath.mpf(T - 1) / T
        terms = []
        for j, v in enumerate(ls):
            if j < T:
                terms += [mp_mul0(a, _softplus(-v)), mp_mul0(b, _softplus(v)) if T > 1 else ZERO]
            else:
                terms.append(_softplus(v))
        return _sum(terms)


def mp_loss_rows(family: str, x, labels, params: Mapping[str, Any], prec: int = 128) -> np.ndarray:
    """The per-example loss [N] as a numpy object array of mpmath.mpf, each with `prec` correct
    bits (or, when far below its logits, an absolute error below 2**-(1100 + prec) of them)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown sampled family {family!r} (known: {', '.join(FAMILIES)})")

    def f64(a):
        return np.asarray(a).astype(np.float64)

    labels, s = _ids(labels, params)
    s = s.tolist()
    N, T = labels.shape
    W = [[from_float(v) for v in r] for r in f64(params["output_weights"]).tolist()]
    B = [from_float(v) for v in f64(params["output_biases"]).reshape(-1).tolist()]
    qt = f64(params["true_expected_count"]).reshape(N, T).tolist()
    qs = f64(params["sampled_expected_count"]).reshape(-1).tolist()
    remove = bool(params.get("remove_accidental_hits", False))
    row_fn = _mp_softmax_row if family == "sampled_softmax" else _mp_nce_row
    out = np.empty(N, dtype=object)
    for i, (xr, lab) in enumerate(zip(f64(x).tolist(), labels.tolist())):
        xm = [from_float(v) for v in xr]
        cols = []  # (x_i . W[c] + b[c] exactly, q, removed) per column
        for j, (c, q) in enumerate(zip(lab + s, qt[i] + qs)):
            exact = fnan if not 0 <= c < len(W) else \
                mpf_sum([mpf_mul(u, v) for u, v in zip(xm, W[c])] + [B[c]])  # prec 0: no rounding
            cols.append((exact, q, remove and j >= T and c in lab))
        v = row_fn(cols, T, prec)
        with mp.workprec(prec):
            out[i] = +v
    return out
