"""harness.ulp (distances and spacing), harness.compare.grade and harness.tolerance."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.compare import grade
from harness.dtypes import UINT, finfo, np_dtype, to_dtype
from harness.spec import DTYPES, FAMILIES
from harness.tolerance import BASE_ULP, table, terms_per_output, tolerance_ulp
from harness.ulp import ordered_key, ulp, ulp_distance, value_class

INF, NAN = math.inf, math.nan


def step(v: float, dtype: str, k: int = 1) -> float:
    """The dtype value k representable values above v (v must be a dtype value), as float64."""
    a = to_dtype(np.asarray([v]), dtype)
    key = int(ordered_key(a, dtype)[0]) + k
    bits = abs(key) | ((1 << (8 * a.dtype.itemsize - 1)) if key < 0 else 0)
    return float(np.asarray([bits], dtype=UINT[dtype]).view(np_dtype(dtype)).astype(np.float64)[0])


def dtype_points(dtype: str) -> list[float]:
    fi = finfo(dtype)
    sub, tiny, mx, eps = (float(fi.smallest_subnormal), float(fi.tiny), float(fi.max), float(fi.eps))
    return [0.0, sub, 2 * sub, tiny - sub, tiny, 1.0 - eps / 2, 1.0, 1.0 + eps, 3.0, 1000.0, mx / 2,
            -sub, -tiny, -1.0, -1000.0, -mx / 2]


# --- ulp_distance ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_adjacent_values_are_one_apart(dtype):
    pts = [float(to_dtype(np.asarray(v), dtype)) for v in dtype_points(dtype)]
    nxt = [step(v, dtype) for v in pts]
    assert all(b > a for a, b in zip(pts, nxt))  # step moves up, through subnormals and zero
    d = ulp_distance(np.array(nxt), np.array(pts), dtype)
    assert d.tolist() == [1.0] * len(pts)
    # and k steps are k apart
    assert ulp_distance(np.array([step(1.0, dtype, 7)]), np.array([1.0]), dtype).tolist() == [7.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_across_zero(dtype):
    sub = float(finfo(dtype).smallest_subnormal)
    assert float(ulp_distance(sub, -sub, dtype)) == 2.0
    assert float(ulp_distance(-sub, sub, dtype)) == 2.0
    assert float(ulp_distance(0.0, -0.0, dtype)) == 0.0
    assert float(ulp_distance(-0.0, sub, dtype)) == 1.0
    assert float(ulp_distance(0.0, -sub, dtype)) == 1.0
    assert float(ulp_distance(-sub, -0.0, dtype)) == 1.0
    assert float(ulp_distance(-1.0, 1.0, dtype)) == 2 * float(ulp_distance(0.0, 1.0, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_classes(dtype):
    mx = float(finfo(dtype).max)
    a = np.array([NAN, INF, -INF, INF, NAN, INF, -INF, NAN, 1.0, INF, mx])
    b = np.array([NAN, INF, -INF, mx, 1.0, -INF, -mx, INF, NAN, NAN, mx])
    assert ulp_distance(a, b, dtype).tolist() == [0, 0, 0, INF, INF, INF, INF, INF, INF, INF, 0]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_values_beyond_the_range_round_to_inf_first(dtype):
    """Both arguments are float64 values rounded to the dtype: beyond max is inf."""
    fi = finfo(dtype)
    assert float(ulp_distance(float(fi.max) * 4, INF, dtype)) == 0.0
    assert float(ulp_distance(float(fi.max) * 4, float(fi.max), dtype)) == INF


def test_float64_extremes_do_not_overflow():
    mx = np.finfo(np.float64).max
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = float(ulp_distance(mx, -mx, "float64"))
        d_arr = ulp_distance(np.array([mx, -mx]), np.array([-mx, mx]), "float64")
    key_max = 0x7FEFFFFFFFFFFFFF
    assert math.isfinite(d) and d == float(2 * key_max)
    assert d_arr.tolist() == [float(2 * key_max)] * 2
    assert float(ulp_distance(mx, 0.0, "float64")) == float(key_max)


def test_shape_and_broadcast():
    a = np.ones((2, 3))
    d = ulp_distance(a, np.float64(1.0), "float32")
    assert d.shape == (2, 3) and not d.any()


def test_value_class():
    assert value_class(np.array([0.0, NAN, INF, -INF, -0.0, 5e-324])).tolist() == [0, 1, 2, 3, 0, 0]


def test_bfloat16_is_8_significant_bits():
    # 1 + 2**-7 is the next bfloat16 after 1; 1 + 2**-8 rounds to even (1)
    assert float(ulp_distance(1.0 + 2.0**-7, 1.0, "bfloat16")) == 1.0
    assert float(ulp_distance(1.0 + 2.0**-8, 1.0, "bfloat16")) == 0.0
    assert float(ulp_distance(2.0, 1.0, "bfloat16")) == 128.0


# --- ulp() -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_ulp_spacing(dtype):
    fi = finfo(dtype)
    eps, sub, tiny = float(fi.eps), float(fi.smallest_subnormal), float(fi.tiny)
    assert float(ulp(1.0, dtype)) == eps
    assert float(ulp(-1.0, dtype)) == eps
    assert float(ulp(1.5, dtype)) == eps
    assert float(ulp(2.0, dtype)) == 2 * eps
    assert float(ulp(1024.0, dtype)) == 1024 * eps
    assert float(ulp(0.0, dtype)) == sub
    assert float(ulp(-0.0, dtype)) == sub
    assert float(ulp(sub, dtype)) == sub
    assert float(ulp(tiny, dtype)) == sub  # the subnormal spacing continues into the first binade
    assert ulp(np.array([1.0, 2.0]), dtype).tolist() == [eps, 2 * eps]
    # the gap to the next value away from zero: after max comes inf (as numpy.spacing says)
    assert float(ulp(float(fi.max), dtype)) == INF


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ulp_matches_numpy_spacing(dtype):
    rng = np.random.default_rng(0)
    x = to_dtype(rng.normal(0, 1, 200) * 10.0 ** rng.integers(-4, 4, 200), dtype)
    with np.errstate(over="ignore"):
        want = np.abs(np.spacing(np.abs(x))).astype(np.float64)
    assert np.array_equal(ulp(x.astype(np.float64), dtype), want)


# --- Hypothesis: float32 --------------------------------------------------------------------------
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(finite32)
def test_next_float32_is_one_ulp_away(a):
    a32 = np.float32(a)
    b32 = np.nextafter(a32, np.float32(np.inf))
    if not np.isfinite(b32):
        return  # max: the next value is inf, a different class
    assert float(ulp_distance(float(b32), float(a32), "float32")) == 1.0
    assert float(ulp_distance(float(a32), float(b32), "float32")) == 1.0


@given(finite32, finite32)
def test_distance_is_symmetric(a, b):
    assert float(ulp_distance(a, b, "float32")) == float(ulp_distance(b, a, "float32"))
    assert float(ulp_distance(a, a, "float32")) == 0.0


@given(finite32, finite32, finite32)
def test_distance_adds_along_the_line(a, b, c):
    lo, mid, hi = sorted([a, b, c])
    d = lambda x, y: float(ulp_distance(x, y, "float32"))  # noqa: E731
    assert d(lo, hi) == d(lo, mid) + d(mid, hi)


# --- compare.grade -----------------------------------------------------------------------------------
def test_grade_match_and_zero_error():
    ref = np.array([1.0, 2.5, 1e-3], dtype=np.float64)
    out = ref.astype(np.float32)
    g = grade(out, ref, "float32", tolerance_ulp("float32", 1))
    assert (g.status, g.max_ulp, g.detail) == ("match", 0.0, "")


def test_grade_within_and_beyond_tolerance():
    ref = np.array([1.0, 1.0, 1.0])
    three_off = np.array([1.0, step(1.0, "float32", 3), 1.0], dtype=np.float32)
    g = grade(three_off, ref, "float32", 4.0)
    assert (g.status, g.max_ulp, g.worst_index) == ("match", 3.0, (1,))
    ten_off = np.array([[1.0, 1.0], [step(1.0, "float32", -10), 1.0]], dtype=np.float32)
    g = grade(ten_off, ref[:2].reshape(1, 2).repeat(2, 0), "float32", 4.0)
    assert (g.status, g.max_ulp, g.worst_index) == ("discrepancy", 10.0, (1, 0))
    assert g.expected == 1.0 and g.actual == step(1.0, "float32", -10)
    assert g.max_abs_err == pytest.approx(1.0 - g.actual) and g.max_rel_err == pytest.approx(1.0 - g.actual)


def test_grade_nonfinite_mismatch():
    ref = np.array([1.0, INF, NAN])
    g = grade(np.array([1.0, 5.0, NAN], np.float32), ref, "float32", 4.0)
    assert g.status == "nonfinite_mismatch" and g.worst_index == (1,) and g.max_ulp == INF
    g = grade(np.array([NAN, INF, NAN], np.float32), ref, "float32", 4.0)
    assert g.status == "nonfinite_mismatch" and g.worst_index == (0,)
    # matching non-finite classes are a match
    g = grade(np.array([1.0, INF, NAN], np.float32), ref, "float32", 4.0)
    assert g.status == "match" and g.max_ulp == 0.0


def test_grade_reference_overflowing_the_dtype_counts_as_inf():
    ref = np.array([1e300, 7e4])
    assert grade(np.array([INF, INF], np.float16), ref, "float16", 4.0).status == "match"
    assert grade(np.array([INF, 65504.0], np.float16), ref, "float16", 4.0).status == "nonfinite_mismatch"


def test_grade_shape_mismatch_is_a_discrepancy():
    g = grade(np.zeros(3), np.zeros((3, 1)), "float64", 4.0)
    assert g.status == "discrepancy" and "shape" in g.detail and g.max_ulp == INF
    g = grade(np.zeros(()), np.zeros(1), "float64", 4.0)
    assert g.status == "discrepancy"


def test_grade_empty_and_scalar():
    assert grade(np.zeros((0, 3)), np.zeros((0, 3)), "float32", 4.0).status == "match"
    g = grade(np.float64(2.0), np.array(2.0), "float64", 4.0)
    assert g.status == "match" and g.worst_index == ()


@pytest.mark.parametrize("dtype", DTYPES)
def test_grade_figures_of_finite_elements_ignore_matching_non_finite_ones(dtype):
    """grade takes a shorter path when every value is finite on both sides: appending elements
    whose classes match (nan with nan, inf with inf) changes none of the finite figures."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        ref = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4, size=n)
        noise = 1 + rng.normal(size=n) * float(finfo(dtype).eps) * rng.integers(0, 40)
        out = to_dtype(ref * noise, dtype)
        plain = grade(out, ref, dtype, 4.0)
        mixed = grade(np.concatenate([out, to_dtype(np.array([NAN, INF, -INF]), dtype)]),
                      np.concatenate([ref, [NAN, INF, -INF]]), dtype, 4.0)
        for f in ("status", "max_ulp", "max_abs_err", "max_rel_err", "worst_index", "expected", "actual",
                  "max_ulp_finite", "worst_finite_index", "excess"):
            assert getattr(mixed, f) == getattr(plain, f), (f, out, ref)
        assert np.array_equal(mixed.ulps_certain[:n], plain.ulps_certain) and np.isnan(mixed.ulps_certain[n:]).all()
        assert plain.max_ulp == float(np.max(ulp_distance(out, ref, dtype)))


def test_grade_long_double_reference_is_rounded_once():
    ref = np.longdouble(1) + np.longdouble(2.0) ** -60  # rounds to 1.0 in float64
    g = grade(np.array([1.0]), np.array([ref]), "float64", 0.0)
    assert g.status == "match" and g.max_ulp == 0.0
    assert 0 < g.max_abs_err < 2.0**-59


# --- tolerance ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_tolerance_values(dtype):
    b = BASE_ULP[dtype]
    assert b == 4
    assert [tolerance_ulp(dtype, n) for n in (0, 1, 2, 3, 4, 5, 1024, 1025, 32768, 65536)] == \
        [b, b, b + 1, b + 2, b + 2, b + 3, b + 10, b + 11, b + 15, b + 16]


def test_terms_per_output():
    # row-wise: the class axis flows into each output; a reduction adds every row
    assert terms_per_output(True, (8, 10), "none", False) == 10
    assert terms_per_output(True, (8, 10), "mean", False) == 80
    assert terms_per_output(True, (8, 10), "sum", False) == 80
    assert terms_per_output(True, (2, 3, 10), "sum", False) == 60
    assert terms_per_output(True, (0, 5), "mean", False) == 5
    assert terms_per_output(True, (0, 5), "none", False) == 5
    # elementwise: one term per output, all of them under a reduction
    assert terms_per_output(False, (8, 6), "none", False) == 1
    assert terms_per_output(False, (8, 6), "mean", False) == 48
    assert terms_per_output(False, (0, 3), "mean", False) == 1
    # axis_mean (Keras): the last axis is averaged first
    assert terms_per_output(False, (8, 6), "none", True) == 6
    assert terms_per_output(False, (8, 6), "sum", True) == 48
    assert terms_per_output(False, (), "none", False) == 1


def test_tolerance_table_lists_every_dtype():
    assert [d for d, _ in table()] == list(DTYPES)
    assert all("ceil(log2 n)" in rule for _, rule in table())


def test_families_rowwise_flags_used_by_terms_per_output():
    assert {f for f, fam in FAMILIES.items() if fam.rowwise} == {
        "softmax", "sparse_softmax", "categorical", "sparse_categorical", "softmax_focal", "categorical_focal",
        "sampled_softmax", "nce"}


def test_grade_compares_classes_in_the_tested_dtype():
    """A float32 result for float16 inputs is graded as float16: 131008 overflows to inf there,
    like the reference, so the classes agree (finite vs inf would be a false mismatch)."""
    from harness.compare import grade

    g = grade(np.array([131008.0], np.float32), np.array([131008.0]), "float16", 4)
    assert g.status == "match"
    g = grade(np.array([1.0], np.float32), np.array([131008.0]), "float16", 4)
    assert g.status == "nonfinite_mismatch"
