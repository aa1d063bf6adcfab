"""The one tolerance policy: allowed ULP error as a function of dtype and problem size.

    tol_ulp(dtype, n) = BASE_ULP[dtype] + ceil(log2(n))        (n = terms summed per output)

Justification (standard floating-point error analysis in the working precision u of the
tested dtype; Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Sec. 4.2;
Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and softmax functions",
IMA J. Numer. Anal. 41 (2021)):

* An elementwise loss is a handful of correctly-rounded operations (exp, log1p, a product,
  a sum): each contributes at most 1/2 ulp, and none cancels for valid inputs when the
  stable formulas are used, so a result within BASE_ULP = 4 ulps is attainable.
* log-sum-exp over n terms with the max shift: the shifted sum s lies in [1, n], and
  pairwise (tree) summation, which every framework's CPU reduction uses, has relative error
  at most ~ceil(log2 n)*u; log turns that into an absolute error of the same size, i.e.
  about ceil(log2 n) ulps of a result of magnitude >= 1.
* A reduction ('sum'/'mean') over N outputs adds ceil(log2 N) the same way, so n counts
  every term that flows into one output element.

The tolerance is purely in ulps of the result: there is no absolute floor, so an error that
is small in absolute terms but large relative to a small loss (e.g. log(1 + 1e-9) computed
as log of a rounded sum) is reported, never hidden. Whether the input forced such an error
(ill-conditioning) or the implementation did is a separate question (the problem's
condition number), not a reason to loosen this policy.
"""
from __future__ import annotations

import math

BASE_ULP: dict[str, int] = {"float16": 4, "bfloat16": 4, "float32": 4, "float64": 4}


def tolerance_ulp(dtype: str, n_terms: int) -> float:
    """Allowed ULP distance for a result that sums `n_terms` terms in `dtype`."""
    return float(BASE_ULP[dtype] + (math.ceil(math.log2(n_terms)) if n_terms > 1 else 0))


def terms_per_output(rowwise: bool, input_shape: tuple[int, ...], reduction: str, axis_mean: bool) -> int:
    """Number of terms that flow into one output element of the loss."""
    n = input_shape[-1] if (rowwise or axis_mean) and input_shape else 1
    if reduction in ("sum", "mean"):
        per_output = 1
        for d in (input_shape[:-1] if (rowwise or axis_mean) else input_shape):
            per_output *= d
        n *= max(per_output, 1)
    return max(n, 1)


def table() -> list[tuple[str, str]]:
    """The policy as (dtype, rule) rows, for README and reports."""
    return [(d, f"{b} + ceil(log2 n)") for d, b in BASE_ULP.items()]
