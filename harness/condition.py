"""Condition numbers: how much of an error the input forces.

For an output y of the loss and the inputs a_i the framework receives (logits or probabilities,
dense targets, the weights), the componentwise relative condition number is

    cond(y) = sum_i |a_i| * |dy/da_i| / |y|

(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §1.6): perturbing every input
by a relative u changes y by at most about cond * u * |y|. The derivatives are the reference
gradients (`oracle.grad`, a vector-Jacobian product with ones), so each input is charged to the
output it feeds: one element (elementwise, unreduced), its row (rowwise or a last-axis mean), or
the single reduced output.

The line between ill-conditioning and implementation error is the first-order error bound of the
shifted log-sum-exp, y = a + log(sum_i exp(x_i - a)), in the analysis of Blanchard, Higham &
Higham, "Accurately computing the log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4),
2021: the inputs perturbed by the unit roundoff u of the dtype (cond * u * |y|), n roundings of the
terms summed inside the logarithm (n * u, absolute), then the result rounded (half an ulp):

    cond_ulp = 1/2 + u * (cond * |y| + n) / ulp(y)

An error within cond_ulp is one a backward-stable implementation in the dtype may make at that
input ("conditioning"); beyond it, the implementation loses accuracy the input does not force
("implementation"). n is the tolerance's count of terms per output (`harness.tolerance`). The
absolute n * u term makes the line generous where y is tiny (a loss of 1e-9 computed as 0 in
float32 is within it): the ULP figure still shows such errors.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from harness import oracle
from harness.spec import FAMILIES, SAMPLED_FAMILIES
from harness.ulp import ulp

#: unit roundoff of each dtype, 2**-p with p the significand's bits
UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24, "float64": 2.0 ** -53}


def _to_outputs(contrib: np.ndarray, out_shape: tuple[int, ...], axis: int | None) -> np.ndarray | None:
    """Per-input contributions summed into the output each input feeds; None if the shapes do
    not say which (the caller then bounds it)."""
    if contrib.shape == out_shape:
        return contrib
    if out_shape == ():
        return np.sum(contrib)
    if contrib.ndim == len(out_shape) + 1:
        ax = contrib.ndim - 1 if axis is None else axis % contrib.ndim
        summed = np.sum(contrib, axis=ax)
        if summed.shape == out_shape:
            return summed
    return None


def condition(family: str, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any],
              conventions: Mapping[str, Any], precision, y: np.ndarray | None = None,
              grads: Mapping[str, Any] | None = None) -> np.ndarray:
    """cond(y) per loss output, float64 (nan for the sampled families, whose output weights feed
    every output, and where y = 0 and nothing perturbs it; inf where y = 0 and something does).
    y: the reference loss; grads: `oracle.grad`'s values (computed here when not given).
    A weight parameter shared by several outputs (class_weight, pos_weight) multiplies part of
    each output's loss, so it contributes at most 1 to cond: that bound is what is added."""
    if family in SAMPLED_FAMILIES:
        y = oracle.loss(family, x, t, params, conventions, precision) if y is None else y
        return np.full(np.shape(y), np.nan)
    if y is None:
        y = oracle.loss(family, x, t, params, conventions, precision)
    if grads is None:
        grads = {q: v for q, (v, _) in oracle.grad(family, x, t, params, conventions, precision).items()}
    with np.errstate(over="ignore"):  # a long double beyond float64's range is inf
        y = np.asarray(y, np.float64)
    out_shape = y.shape
    axis = params.get("axis")
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.zeros(out_shape, np.float64)
        pairs = [(x, grads.get("grad_logits"))]
        if FAMILIES[family].targets == "dense":
            pairs.append((t, grads.get("grad_targets")))
        shared = 0.0
        wp = oracle.weight_param(params)
        if wp is not None and grads.get("grad_weights") is not None:
            w = np.asarray(params[wp], np.float64)
            c = np.abs(w) * np.abs(np.asarray(grads["grad_weights"], np.float64))
            summed = None
            if c.shape == np.shape(x):
                pairs.append((w, grads["grad_weights"]))
            else:
                summed = _to_outputs(c, out_shape, axis)
                if summed is not None:
                    total = total + summed
                else:
                    shared += 1.0
        for a, g in pairs:
            if g is None:
                continue
            c = np.abs(np.asarray(a, np.float64)) * np.abs(np.asarray(g, np.float64))
            c = np.where(np.asarray(a, np.float64) == 0, 0.0, c)  # an exact zero input is not perturbed
            s = _to_outputs(c, out_shape, axis)
            if s is None:
                return np.full(out_shape, np.nan)
            total = total + s
        ay = np.abs(y)
        cond = np.where(ay > 0, total / np.where(ay > 0, ay, 1.0) + shared,
                        np.where(total > 0, np.inf, np.nan))
    return np.asarray(cond, np.float64)


def cond_ulp(cond: float, y: float, dtype: str, n_terms: int) -> float:
    """The error, in ulps of `dtype` at y, within which an error counts as forced by the input:
    1/2 + u * (cond * |y| + n) / ulp(y) (module docstring)."""
    if not np.isfinite(y) or not np.isfinite(cond):
        return float("nan")
    u = UNIT_ROUNDOFF[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        sp = float(ulp(np.asarray(y), dtype))
    if not np.isfinite(sp) or sp <= 0:
        return float("nan")
    return 0.5 + u * (cond * abs(y) + n_terms) / sp


def error_kind(max_ulp: float, line: float) -> str:
    """"conditioning" when max_ulp is within the line, "implementation" beyond it, "" unknown."""
    if not np.isfinite(max_ulp) or not np.isfinite(line):
        return ""
    return "conditioning" if max_ulp <= line else "implementation"
