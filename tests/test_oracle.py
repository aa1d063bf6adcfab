"""harness.oracle (float64 / long double) against harness.mpref (mpmath, 128 bits).

* The whole built-in corpus, in every dtype each case runs in, under the default conventions
  and the non-default ones that apply (mean="target_weight" for index targets, axis_mean for
  elementwise families): the oracle's error, in ulps of the tested dtype, stays below
  ERROR_BOUND_ULP, non-finite classes agree exactly, and the value the harness grades with
  (dtypes.to_dtype of the oracle's result) is the correctly rounded exact value -- except
  where the exact value lies within the oracle's (bounded) error of a rounding midpoint, the
  one place no approximate reference can round correctly.
* The conventions of the oracle's module docstring on hand-picked inputs.
* mpref.to_float (correct rounding) against hand-worked values, and dtypes.to_dtype against it.

Per-dtype worst errors: `.venv/bin/python tests/measure_reference_error.py`.
"""
from __future__ import annotations

import hashlib
import math

import mpmath
import numpy as np
import pytest
from mpmath import mp

from cases.generator import build_corpus
from harness import mpref, oracle
from harness.casefile import Case
from harness.dtypes import finfo, np_dtype, to_dtype
from harness.spec import ARRAY_PARAMS, DTYPES, FAMILIES

ERROR_BOUND_ULP = mpref.ORACLE_ERROR_BOUND_ULP  # measured bounds, see harness/mpref.py

CORPUS = build_corpus(0, invalid=False)
_UNREDUCED: dict[tuple, np.ndarray] = {}


def _unreduced(case, dtype: str) -> np.ndarray:
    """mpref.unreduced, shared by cases with the same rounded data (e.g. '-none'/'-mean' pairs)."""
    x, t, p = case.in_dtype(dtype)
    h = hashlib.sha1()
    arrays = sorted(k for k in p if isinstance(p[k], np.ndarray))
    for a in [x, t] + [p[k] for k in arrays]:
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    scalars = tuple(sorted((k, v) for k, v in p.items() if k not in arrays and k != "reduction"))
    key = (case.family, dtype, tuple(arrays), scalars, h.hexdigest())
    if key not in _UNREDUCED:
        if len(_UNREDUCED) >= 8:  # siblings are adjacent in the corpus; millions of live mpf slow the GC
            _UNREDUCED.pop(next(iter(_UNREDUCED)))
        _UNREDUCED[key] = mpref.unreduced(case.family, x, t, p)
    return _UNREDUCED[key]


def _sampled(case):
    """An exhaustive case (hundreds of thousands of elements) checked on every 61st element and
    its extremes: mpmath on all of them would take minutes."""
    if case.category != "exhaustive":
        return case
    n = case.inputs.shape[0]
    keep = np.unique(np.concatenate([np.arange(0, n, 61), np.argsort(case.inputs[:, 0])[[0, 1, -2, -1]]]))
    return Case(case.id, case.family, case.inputs[keep], case.targets[keep], case.params, case.dtypes)


def _corpus_params():
    for case in CORPUS:
        for d in case.dtypes or DTYPES:
            yield pytest.param(_sampled(case), d, id=f"{case.id}[{d}]")


@pytest.mark.parametrize("case,dtype", list(_corpus_params()))
def test_oracle_matches_mpmath_on_corpus(case, dtype):
    records = mpref.compare_case(case, dtype, per=_unreduced(case, dtype))
    problems = mpref.oracle_problems(records, dtype, ERROR_BOUND_ULP[dtype])
    assert not problems, f"{len(problems)} problem(s): " + " | ".join(problems[:8])


# --- the conventions, by hand ------------------------------------------------------------------------
INF, NAN = math.inf, math.nan
IMPLS = {
    "oracle-float64": lambda *a, **k: oracle.loss(*a, **k, precision=np.float64).astype(np.float64),
    "oracle-longdouble": lambda *a, **k: oracle.loss(*a, **k, precision=np.longdouble).astype(np.float64),
    "mpref": lambda *a, **k: mpref.to_float(mpref.loss(*a, **k), "float64").astype(np.float64),
}


def same(actual, expected, rel: float = 0.0) -> bool:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return False
    both_nan = np.isnan(a) & np.isnan(e)
    with np.errstate(invalid="ignore"):
        close = (a == e) | (np.isfinite(e) & (np.abs(a - e) <= rel * np.abs(e)))
    return bool(np.all(both_nan | close))


L2, L3 = math.log(2.0), math.log(3.0)
SOFTPLUS_M100 = math.log1p(math.exp(-100.0))
# (id, family, inputs, targets, params, conventions, expected)
HAND = [
    ("softmax-inf-at-target", "softmax", [[INF, 0, 0, 0]], [[1.0, 0, 0, 0]], {}, {}, [0.0]),
    ("softmax-inf-beside-target", "softmax", [[INF, 0, 0, 0]], [[0, 1.0, 0, 0]], {}, {}, [INF]),
    ("softmax-neg-inf-beside-target", "softmax", [[-INF, 0, 0, 0]], [[0, 1.0, 0, 0]], {}, {}, [L3]),
    ("softmax-neg-inf-at-target", "softmax", [[-INF, 0, 0, 0]], [[1.0, 0, 0, 0]], {}, {}, [INF]),
    ("softmax-neg-inf-zero-target", "softmax", [[-INF, 0, 0, 0]], [[0, 0.5, 0.5, 0]], {}, {}, [L3]),
    ("softmax-two-inf-at-one", "softmax", [[INF, INF, 0, 0]], [[1.0, 0, 0, 0]], {}, {}, [NAN]),
    ("softmax-two-inf-elsewhere", "softmax", [[INF, INF, 0, 0]], [[0, 0, 1.0, 0]], {}, {}, [INF]),
    ("softmax-all-neg-inf", "softmax", [[-INF, -INF, -INF]], [[1.0, 0, 0]], {}, {}, [NAN]),
    ("softmax-nan", "softmax", [[NAN, 0, 0]], [[0, 1.0, 0]], {}, {}, [NAN]),
    ("softmax-equal", "softmax", [[5.0, 5.0]], [[0.5, 0.5]], {}, {}, [L2]),
    ("softmax-huge-equal", "softmax", [[1e30, 1e30]], [[1.0, 0.0]], {}, {}, [L2]),
    ("softmax-one-class", "softmax", [[3.0], [-1e30]], [[1.0], [1.0]], {}, {}, [0.0, 0.0]),
    ("softmax-class-weight-zero-at-inf", "softmax", [[INF, 0.0]], [[0.0, 1.0]], {"class_weight": [1.0, 0.0]}, {},
     [0.0]),
    ("sparse-inf-at-target", "sparse_softmax", [[INF, 0, 0, 0]], [0], {}, {}, [0.0]),
    ("sparse-neg-inf", "sparse_softmax", [[-INF, 0, 0, 0]], [1], {}, {}, [L3]),
    ("sparse-out-of-range", "sparse_softmax", [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [2, -1, 0], {}, {},
     [NAN, NAN, L2]),
    ("sparse-weighted", "sparse_softmax", [[0.0, 0.0]], [1], {"class_weight": [1.0, 3.0]}, {}, [3 * L2]),
    ("sigmoid-inf-z1", "sigmoid", [INF], [1.0], {}, {}, [0.0]),
    ("sigmoid-inf-z0", "sigmoid", [INF], [0.0], {}, {}, [INF]),
    ("sigmoid-neg-inf-z0", "sigmoid", [-INF], [0.0], {}, {}, [0.0]),
    ("sigmoid-neg-inf-z1", "sigmoid", [-INF], [1.0], {}, {}, [INF]),
    ("sigmoid-neg-inf-pos-weight-0", "sigmoid", [-INF], [1.0], {"pos_weight": [0.0]}, {}, [0.0]),
    ("sigmoid-nan", "sigmoid", [NAN], [0.0], {}, {}, [NAN]),
    ("sigmoid-zero", "sigmoid", [0.0, -0.0], [0.3, 1.0], {}, {}, [L2, L2]),
    ("sigmoid-tail", "sigmoid", [100.0, -100.0], [1.0, 0.0], {}, {}, [SOFTPLUS_M100, SOFTPLUS_M100]),
    ("sigmoid-pos-weight", "sigmoid", [0.0], [1.0], {"pos_weight": [3.0]}, {}, [3 * L2]),
    ("sigmoid-weight-zero-times-inf", "sigmoid", [[INF, -INF]], [[0.0, 1.0]], {"weight": [[0.0, 0.0]]}, {},
     [[0.0, 0.0]]),
    ("sigmoid-axis-mean", "sigmoid", [[0.0, INF], [0.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]], {}, {"axis_mean": True},
     [L2 / 2, L2]),
    ("sigmoid-mean-empty", "sigmoid", np.zeros((0, 3)), np.zeros((0, 3)), {"reduction": "mean"}, {}, NAN),
    ("sigmoid-sum-empty", "sigmoid", np.zeros((0, 3)), np.zeros((0, 3)), {"reduction": "sum"}, {}, 0.0),
    ("binary-p0-z0", "binary", [0.0], [0.0], {}, {}, [0.0]),
    ("binary-p0-z1", "binary", [0.0], [1.0], {}, {}, [INF]),
    ("binary-p1-z1", "binary", [1.0], [1.0], {}, {}, [0.0]),
    ("binary-p1-z0", "binary", [1.0], [0.0], {}, {}, [INF]),
    ("binary-half", "binary", [0.5], [0.25], {}, {}, [L2]),
    ("binary-weight-zero-times-inf", "binary", [0.0], [1.0], {"weight": [0.0]}, {}, [0.0]),
    ("categorical-zero-prob-zero-target", "categorical", [[0.0, 1.0]], [[0.0, 1.0]], {}, {}, [0.0]),
    ("categorical-zero-prob-target", "categorical", [[0.0, 1.0]], [[1.0, 0.0]], {}, {}, [INF]),
    ("categorical-zero-weight", "categorical", [[0.0, 1.0]], [[1.0, 0.0]], {"class_weight": [0.0, 1.0]}, {}, [0.0]),
    ("sparse-categorical", "sparse_categorical", [[0.5, 0.25, 0.25]], [1], {}, {}, [2 * L2]),
    ("sparse-categorical-zero-prob", "sparse_categorical", [[0.0, 1.0]], [0], {}, {}, [INF]),
    ("sparse-categorical-out-of-range", "sparse_categorical", [[0.5, 0.5]], [2], {}, {}, [NAN]),
    # torch-style weighted mean: sum of w_k * loss_k over the sum of the targets' class weights
    ("target-weight-mean", "sparse_softmax", [[0.0, 0.0]] * 3, [0, 1, 1],
     {"class_weight": [1.0, 3.0], "reduction": "mean"}, {"mean": "target_weight"}, L2),
    ("elements-mean", "sparse_softmax", [[0.0, 0.0]] * 3, [0, 1, 1],
     {"class_weight": [1.0, 3.0], "reduction": "mean"}, {}, 7 * L2 / 3),
    ("target-weight-mean-all-zero", "sparse_softmax", [[0.0, 0.0]] * 2, [0, 0],
     {"class_weight": [0.0, 3.0], "reduction": "mean"}, {"mean": "target_weight"}, NAN),
    ("target-weight-mean-categorical", "sparse_categorical", [[0.5, 0.5], [0.25, 0.75]], [0, 1],
     {"class_weight": [2.0, 6.0], "reduction": "mean"}, {"mean": "target_weight"},
     (2 * L2 + 6 * -math.log(0.75)) / 8),
    ("sum", "softmax", [[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]], {"reduction": "sum"}, {}, 3 * L2),
]


def _as_arrays(family, x, t, params):
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.int64 if FAMILIES[family].targets == "index" else np.float64)
    p = {k: (np.asarray(v, np.float64) if k in ARRAY_PARAMS else v) for k, v in params.items()}
    return x, t, p


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("cid,family,x,t,params,conv,expected", HAND, ids=[h[0] for h in HAND])
def test_convention_by_hand(impl, cid, family, x, t, params, conv, expected):
    x, t, p = _as_arrays(family, x, t, params)
    got = IMPLS[impl](family, x, t, p, conv)
    # 4 ulps of float64: the hand values come from libm, the oracle and mpref round once or twice
    assert same(got, expected, rel=4 * 2.0**-52), f"{impl} on {cid}: got {got!r}, expected {expected!r}"


def test_sigmoid_small_pos_weight_is_accurate():
    """loss = q*softplus(-x) for z=1: at x=100, q=1e-6 the oracle must be accurate in long double."""
    x, z, q = np.array([100.0, 20.0]), np.array([1.0, 1.0]), np.array([1e-6, 1e-6])
    records = mpref.compare_case(Case("unit/sigmoid/small-q", "sigmoid", x, z, {"pos_weight": q}), "float64")
    problems = mpref.oracle_problems(records, "float64", ERROR_BOUND_ULP["float64"])
    assert not problems, problems


@pytest.mark.parametrize("family,t,params", [
    ("softmax", [[0.0, 0.0, 0.0]], {}),
    ("sparse_softmax", [1], {"class_weight": [1.0, 0.0, 1.0]}),
])
def test_nan_row_with_zero_coefficients_is_nan(family, t, params):
    x, t, p = _as_arrays(family, [[NAN, 0.0, 0.0]], t, params)
    assert np.isnan(oracle.loss(family, x, t, p)).all()
    assert all(mpmath.isnan(v) for v in np.ravel(mpref.loss(family, x, t, p)))


@pytest.mark.parametrize("family,x,z,params", [
    ("sigmoid", [NAN, 1.0], [0.0, 1.0], {"weight": [0.0, 0.0]}),   # nan logit, zero weight
    ("sigmoid", [2.0, 1.0], [NAN, 1.0], {"weight": [0.0, 1.0]}),   # nan target, zero weight
    ("binary", [NAN, 0.5], [1.0, 1.0], {"weight": [0.0, 1.0]}),
])
def test_nan_propagates_through_zero_weights(family, x, z, params):
    """nan in, nan out, for the element that depends on it; zero weights annihilate only inf."""
    x, z = np.array([x]), np.array([z])
    p = {k: np.array([v]) for k, v in params.items()}
    for got in (oracle.loss(family, x, z, p), mpref.to_float(mpref.loss(family, x, z, p), "float64")):
        got = np.asarray(got, np.float64)
        assert np.isnan(got[0, 0]) and not np.isnan(got[0, 1]), got


# --- correct rounding ------------------------------------------------------------------------------
def _bits_neighbours(v: float, dtype: str) -> tuple[float, float]:
    """The two dtype values adjacent to a positive normal dtype value v."""
    from harness.dtypes import UINT

    a = np.asarray(v, np.float64).astype(np_dtype(dtype))
    b = a.view(UINT[dtype])
    up = (b + np.asarray(1, UINT[dtype])).view(np_dtype(dtype))
    down = (b - np.asarray(1, UINT[dtype])).view(np_dtype(dtype))
    return float(down), float(up)


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_float_hand_values(dtype):
    fi = finfo(dtype)
    p = int(fi.nmant) + 1
    mx, sub = float(fi.max), float(fi.smallest_subnormal)
    with mp.workprec(4000):
        one = mp.mpf(1)
        half_ulp_1 = mp.ldexp(one, -p)  # half the spacing above 1
        cases = [
            (one + half_ulp_1, 1.0),  # tie -> even (1.0)
            (one + half_ulp_1 + mp.ldexp(one, -3000), 1.0 + 2.0**(1 - p)),  # just above the tie
            (one + 3 * half_ulp_1, 1.0 + 2 * 2.0**(1 - p)),  # tie between odd and even -> even
            (one - mp.ldexp(one, -p - 1), 1.0),  # within half a (smaller) ulp below 1
            (mp.mpf(mx), mx),
            # just below the overflow tie (max + half its ulp), and the tie itself
            (mp.mpf(mx) + mp.ldexp(one, int(fi.maxexp) - p - 1) - mp.ldexp(one, int(fi.maxexp) - 3000), mx),
            (mp.mpf(mx) + mp.ldexp(one, int(fi.maxexp) - p - 1), INF),
            (-(mp.mpf(mx) * 2), -INF),
            (mp.mpf(sub) / 2, 0.0),  # tie with zero -> even (0)
            (mp.mpf(sub) / 2 + mp.ldexp(one, -3000), sub),
            (mp.mpf(sub) * 1.5, 2 * sub),  # tie between sub and 2*sub -> even (2*sub)
            (mp.ldexp(one, -100000), 0.0),
            (mp.ldexp(one, 100000), INF),
            (mp.mpf(0), 0.0),
            (mp.mpf("nan"), NAN),
            (mp.mpf("-inf"), -INF),
        ]
    vals = np.empty(len(cases), dtype=object)
    vals[:] = [c[0] for c in cases]
    got = mpref.to_float(vals, dtype)
    assert got.dtype == np_dtype(dtype)
    want = np.array([c[1] for c in cases])
    assert same(got.astype(np.float64), want), list(zip(got.astype(np.float64), want))


def _near_midpoints(dtype: str, n: int, seed: int) -> np.ndarray:
    """float64 values just at, below and above midpoints of `dtype` values (where double rounding bites)."""
    rng = np.random.default_rng(seed)
    fi = finfo(dtype)
    base = to_dtype(rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-3, 3, n) * min(float(fi.max) / 1e3, 1e30), dtype)
    base = base.astype(np.float64)
    base = base[np.isfinite(base) & (base != 0)]
    out = []
    for v in base:
        lo, hi = _bits_neighbours(abs(v), dtype)
        mid = (abs(v) + hi) / 2
        for m in (mid, np.nextafter(mid, 0), np.nextafter(mid, np.inf), (abs(v) + lo) / 2):
            out.append(math.copysign(m, v))
    return np.array(out)


@pytest.mark.parametrize("dtype", [
    "float16", "float32", "float64",
    "bfloat16",
])
def test_to_dtype_rounds_float64_correctly(dtype):
    """The harness's rounding of float64 references (dtypes.to_dtype) is correct rounding."""
    x = np.concatenate([_near_midpoints(dtype, 300, 1), np.random.default_rng(2).normal(0, 100, 300)])
    exact = mpref.from_float(x)
    want = mpref.to_float(exact, dtype).astype(np.float64)
    got = to_dtype(x, dtype).astype(np.float64)
    bad = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))))
    assert bad.size == 0, [(float(x[i]).hex(), got[i], want[i]) for i in bad[:5]]


def test_to_float_matches_numpy_for_longdouble_to_float64():
    """from_float is exact for long double, and to_float(float64) matches numpy's single rounding."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 500).astype(np.longdouble) / np.longdouble(3)
    want = x.astype(np.float64)
    got = mpref.to_float(mpref.from_float(x), "float64")
    assert np.array_equal(got, want)


# --- mpref against itself: the result does not depend on the working precision ---------------------
SMALL_EXTREME = [c for c in CORPUS if c.category in ("extreme", "weights") and c.inputs.size <= 200]


@pytest.mark.parametrize("case", SMALL_EXTREME, ids=lambda c: c.id)
def test_mpref_is_precision_independent(case):
    """128-bit and 320-bit evaluations agree to ~2**-120 relative (or are the same special
    value): the adaptive precision covers every cancellation, in every dtype's rounding."""
    for d in case.dtypes or DTYPES:
        x, t, p = case.in_dtype(d)
        for conv in mpref.conventions_for(case.family):
            a = mpref.loss(case.family, x, t, p, conv, prec=128)
            b = mpref.loss(case.family, x, t, p, conv, prec=320)
            for i in np.ndindex(a.shape):
                u, v = a[i], b[i]
                if not mp.isfinite(v) or v == 0:
                    assert (u == v) or (mp.isnan(u) and mp.isnan(v)), (d, conv, i, u, v)
                else:
                    assert abs(u - v) <= abs(v) * mp.mpf(2) ** -120, (d, conv, i, u, v)


def test_weighted_mean_with_zero_total_weight_is_undefined():
    """A weighted mean whose target weights sum to zero is undefined (nan) even when the weighted
    sum is positive (label smoothing puts mass on a weighted class): found by the property tests."""
    x, k = np.zeros((1, 4)), np.array([0])
    p = {"class_weight": np.array([0.0, 0.0, 1e6, 0.0]), "label_smoothing": 0.6, "reduction": "mean"}
    conv = {"mean": "target_weight"}
    assert oracle.loss("sparse_softmax", x, k, {**p, "reduction": "sum"}, conv) > 0
    assert np.isnan(oracle.loss("sparse_softmax", x, k, p, conv))
    assert mpmath.isnan(mpref.loss("sparse_softmax", x, k, p, conv).ravel()[0])
