"""harness.oracle.grad (and harness.sampled.grad_rows) against mpmath DIFFERENTIATION of the
independent mpmath loss (harness.mpref.unreduced/reduce, harness.sampled.mp_loss_rows).

What "exact" means here. For one element e of the inputs, the dense targets or the weight array
(`oracle.weight_param`), F(e) is the sum of the outputs of the mpmath loss (the oracle's `grad`
is the gradient of that sum, with the API's mean). dF/de is taken by Richardson-extrapolated
central differences, R = (4*D(h/2) - D(h))/3 with D(h) = (F(e+h) - F(e-h))/(2h), where:

* e+-h is NOT a float: the mpmath loss converts each float it reads with mpref.MPF (or, for the
  sampled families, mpmath.libmp.from_float), so the element is replaced by a unique float
  sentinel (the nearest float64 on the side of the perturbation that the case does not hold, so
  every float-level test mpref makes -- signs, 0 <= p <= 1, finiteness -- sees the side the
  perturbed value is on) and those two conversion functions are patched, for the duration of
  the call only, to map the sentinel to the exact mpf e+-h. Nothing else of mpref changes.
* h is a power of two, 2**-80 times the element's length scale (1 for logits, min(p, 1-p) for
  probabilities, 1-p_t for focal targets, 1/max|W| for sampled activations: `_length_scale`),
  shrunk by 2**-40 (up to twice) until |D(h) - D(h/2)| is below the accuracy asked;
* F is evaluated at a precision P (a multiple of 64 bits) such that its rounding noise
  (4 * 2**-P * the magnitude of the values summed, over h) is ~2**-12 of the accuracy asked:
  2**-GOOD_BITS relative, or absolutely `floor_for(dtype)` = 2**-80 of the dtype's smallest
  subnormal (2**-20 of the check's own floor below), or 2**-24 of the B * u_ref * scale the check
  allows, whichever is largest;
* the error bound returned is noise + |D(h) - D(h/2)| (R's own truncation error is O(h**4));
* it refuses (a skip, counted) when F is non-finite at or next to the point (nan/inf loss, a
  probability at 0 or 1, a mean over nothing), when the one-sided differences disagree AND the
  second differences do not scale as h**2 (a kink, or a jump such as TF's nonzero_weights count
  at a zero weight; a smooth stationary point passes), or when no h or P <= MAX_PREC resolves it.
`test_differentiate_*` check the method itself on functions with known derivatives
(log1p(exp(x)) at -30, 0, 30, -700, 1e4, 0.1; -log p at p = 2**-1000; exp(x) at -700 and -900;
a kink, a jump, (1-p)**3 at 1 and x**2 at 0).

Only the outputs that depend on the element need evaluating (`plan_for`). Reduction 'none':
the element alone (elementwise families; under axis_mean its own loss, divided by the row
length), or its row (leading axis: row-wise families, sample weights). 'sum'/'mean': the whole
problem's unreduced values at its own point, computed once per precision, with those of the
element (or row) replaced, reduced by mpref.reduce with the element perturbed in the parameters
too (weighted-mean denominators). pos_weight, class_weight and output_weights: the whole problem.
Each sub-problem is first checked to reproduce the whole problem's values exactly.

The assertion, per element: with v the oracle's value in its precision (float64 for float16,
bfloat16 and float32; long double for float64: what the harness grades with), S its scale (P+N)
u_ref = 2**-53 (float64) or 2**-64 (long double), and B = harness.oracle.GRAD_ERROR_BOUND_UREF:

    |v - exact| <= B * u_ref * S + 2**-60 * ulp_dtype(exact) + (the mpmath error bound)

Non-finite values: a non-finite v is a failure wherever the mpmath derivative exists; where the
element's own output (reduction 'none': its element or row) is nan, v must be nan (nan in, nan
out; status "nan"); elements whose mpmath loss is otherwise non-finite at or next to the point
are skipped, their class unchecked. The error is also measured in ulps of the tested dtype and in
u_ref * S (`tests/measure_gradient_error.py` prints the tables).

Coverage: every non-empty corpus case with <= MAX_INPUT_ELEMENTS input elements (sampled families:
every non-empty case; the 32768-class embedding is compacted to the classes the case uses, and the
gradient of every unused row is asserted to be exactly 0), in every dtype it runs in, under
every convention set of mpref.conventions_for(family) plus, for `mean` cases with weights (and
the class/mean axis last), TF v1's weight_sum and nonzero_weights; every quantity `grad`
returns; at most MAX_PER_QUANTITY elements per quantity, chosen deterministically (non-finite
oracle values first, then round-robin: the largest cancellation S/|v|, the largest and smallest
|v|, the largest and smallest |input|, the most negative and positive input; at most
MAX_HUGE_PER_QUANTITY with |input| > 2**128). Derivatives are shared between dtypes whose rounded
data agree. Each test is a shard of SHARD_CASES cases of one family; `test_checked_total`
asserts MIN_CHECKED_TOTAL elements checked over all shards.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import mpmath
import numpy as np
import pytest
from mpmath import mp

from cases.generator import build_corpus
from harness import mpref, oracle
from harness import sampled as sm
from harness.dtypes import reference_precision, to_dtype
from harness.spec import DTYPES, FAMILIES, SAMPLED_FAMILIES

MPF = mpmath.mpf
GOOD_BITS = 100  # correct bits of the mpmath derivative (relative; absolute below the floor)
MAX_INPUT_ELEMENTS = 100
MAX_PER_QUANTITY = 4
MAX_HUGE_PER_QUANTITY = 1  # |value| > 2**128: each step costs ~|exponent| bits of precision
TOL_UREF = oracle.GRAD_ERROR_BOUND_UREF  # |v - exact| <= TOL_UREF * u_ref * scale + 2**TOL_FLOOR_EXP * ulp_dtype(exact)
TOL_FLOOR_EXP = -60
MAX_PREC = 6000
U_REF = {"float16": 2.0**-53, "bfloat16": 2.0**-53, "float32": 2.0**-53, "float64": 2.0**-64}
QUANTITIES = ("grad_logits", "grad_targets", "grad_weights")


def _ldexp(x, e):
    return mp.ldexp(MPF(x), int(e))


def _mag(v) -> int:
    """floor(log2 |v|) + 1 for a finite non-zero mpf."""
    return int(mpmath.mag(v))


def floor_for(dtype: str):
    """The absolute accuracy asked of the mpmath derivative where 2**-GOOD_BITS of it is smaller:
    2**-80 of the dtype's smallest subnormal, 2**-20 of the check's own floor."""
    return _ldexp(mpref.ulp_at(MPF(0), dtype), -80)


# --- numerical differentiation --------------------------------------------------------------------------
@dataclass
class Derivative:
    value: Any = None  # mpf; None when skipped
    err: Any = None  # bound on |value - exact|
    skip: str = ""  # why there is no value
    prec: int = 0
    h: Any = None


def _finite(v) -> bool:
    return bool(mpmath.isfinite(v))


def differentiate(F: Callable, x0, s, floor, guess, fabs0, bits: int = GOOD_BITS, tries: int = 3) -> Derivative:
    """dF/dx at the exact mpf x0 with an error below max(2**-bits * |dF/dx|, floor).

    F(v, prec) -> (value, magnitude): the function at the exact mpf v (None: at x0) with an
    absolute error below 4 * 2**-prec * magnitude. s: the length scale of F around x0 (the first
    step is 2**-80 * s); guess: the expected size of the derivative (sets the first precision);
    fabs0: the magnitude of F near x0 at 128 bits."""
    x0, s = MPF(x0), MPF(s)
    e0 = _mag(s) - 81 if s else -80
    guess = abs(MPF(guess))
    fabs = MPF(fabs0)

    def needed(g):
        return max(_ldexp(g, -bits), floor)

    for t in range(tries):
        h = _ldexp(1, e0 - 40 * t)
        g = guess
        for _round in range(4):
            target = needed(g)
            need_bits = int(mpmath.ceil(mpmath.log(max(fabs, floor) / (h * target), 2))) + 12
            rep_bits = (_mag(x0) - _mag(h) + 64) if x0 else 64
            P = -(-max(128, need_bits, rep_bits) // 64) * 64  # multiples of 64 bits: shared cached values
            if P > MAX_PREC:
                return Derivative(skip="unresolved: precision", prec=P, h=h)
            pts = {k: mp.fadd(x0, k * h, exact=True) for k in (1, -1, 0.5, -0.5)}  # k*h: exact
            vals = {k: F(v, P) for k, v in pts.items()}
            vals[0] = F(None, P)
            if not all(_finite(v) and _finite(m) for v, m in vals.values()):
                return Derivative(skip="nonfinite loss" if not _finite(vals[0][0]) else "nonfinite beside",
                                  prec=P, h=h)
            fabs = max(m for _, m in vals.values())
            with mp.workprec(P + 64):
                f = {k: v for k, (v, _) in vals.items()}
                ef = 4 * _ldexp(fabs, -P)
                d1 = (f[1] - f[-1]) / (2 * h)
                d2 = (f[0.5] - f[-0.5]) / h
                r = (4 * d2 - d1) / 3
                noise = 3 * ef / h
                need = needed(abs(r))
                if noise > need:
                    if abs(r) > 8 * noise and needed(abs(r) / 2) < needed(g):
                        g = abs(r) / 2
                    elif needed(g) > floor:
                        g = MPF(0)
                    continue  # a higher precision
                trunc = abs(d1 - d2)
                if trunc + noise > need:
                    break  # not yet in the asymptotic range: a smaller h
                # a kink or a jump at x0: the one-sided derivatives differ (relatively), and the
                # second differences do not scale as h**2 (a smooth stationary point or f'' = 0
                # passes one of the two)
                a, b = (f[1] - f[0]) / h, (f[0] - f[-1]) / h
                d2h = f[1] - 2 * f[0] + f[-1]
                d2q = f[0.5] - 2 * f[0] + f[-0.5]
                one_sided = abs(a - b) > _ldexp(max(abs(a), abs(b)), -30) + 4 * ef / h
                not_h2 = abs(d2q - d2h / 4) > _ldexp(abs(d2h), -10) + 16 * ef
                if one_sided and not_h2:
                    return Derivative(skip="not differentiable", prec=P, h=h)
                return Derivative(value=r, err=noise + trunc, prec=P, h=h)
        else:
            return Derivative(skip="unresolved: noise", prec=P, h=h)
    return Derivative(skip="unresolved: step", prec=P, h=h)


# --- evaluating the mpmath loss at a perturbed element -------------------------------------------------
_PATCH: dict[float, Any] = {}
_ORIG_MPF = mpref.MPF
_ORIG_FROM_FLOAT = sm.from_float


def _patched_mpf(*args, **kwargs):
    if len(args) == 1 and not kwargs and isinstance(args[0], float) and args[0] in _PATCH:
        return _PATCH[args[0]]
    return _ORIG_MPF(*args, **kwargs)


def _patched_from_float(x, *args, **kwargs):
    if isinstance(x, float) and x in _PATCH:
        return _PATCH[x]._mpf_
    return _ORIG_FROM_FLOAT(x, *args, **kwargs)


@contextlib.contextmanager
def _perturbed(sentinel: float, value):
    _PATCH.clear()
    _PATCH[sentinel] = value
    mpref.MPF, sm.from_float = _patched_mpf, _patched_from_float
    try:
        yield
    finally:
        mpref.MPF, sm.from_float = _ORIG_MPF, _ORIG_FROM_FLOAT
        _PATCH.clear()


def _sentinel(x0: float, direction: float, used: set[float]) -> float:
    """The nearest float64 to x0 on `direction`'s side that no array of the case holds (finite;
    if the side runs out -- x0 = +-max -- the other side)."""
    for d in (direction, -direction):
        s = x0
        for _ in range(1000):
            with np.errstate(over="ignore"):
                s = float(np.nextafter(s, math.copysign(math.inf, d)))
            if not math.isfinite(s):
                break
            if s not in used and s != 0.0:
                return s
    raise AssertionError(f"no sentinel near {x0!r}")


def _f64(a):
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a


def _is_float_array(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


@dataclass
class Problem:
    """The mpmath side of one (case, dtype, conventions): the arrays as float64, and the mpmath
    loss split as mpref does it: `unreduced` (per element or row, sample weights applied) and
    `reduce` (axis_mean and the reduction, with the conventions)."""

    family: str
    x: np.ndarray
    t: np.ndarray
    p: dict
    conv: dict

    def __post_init__(self):
        self.reduction = self.p.get("reduction", "none")
        self.sampled = self.family in SAMPLED_FAMILIES
        self.per_cache: dict[int, np.ndarray] = {}

    def arrays(self) -> dict:
        return {"inputs": self.x, "targets": self.t, **{k: v for k, v in self.p.items() if isinstance(v, np.ndarray)}}

    def with_array(self, key: str, arr: np.ndarray) -> "Problem":
        if key == "inputs":
            return Problem(self.family, arr, self.t, self.p, self.conv)
        if key == "targets":
            return Problem(self.family, self.x, arr, self.p, self.conv)
        return Problem(self.family, self.x, self.t, {**self.p, key: arr}, self.conv)

    def unreduced(self, prec: int) -> np.ndarray:
        if self.sampled:
            return sm.mp_loss_rows(self.family, self.x, self.t, self.p, prec)
        return mpref.unreduced(self.family, self.x, self.t, self.p, prec)

    def unreduced_cached(self, prec: int) -> np.ndarray:
        if prec not in self.per_cache:
            if len(self.per_cache) > 8:
                self.per_cache.pop(next(iter(self.per_cache)))
            self.per_cache[prec] = self.unreduced(prec)
        return self.per_cache[prec]

    def reduce(self, per: np.ndarray, prec: int) -> np.ndarray:
        if self.sampled:
            if self.reduction == "none":
                return per
            with mp.workprec(prec + 64):
                s = mpref._sum(list(per))
                return np.array([s if self.reduction == "sum" else (s / len(per) if len(per) else MPF("nan"))],
                                dtype=object)
        return np.atleast_1d(mpref.reduce(per, self.family, self.t, self.p, self.conv, prec))

    def outputs(self, prec: int) -> np.ndarray:
        return self.reduce(self.unreduced(prec), prec)

    def used_values(self) -> set[float]:
        used = {0.5, 1.0, 2.0, -1.0, -0.5}
        for a in self.arrays().values():
            if _is_float_array(a):
                used.update(float(v) for v in a.ravel().tolist())
        for k in ("label_smoothing", "alpha", "gamma", "poly_epsilon"):
            if self.p.get(k) is not None:
                used.add(float(self.p[k]))
        return used

    def operand_mag(self):
        """The largest |operand| (mpref's absolute floor for tiny results is 2**-(1100+prec) of it)."""
        m = 1.0
        for a in self.arrays().values():
            if _is_float_array(a) and a.size:
                f = np.abs(a[np.isfinite(a)])
                if f.size:
                    m = max(m, float(f.max()))
        return MPF(m) ** 2 * 64 if self.sampled else MPF(m) * 64


def _abs(per: np.ndarray) -> np.ndarray:
    out = np.empty(per.shape, dtype=object)
    for i in np.ndindex(per.shape):
        out[i] = abs(per[i])
    return out


def _total(prob: Problem, per: np.ndarray, prec: int, extra) -> tuple[Any, Any]:
    """(sum of prob's outputs from `per`, the same for |per| + extra: the magnitude the rounding
    errors are relative to), IEEE rules for non-finite values."""
    outs, mags = prob.reduce(per, prec), prob.reduce(_abs(per), prec)
    with mp.workprec(prec + 64):
        return mpref._sum(list(outs.ravel())), mpref._sum([abs(v) for v in mags.ravel()]) + extra


@dataclass
class Plan:
    """How F is evaluated for one element.
    full:       every output of the whole problem, the element perturbed;
    direct:     reduction 'none': the outputs of `sub` (the element alone, or its row), which are
                the only outputs depending on it; `factor` n: the output is the mean over its row
                of n elements (axis_mean), so dF/d(element) is the element's own derivative / n;
    substitute: reduction 'sum'/'mean': the whole problem's unreduced values at its own point
                (computed once per precision), those of the element's `sub` put at `pos`, reduced
                with the element perturbed in the parameters too (weighted-mean denominators)."""

    mode: str
    sub: Problem | None = None
    sub_index: tuple = ()
    pos: tuple = ()
    factor: int = 1
    row_mean: bool = False  # direct, axis_mean: F is the element's loss, `factor` its row's length


def _rows(prob: Problem, i: int) -> Problem:
    """Row i (leading axis) of every per-sample array, reduction 'none'."""
    n = prob.x.shape[0]
    p = {**prob.p, "reduction": "none"}
    if prob.sampled:
        p["true_expected_count"] = p["true_expected_count"][i:i + 1]
    for k in ("weight", "sample_weight", "where"):
        if isinstance(p.get(k), np.ndarray) and p[k].ndim >= 1 and p[k].shape[0] == n:
            p[k] = p[k][i:i + 1]
    pw = p.get("pos_weight")
    if isinstance(pw, np.ndarray) and pw.ndim == prob.x.ndim and pw.shape[0] == n and n > 1:
        p["pos_weight"] = pw[i:i + 1]
    t = prob.t[i:i + 1] if np.ndim(prob.t) >= 1 else prob.t
    return Problem(prob.family, prob.x[i:i + 1], t, p, prob.conv)


def _element(prob: Problem, index: tuple) -> Problem:
    """An elementwise family's single element (with its target, weights and pos_weight),
    reduction 'none'. Under axis_mean its output is the element's own loss (a mean over one)."""
    nd = prob.x.ndim
    sl = tuple(slice(i, i + 1) for i in index)
    p = {**prob.p, "reduction": "none"}
    for k in ("weight", "sample_weight", "pos_weight"):
        a = p.get(k)
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            continue
        if a.ndim == nd:
            p[k] = a[tuple(sl[d] if a.shape[d] > 1 else slice(None) for d in range(nd))]
        elif k == "sample_weight" and a.ndim == nd - 1:
            axis = prob.p.get("axis")
            ax = nd - 1 if axis is None else axis % nd  # sample weights lack the (mean) axis
            p[k] = a[sl[:ax] + sl[ax + 1:]]
        elif k == "pos_weight" and a.ndim == 1:
            p[k] = a[sl[-1:]] if a.shape[0] > 1 else a
        else:
            raise AssertionError(f"{k} of shape {a.shape} for inputs {prob.x.shape}")
    return Problem(prob.family, prob.x[sl], prob.t[sl], p, prob.conv)


def plan_for(prob: Problem, key: str, index: tuple) -> Plan:
    nd = prob.x.ndim
    mode = "direct" if prob.reduction == "none" else "substitute"
    if prob.sampled:
        if key == "inputs" and nd == 2:
            return Plan(mode, _rows(prob, index[0]), (0,) + index[1:], (index[0],))
        return Plan("full")
    axis = prob.p.get("axis")
    ax = None if axis is None or nd == 0 else axis % nd
    if not FAMILIES[prob.family].rowwise and key in ("inputs", "targets", "weight") and nd >= 1:
        if mode == "substitute" or not prob.conv.get("axis_mean"):
            return Plan(mode, _element(prob, index), (0,) * nd, index)
        if ax is None or ax == nd - 1:
            return Plan(mode, _element(prob, index), (0,) * nd, index, factor=prob.x.shape[-1], row_mean=True)
    if key in ("inputs", "targets", "weight", "sample_weight") and nd >= 2 and ax != 0:
        return Plan(mode, _rows(prob, index[0]), (0,) + index[1:], (index[0],))
    return Plan("full")


class ElementFunction:
    """F(v, prec): the sum of the loss outputs (those that depend on the element suffice), with
    the element set to the exact mpf v (None: its own value), and the magnitude of the values
    summed (for the rounding error)."""

    def __init__(self, prob: Problem, key: str, index: tuple, plan: Plan):
        self.prob, self.key, self.index, self.plan = prob, key, index, plan
        self.x0f = float(prob.arrays()[key][index])
        self.x0 = MPF(self.x0f)
        used = prob.used_values()
        self.sent = {1: _sentinel(self.x0f, 1.0, used), -1: _sentinel(self.x0f, -1.0, used)}
        self.full, self.sub = {}, {}
        for side, s in self.sent.items():
            a = prob.arrays()[key].copy()
            a[index] = s
            self.full[side] = prob.with_array(key, a)
            if plan.sub is not None:
                b = plan.sub.arrays()[key].copy()
                b[plan.sub_index] = s
                self.sub[side] = plan.sub.with_array(key, b)
        self.extra = _ldexp(prob.operand_mag(), -1100)

    def __call__(self, v, prec: int):
        mode = self.plan.mode
        side = None if v is None else (1 if v > self.x0 else -1)
        ctx = contextlib.nullcontext() if v is None else _perturbed(self.sent[side], v)
        with ctx:
            if mode == "full":
                pr = self.prob if v is None else self.full[side]
                return _total(pr, pr.unreduced(prec), prec, self.extra)
            sub = self.plan.sub if v is None else self.sub[side]
            if mode == "direct":
                return _total(sub, sub.unreduced(prec), prec, self.extra)
            per = self.prob.unreduced_cached(prec).copy()
            vals = sub.unreduced(prec)
            if isinstance(per[self.plan.pos], np.ndarray):
                per[self.plan.pos] = vals.reshape(per[self.plan.pos].shape)
            else:
                per[self.plan.pos] = vals.ravel()[0]
            pr = self.prob if v is None else self.full[side]
            return _total(pr, per, prec, self.extra)


# --- selection ----------------------------------------------------------------------------------------
def select_elements(arr: np.ndarray, value: np.ndarray, scale: np.ndarray, allowed: np.ndarray | None = None,
                    k: int = MAX_PER_QUANTITY) -> list[tuple]:
    """Up to k indices of finite elements of `arr`, the extreme ones first (deterministic)."""
    arr = np.asarray(arr, dtype=np.float64)
    ok = np.isfinite(arr)
    if allowed is not None:
        ok &= allowed
    cand = np.flatnonzero(ok.ravel())
    if cand.size == 0:
        return []
    with np.errstate(over="ignore"):
        v = np.asarray(value, dtype=np.float64).ravel()[cand]
        s = np.asarray(scale, dtype=np.float64).ravel()[cand]
    a = arr.ravel()[cand]
    av, aa = np.abs(v), np.abs(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(av > 0, s / av, np.where(s > 0, np.inf, 0))
    order: list[int] = list(np.flatnonzero(~np.isfinite(v)))  # non-finite oracle values first
    fin = np.isfinite(v)
    keys = []
    if fin.any():
        keys += [np.where(fin, -np.nan_to_num(ratio, posinf=1e308), np.inf),
                 np.where(fin, -av, np.inf),
                 np.where(fin & (av > 0), av, np.inf),
                 np.where(fin, av, np.inf)]
    keys += [-aa, np.where(aa > 0, aa, np.inf), -a, a]
    ranked = [list(np.argsort(kk, kind="stable")) for kk in keys]
    for depth in range(len(cand)):
        order += [int(r[depth]) for r in ranked]
    huge = aa > 2.0**128
    chosen: list[int] = []
    n_huge = 0
    for i in dict.fromkeys(order):
        if len(chosen) >= k:
            break
        if i in chosen or (huge[i] and n_huge >= MAX_HUGE_PER_QUANTITY):
            continue
        chosen.append(i)
        n_huge += int(huge[i])
    return [tuple(int(j) for j in np.unravel_index(int(cand[i]), arr.shape)) for i in chosen]


def _length_scale(family: str, key: str, x0: float, prob: Problem, index: tuple = ()):
    """The scale over which F varies around the element (the first step is 2**-80 of it)."""
    fam = FAMILIES[family]
    if key == "inputs":
        if fam.inputs == "probabilities":
            return min(abs(x0), abs(1 - x0)) if 0 < x0 < 1 else 1.0
        if fam.inputs == "activations":
            W = prob.p["output_weights"]
            W = W[np.isfinite(W)]
            return 1.0 / max(1.0, float(np.abs(W).max()) if W.size else 1.0)
        return 1.0
    if key == "output_weights":
        xs = prob.x[np.isfinite(prob.x)]
        return 1.0 / max(1.0, float(np.abs(xs).max()) if xs.size else 1.0)
    if key == "targets" and family in ("sigmoid_focal", "binary_focal"):
        # (1-p_t)**gamma, 1-p_t = m = z*(1-p) + (1-z)*p: m itself (at least min(p, 1-p))
        xv = float(prob.x[index])
        with mp.workprec(64):
            p = (1 / (1 + mp.exp(-MPF(xv)))) if family == "sigmoid_focal" else MPF(xv)
            q = (1 / (1 + mp.exp(MPF(xv)))) if family == "sigmoid_focal" else 1 - MPF(xv)
            m = min(p, q)
        return min(MPF(1), m) if m > 0 else MPF(1)
    return abs(x0) if x0 else 1.0


# --- the check ---------------------------------------------------------------------------------------
def conventions(case) -> list[dict]:
    convs = [dict(c) for c in mpref.conventions_for(case.family)]
    p = case.params
    nd = case.inputs.ndim
    axis_last = p.get("axis") is None or nd == 0 or p["axis"] % nd == nd - 1  # mpref's weighted means need it
    if p.get("reduction") == "mean" and axis_last and (
            p.get("sample_weight") is not None or (p.get("weight") is not None and not FAMILIES[case.family].rowwise)):
        convs += [{"mean": "weight_sum"}, {"mean": "nonzero_weights"}]
    return convs


def selected_cases(corpus=None) -> list:
    corpus = build_corpus(0, invalid=False) if corpus is None else corpus
    out = []
    for c in corpus:
        if c.inputs.size == 0:
            continue
        if c.family in SAMPLED_FAMILIES or c.inputs.size <= MAX_INPUT_ELEMENTS:
            out.append(c)
    return out


def _compact_sampled(x, t, p):
    """The sampled case with output_weights/biases reduced to the classes it uses (ids remapped;
    ids outside [0, C) stay outside). Returns (t, p, used rows)."""
    W = p["output_weights"]
    C = W.shape[0]
    lab = np.asarray(t).astype(np.int64)
    s = np.asarray(p["sampled"]).astype(np.int64)
    ids = np.concatenate([lab.ravel(), s.ravel()])
    used = np.unique(ids[(ids >= 0) & (ids < C)])
    remap = np.full(C, -1, np.int64)
    remap[used] = np.arange(used.size)

    def m(a):
        a = np.asarray(a).astype(np.int64)
        valid = (a >= 0) & (a < C)
        return np.where(valid, remap[np.where(valid, a, 0)], np.where(a < 0, a, used.size + a - C))

    q = dict(p)
    q["output_weights"] = W[used]
    q["output_biases"] = np.asarray(p["output_biases"]).reshape(-1)[used]
    q["sampled"] = m(s)
    return m(lab), q, used


@dataclass
class Record:
    case: str
    family: str
    dtype: str
    conv: dict
    quantity: str
    index: tuple
    oracle: Any = None  # float / long double
    scale: Any = None
    exact: Any = None  # mpf
    mp_err: Any = None
    err_ulp: float = 0.0  # (|oracle - exact| - mpmath's error bound)+ in ulps of the dtype at exact
    err_uref: float = 0.0  # the same in u_ref * scale (nan: mpmath does not resolve u_ref * scale)
    bound_ulp: float = 0.0  # B * u_ref * scale in ulps of the dtype
    misrounded: str = ""  # to_dtype(oracle) != the correctly rounded exact value: "excused" when the exact
    #                       value lies within B * u_ref * scale of the rounding midpoint, else "not excused"
    status: str = "ok"  # ok | fail | nan (a nan output, a nan gradient: class checked) | skip:<why>
    detail: str = ""


_CACHE: dict = {}


def _key(prob: Problem, quantity: str, index: tuple) -> tuple:
    h = hashlib.sha1()
    for k, a in sorted(prob.arrays().items()):
        h.update(k.encode())
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    scal = tuple(sorted((k, repr(v)) for k, v in prob.p.items() if not isinstance(v, np.ndarray)))
    conv = {k: v for k, v in prob.conv.items() if k != "mean" or prob.reduction == "mean"}  # same function
    return (prob.family, tuple(sorted(conv.items())), scal, h.hexdigest(), quantity, index)


def check_case(case, dtype: str, k: int | None = None) -> list[Record]:
    """Every selected element of every quantity, under every convention set, in one dtype."""
    k = MAX_PER_QUANTITY if k is None else k
    x, t, p = case.in_dtype(dtype)
    precision, _ = reference_precision(dtype)
    u_ref = MPF(U_REF[dtype])
    floor = floor_for(dtype)
    records: list[Record] = []
    fam = case.family
    for conv in conventions(case):
        g = oracle.grad(fam, x, t, p, conv, precision)
        wp = oracle.weight_param(p)
        expected = {"grad_logits"} | ({"grad_targets"} if FAMILIES[fam].targets == "dense" else set()) \
            | ({"grad_weights"} if wp is not None else set())
        assert set(g) == expected, f"{case.id} [{dtype}] {conv}: quantities {sorted(g)} != {sorted(expected)}"
        x64, t64 = _f64(x), _f64(t)
        p64 = {kk: (_f64(v) if isinstance(v, np.ndarray) else v) for kk, v in p.items()}
        used_rows = None
        if fam in SAMPLED_FAMILIES:
            t64, p64, used_rows = _compact_sampled(x64, t64, p64)
        prob = Problem(fam, x64, t64, p64, conv)
        full_per = prob.unreduced(128)
        full_out = prob.reduce(full_per, 128)
        for q in QUANTITIES:
            if q not in g:
                continue
            value, scale = (np.asarray(a) for a in g[q])
            key = {"grad_logits": "inputs", "grad_targets": "targets"}.get(q, wp)
            arr = {"inputs": x64, "targets": _f64(t)}.get(key) if key in ("inputs", "targets") else _f64(p[key])
            assert value.shape == np.shape(arr) and scale.shape == np.shape(arr), \
                f"{case.id} [{dtype}] {conv} {q}: shape {value.shape}/{scale.shape} != {np.shape(arr)}"
            allowed = None
            if used_rows is not None and key == "output_weights":
                unused = np.setdiff1d(np.arange(arr.shape[0]), used_rows)
                bad = np.flatnonzero(np.any(value[unused] != 0, axis=-1)) if unused.size else []
                assert len(bad) == 0, f"{case.id} [{dtype}] grad_weights of unused rows {unused[bad][:5]} != 0"
                allowed = np.zeros(arr.shape, bool)
                allowed[used_rows] = True
            for idx in select_elements(arr, value, scale, allowed, k):
                rec = Record(case.id, fam, dtype, conv, q, idx, oracle=value[idx], scale=scale[idx])
                records.append(rec)
                if used_rows is not None and key == "output_weights":
                    pidx = (int(np.searchsorted(used_rows, idx[0])),) + idx[1:]
                else:
                    pidx = idx
                sf = float(scale[idx])
                # the absolute accuracy asked: the dtype's floor, or 2**-24 of the B*u_ref*scale the check allows
                fl = max(floor, MPF(sf) * u_ref * 2.0**-22) if math.isfinite(sf) and sf > 0 else floor
                ck = _key(prob, q, pidx)
                d = _CACHE.get(ck)
                if d is None or not _accurate_enough(d, fl):
                    d = _CACHE[ck] = _derivative(prob, key, pidx, value[idx], scale[idx], fl, full_out, full_per)
                _grade(rec, d, u_ref, dtype)
    return records


def _accurate_enough(d: Derivative, floor) -> bool:
    """A cached derivative (from another dtype with the same rounded data) serves this one too."""
    if d.value is None:
        return not d.skip.startswith("unresolved")
    return d.err <= max(_ldexp(abs(d.value), -GOOD_BITS), floor)


def _same(a, b) -> bool:
    a, b = np.ravel(a), np.ravel(b)
    return a.shape == b.shape and all(u == v or (mpmath.isnan(u) and mpmath.isnan(v)) for u, v in zip(a, b))


def _derivative(prob: Problem, key: str, index: tuple, v, s, floor, full_out, full_per) -> Derivative:
    """The mpmath derivative for one element (after checking the plan's sub-problem against the
    whole problem at the element's own value)."""
    plan = plan_for(prob, key, index)
    if plan.mode in ("direct", "substitute"):
        sub_per = plan.sub.unreduced(128)
    if plan.mode == "direct":
        if plan.row_mean:  # the element's own loss; the output is its row's mean
            assert _same(sub_per, full_per[index]), f"{prob.family}: element {index} differs from the full case"
            mine = full_out[index[:-1]]
        else:
            mine = full_out[plan.pos]
            assert _same(plan.sub.reduce(sub_per, 128), mine), \
                f"{prob.family}: the outputs at {plan.pos} differ from the full case"
        if not plan.row_mean and any(mpmath.isnan(u) for u in np.ravel(mine)):
            return Derivative(skip="nan loss")  # the element's own output: its gradient is nan too
        if not all(_finite(u) for u in np.ravel(mine)):
            return Derivative(skip="nonfinite loss")
        fabs = _total(plan.sub, sub_per, 128, 0)[1]
    else:
        if plan.mode == "substitute":
            assert _same(sub_per[0], full_per[plan.pos]), \
                f"{prob.family}: the unreduced values at {plan.pos} differ from the full case"
        if not all(_finite(u) for u in np.ravel(full_out)):
            return Derivative(skip="nonfinite loss")
        fabs = _total(prob, full_per, 128, 0)[1]
    if not _finite(fabs):
        return Derivative(skip="nonfinite loss")
    F = ElementFunction(prob, key, index, plan)
    factor = plan.factor
    vf, sf = float(v), float(s)
    if math.isfinite(vf) and vf != 0:
        guess = abs(MPF(vf)) * factor
    elif math.isfinite(sf) and sf != 0:
        guess = MPF(sf) * factor * 2.0**-64
    else:  # too large a guess costs one cheap round; too small a very precise one
        guess = fabs * 2.0**-64
    d = differentiate(F, F.x0, MPF(_length_scale(prob.family, key, F.x0f, prob, index)), floor * factor,
                      guess, fabs)
    if factor != 1 and d.value is not None:
        with mp.workprec(d.prec + 64):
            d.value, d.err = d.value / factor, d.err / factor
    return d


def _grade(rec: Record, d: Derivative, u_ref, dtype: str) -> None:
    """The check, and the error measures: the part of |oracle - exact| the mpmath error bound
    cannot account for, in ulps of the dtype and (where mpmath resolves it) in u_ref * scale."""
    v = rec.oracle
    if d.skip == "nan loss":  # nan in, nan out: the output is nan, and so is its gradient
        rec.status = "nan" if np.isnan(v) else "fail"
        if rec.status == "fail":
            rec.detail = f"oracle {v!r} where the element's own loss output is nan"
            rec.err_ulp = rec.err_uref = math.inf
        return
    if d.value is None:
        rec.status = "skip:" + d.skip
        return
    rec.exact, rec.mp_err = d.value, d.err
    if not np.isfinite(v):
        rec.status = "fail"
        rec.detail = f"oracle {v!r} where the mpmath derivative is finite"
        rec.err_ulp = rec.err_uref = math.inf
        return
    with mp.workprec(128):
        vm = mpref.from_float(np.asarray(v))[()]
        sm_ = mpref.from_float(np.asarray(rec.scale))[()]
        excess = max(abs(vm - d.value) - d.err, MPF(0))
        ulp = mpref.ulp_at(d.value, dtype)
        tol = TOL_UREF * u_ref * sm_ + _ldexp(ulp, TOL_FLOOR_EXP)
        rec.err_ulp = float(excess / ulp)
        rec.bound_ulp = float(TOL_UREF * u_ref * sm_ / ulp)
        # what the harness grades with: the oracle's value rounded to the dtype, against the exact one's
        with np.errstate(over="ignore"):
            rounded = float(to_dtype(np.asarray(v).astype(np.float64), dtype).astype(np.float64))
        correct = float(mpref.to_float(np.array([d.value], dtype=object), dtype).astype(np.float64)[0])
        if rounded != correct and not (math.isnan(rounded) and math.isnan(correct)):
            dist = mpref.midpoint_distance(d.value, rounded, correct, dtype)
            rec.misrounded = "excused" if dist <= rec.bound_ulp + float(d.err / ulp) else "not excused"
        if sm_ > 0 and d.err <= _ldexp(u_ref * sm_, -8):
            rec.err_uref = float(excess / (u_ref * sm_))
        elif excess == 0:
            rec.err_uref = 0.0 if sm_ > 0 or d.err == 0 else math.nan
        else:
            rec.err_uref = math.inf if sm_ == 0 else math.nan
        if excess > tol:
            rec.status = "fail"
            rec.detail = (f"|oracle - exact| = {mp.nstr(abs(vm - d.value), 6)} > {TOL_UREF}*u_ref*scale + "
                          f"2**{TOL_FLOOR_EXP}*ulp = {mp.nstr(tol, 6)} ({rec.err_uref:.3g} u_ref*scale, "
                          f"{rec.err_ulp:.3g} ulp; mpmath error <= {mp.nstr(d.err, 3)})")


def describe(r: Record) -> str:
    return (f"{r.case} ({r.family}) {r.quantity} [{r.dtype}] {r.conv or 'default conventions'} element {r.index}: "
            f"oracle {r.oracle!r} (scale {r.scale!r}), mpmath {mp.nstr(r.exact, 25) if r.exact is not None else None}"
            f": {r.detail}")


# --- tests ---------------------------------------------------------------------------------------------
def _sigma(x):
    return 1 / (1 + mp.exp(-x))


def _softplus_F(x0):
    def F(v, prec):
        with mp.workprec(prec + 16):
            y = mp.log1p(mp.exp(MPF(x0) if v is None else v))
        return y, abs(y)
    return F


@pytest.mark.parametrize("x0", [-30.0, 0.0, 30.0, -700.0, 1e4, 0.1])
def test_differentiate_softplus(x0):
    """d/dx log1p(exp(x)) = sigmoid(x) to >= GOOD_BITS bits, with an honest error bound."""
    floor = floor_for("float64")
    d = differentiate(_softplus_F(x0), MPF(x0), MPF(1), floor, guess=1.0, fabs0=abs(x0) + 1)
    assert d.value is not None, d.skip
    with mp.workprec(400):
        exact = _sigma(MPF(x0))
        err = abs(d.value - exact)
    assert err <= d.err, (x0, err, d.err)
    assert err <= _ldexp(exact, -GOOD_BITS), (x0, mp.nstr(err / exact, 5))


def test_differentiate_small_length_scale_and_tiny_derivative():
    """-log(p) at p = 2**-1000 (length scale p); exp(x) at x = -700 (a derivative in float64's
    subnormal range: still GOOD_BITS relative) and at x = -900 (below the floor: resolved to it)."""
    floor = floor_for("float64")
    p0 = _ldexp(1, -1000)

    def neglog(v, prec):
        with mp.workprec(prec + 16):
            y = -mp.log(p0 if v is None else v)
        return y, abs(y)

    d = differentiate(neglog, p0, p0, floor, guess=1.0, fabs0=700)
    with mp.workprec(300):
        assert abs(d.value + 1 / p0) <= _ldexp(1 / p0, -GOOD_BITS) and d.err <= _ldexp(1 / p0, -GOOD_BITS)

    for x0, guess in ((-700, 1.0), (-700, 0.0), (-900, 1.0), (-900, 0.0)):
        def ex(v, prec, x0=x0):
            with mp.workprec(prec + 16):
                y = mp.exp(MPF(x0) if v is None else v)
            return y, abs(y)

        d = differentiate(ex, MPF(x0), MPF(1), floor, guess=guess, fabs0=mp.exp(x0))
        with mp.workprec(300):
            exact = mp.exp(x0)
            assert abs(d.value - exact) <= d.err <= max(_ldexp(exact, -GOOD_BITS), floor), (x0, guess)


def test_differentiate_refuses_kinks_and_jumps_only():
    floor = floor_for("float64")

    def absf(v, prec):
        y = abs(MPF(0) if v is None else v)
        return y, y + 1

    def jump(v, prec):  # F(0) = 1, F(x) = x otherwise (TF's nonzero_weights count at a zero weight)
        y = MPF(1) if v is None or v == 0 else v
        return y, abs(y) + 1

    def cube(v, prec):  # (1-p)**3 at p = 1: smooth, f' = f'' = 0 there (focal (1-p)**2 * -log p)
        with mp.workprec(prec + 16):
            y = (1 - (MPF(1) if v is None else v)) ** 3
        return y, abs(y) + 1

    def square(v, prec):  # a smooth minimum
        y = (MPF(0) if v is None else v) ** 2
        return y, abs(y) + 1

    assert differentiate(absf, MPF(0), MPF(1), floor, 1.0, 1.0).skip == "not differentiable"
    assert differentiate(jump, MPF(0), MPF(1), floor, 1.0, 1.0).skip == "not differentiable"
    for fn, x0 in ((cube, 1), (square, 0)):
        d = differentiate(fn, MPF(x0), MPF(1), _ldexp(1, -300), 1.0, 1.0)
        assert d.value is not None and abs(d.value) <= d.err <= _ldexp(1, -300), (fn.__name__, d)


def test_sentinel_patch_reaches_mpref_and_sampled():
    """The patched conversions feed an exact non-float value to both mpmath losses, and only for
    the perturbed element (the other element equal to it keeps its value)."""
    h = _ldexp(1, -200)
    prob = Problem("sigmoid", np.array([[0.25, 0.25]]), np.array([[1.0, 0.0]]), {}, {})
    F = ElementFunction(prob, "inputs", (0, 0), Plan("full"))
    with mp.workprec(400):
        v = mp.fadd(MPF(0.25), h, exact=True)
        got, _ = F(v, 300)
        want = mp.log1p(mp.exp(-v)) + mp.log1p(mp.exp(MPF(0.25)))
        assert abs(got - want) <= _ldexp(want, -290)
    p = {"output_weights": np.array([[1.0, 2.0], [0.5, -1.0]]), "output_biases": np.zeros(2),
         "sampled": np.array([1]), "true_expected_count": np.ones((1, 1)), "sampled_expected_count": np.ones(1)}
    prob = Problem("nce", np.array([[0.5, -0.25]]), np.array([[0]]), p, {})
    F = ElementFunction(prob, "output_weights", (0, 0), Plan("full"))
    with mp.workprec(400):
        v = mp.fadd(MPF(1.0), -h, exact=True)
        got, _ = F(v, 300)
        l0, l1 = MPF(0.5) * v - MPF(0.5), MPF(0.25) + MPF(0.25)
        want = mp.log1p(mp.exp(-l0)) + mp.log1p(mp.exp(l1))
        assert abs(got - want) <= _ldexp(want, -290)
    assert mpref.MPF is _ORIG_MPF and sm.from_float is _ORIG_FROM_FLOAT


def test_check_catches_a_wrong_gradient(monkeypatch):
    """The check itself: an oracle off by 2**-40 (relative) in one element, a nan where the
    derivative exists, and a finite value where the output is nan are each reported."""
    corpus = {c.id: c for c in build_corpus(0, invalid=False)}
    case = corpus["baseline/sigmoid/random-none"]
    real = oracle.grad

    def wrong(*a, **k):
        g = real(*a, **k)
        v, s = (np.array(u) for u in g["grad_logits"])
        v[0, 0] *= 1 + 2.0**-40
        v[0, 1] = np.nan
        return {**g, "grad_logits": (v, s)}

    monkeypatch.setattr(oracle, "grad", wrong)
    recs = {r.index: r for r in check_case(case, "float32", k=48) if r.quantity == "grad_logits" and not r.conv}
    assert recs[(0, 0)].status == "fail" and recs[(0, 1)].status == "fail", (recs[(0, 0)], recs[(0, 1)])
    assert all(r.status == "ok" for i, r in recs.items() if i not in ((0, 0), (0, 1)))

    from harness.casefile import Case
    nan_case = Case("unit/softmax/nan-row", "softmax", np.array([[np.nan, 1.0, 2.0], [0.0, 1.0, 2.0]]),
                    np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), {})  # row 0's loss is nan: its gradient too

    def finite(*a, **k):
        g = real(*a, **k)
        v, s = (np.nan_to_num(np.array(u)) for u in g["grad_logits"])
        return {**g, "grad_logits": (v, s)}

    monkeypatch.setattr(oracle, "grad", real)
    before = [r for r in check_case(nan_case, "float32", k=48) if r.quantity == "grad_logits" and not r.conv]
    assert any(r.status == "nan" for r in before) and not any(r.status == "fail" for r in before)
    monkeypatch.setattr(oracle, "grad", finite)
    after = [r for r in check_case(nan_case, "float32", k=48) if r.quantity == "grad_logits" and not r.conv]
    assert {r.index for r in after if r.status == "fail"} == {r.index for r in before if r.status == "nan"}


CASES = selected_cases()
_BY_FAMILY: dict[str, list] = {f: [c for c in CASES if c.family == f] for f in FAMILIES}
SHARD_CASES = 4  # cases per test, each in every dtype it runs in (the dtypes share mpmath derivatives)
MIN_CHECKED_TOTAL = 2000  # elements checked (not skipped) over the whole corpus
SHARD_TEST = "test_oracle_grad_matches_mpmath_derivative"


def _shards():
    for fam, cases in _BY_FAMILY.items():
        for i in range(0, len(cases), SHARD_CASES):
            yield pytest.param(fam, i // SHARD_CASES, id=f"{fam}-{i // SHARD_CASES}")


def shard_cases(fam: str, shard: int) -> list:
    return _BY_FAMILY[fam][shard * SHARD_CASES:(shard + 1) * SHARD_CASES]


def test_every_family_is_covered():
    assert all(_BY_FAMILY[f] for f in FAMILIES), [f for f in FAMILIES if not _BY_FAMILY[f]]


@pytest.fixture(scope="session")
def counts_dir(tmp_path_factory):
    """A directory every pytest-xdist worker of this run shares (their basetemps' parent)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    d = (base.parent / f"oracle-grad-counts-{uid}") if uid else (base / "oracle-grad-counts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _count_file(counts_dir, nodeid: str):
    return counts_dir / (hashlib.sha1(nodeid.encode()).hexdigest() + ".json")


@pytest.mark.parametrize("family,shard", list(_shards()))
def test_oracle_grad_matches_mpmath_derivative(family, shard, counts_dir, request):
    records: list[Record] = []
    error = None
    try:
        for case in shard_cases(family, shard):
            for dtype in case.dtypes or DTYPES:
                records += check_case(case, dtype)
    except BaseException as e:  # still report the counts, so the total test does not wait for them
        error = repr(e)
        raise
    finally:
        counts = {"checked": sum(r.status in ("ok", "fail") for r in records),
                  "nan": sum(r.status == "nan" for r in records),
                  "skipped": sum(r.status.startswith("skip") for r in records), "error": error}
        _count_file(counts_dir, request.node.nodeid).write_text(json.dumps(counts))
    fails = [r for r in records if r.status == "fail"]
    assert not fails, f"{len(fails)} element(s) out of bound:\n" + "\n".join(describe(r) for r in fails[:40])


def test_checked_total(counts_dir, request):
    """The shards checked >= MIN_CHECKED_TOTAL elements in all (runs after them: it is collected
    last, and under pytest-xdist it waits for the other worker's shards)."""
    shards = [it.nodeid for it in request.session.items if getattr(it, "originalname", "") == SHARD_TEST]
    n_all = len(list(_shards()))
    if len(shards) < n_all:
        pytest.skip(f"only {len(shards)} of {n_all} shards selected")
    pending, last_progress = list(shards), time.monotonic()
    while pending and time.monotonic() - last_progress < 300:  # a shard takes seconds, not minutes
        still = [n for n in pending if not _count_file(counts_dir, n).exists()]
        if len(still) < len(pending):
            last_progress = time.monotonic()
        pending = still
        if pending:
            time.sleep(0.5)
    assert not pending, f"{len(pending)} shard(s) never reported in 300 s (the session stopped?), e.g. {pending[:3]}"
    counts = [json.loads(_count_file(counts_dir, n).read_text()) for n in shards]
    errors = [c["error"] for c in counts if c["error"]]
    checked, skipped = sum(c["checked"] for c in counts), sum(c["skipped"] for c in counts)
    nans = sum(c["nan"] for c in counts)
    print(f"{checked} elements checked, {nans} nan outputs with a nan gradient, {skipped} skipped")
    assert not errors, errors[:3]
    assert checked >= MIN_CHECKED_TOTAL, f"only {checked} elements checked ({skipped} skipped)"
