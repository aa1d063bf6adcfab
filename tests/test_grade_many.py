"""compare.grade_many grades many pairs at once: every field of every Grade must be what
compare.grade gives for that pair alone, on the pairs the runner meets (finite rows of each
dtype, ties for the worst element, zeros in the reference, wider results) and on those it hands
back to grade (shape mismatches, empty results), and with non-finite values (matched, or not)
and reference error bounds."""
from __future__ import annotations

import numpy as np
import pytest

from harness.compare import Grade, grade, grade_many
from harness.dtypes import finfo, to_dtype

DTYPES = ("float16", "bfloat16", "float32", "float64")


def same(a: Grade, b: Grade) -> bool:
    for f in Grade.__dataclass_fields__:
        x, y = getattr(a, f), getattr(b, f)
        if f == "ulps_certain":
            if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y, equal_nan=True)):
                return False
        elif isinstance(x, float) and isinstance(y, float):
            if not (x == y or (np.isnan(x) and np.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def pair(rng: np.random.Generator, dtype: str, kind: str):
    """(actual, reference, dtype, tol_ulp, ref_err) of one kind."""
    shape = [(), (int(rng.integers(1, 9)),), (int(rng.integers(1, 6)), int(rng.integers(1, 6)))][rng.integers(3)]
    ref = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4)
    if dtype == "float64":
        ref = ref.astype(np.longdouble) * (1 + np.longdouble(2) ** -60)  # a long double reference
    off = rng.integers(-3, 4, np.shape(ref)) * (rng.random(np.shape(ref)) < 0.5)  # a few ulps off, or none
    act = to_dtype(np.asarray(ref, np.float64) * (1 + off * float(finfo(dtype).eps)), dtype)
    tol = float(rng.choice([0.5, 1.0, 2.5, 4.0]))
    err = None
    if kind == "tie" and act.size > 1:  # the same worst distance twice: the first is the worst
        flat = act.reshape(-1).astype(np.float64)
        r = np.asarray(ref, np.float64).reshape(-1)
        flat[:] = to_dtype(r, dtype).astype(np.float64)
        for k in (0, flat.size - 1):
            flat[k] = float(to_dtype(np.array([r[k] * (1 + 2.0 ** -5)]), dtype)[0]) if r[k] else 1e-3
        act = to_dtype(flat.reshape(act.shape), dtype)
    elif kind == "zero" and np.size(ref):
        ref = np.where(rng.random(np.shape(ref)) < 0.5, 0, ref).astype(np.asarray(ref).dtype)
    elif kind == "wider":  # a float32 result for narrower inputs
        act = np.asarray(act, np.float32) * np.float32(1 + 1e-5)
    elif kind == "nonfinite" and np.size(act):
        act = np.asarray(act, np.float64).copy()
        act.reshape(-1)[rng.integers(act.size)] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == "overflow" and np.size(ref):
        ref = np.asarray(ref, np.float64) * 1e300
    elif kind == "shape":
        act = np.zeros((7, 3))
    elif kind == "empty":
        act, ref = np.zeros((0, 4)), np.zeros((0, 4))
    elif kind == "ref_err":  # bounds from negligible to many ulps, some infinite or nan, per element
        scale = rng.choice([0.0, 1e-12, 1e-6, 1e-3, 1.0, np.inf, np.nan], np.shape(ref))
        err = np.abs(np.asarray(ref, np.float64)) * scale
        if rng.random() < 0.2:
            err = np.float64(1e-3)  # one bound for every element
    elif kind == "identical":
        act = to_dtype(np.asarray(ref, np.float64), dtype)
    elif kind in ("matched", "matched_err") and np.size(act):  # the same nan or inf on both sides here and there
        act, ref = np.asarray(act, np.float64).copy(), np.array(ref)
        at = rng.random(np.shape(ref)) < 0.4
        v = rng.choice([np.nan, np.inf, -np.inf], np.shape(ref))
        act[at], ref[at] = v[at], v[at]
        if rng.random() < 0.5:  # and a mismatch
            act.reshape(-1)[rng.integers(act.size)] = rng.choice([np.nan, np.inf])
        if kind == "matched_err":
            with np.errstate(invalid="ignore"):  # inf * inf-or-0: inf or nan bounds too
                err = np.abs(np.asarray(ref, np.float64)) * rng.choice([0.0, 1e-6, 1.0, np.inf], np.shape(ref))
    elif kind == "allmismatch" and np.size(act):
        act = np.full(np.shape(act), np.nan)
    return np.asarray(act), np.asarray(ref), dtype, tol, err


KINDS = ("plain", "plain", "plain", "tie", "zero", "wider", "nonfinite", "overflow", "shape", "empty",
         "ref_err", "identical", "matched", "matched_err", "allmismatch")


@pytest.mark.parametrize("seed", range(6))
def test_grade_many_is_grade_of_each(seed):
    rng = np.random.default_rng(seed)
    items = [pair(rng, str(rng.choice(DTYPES)), str(rng.choice(KINDS))) for _ in range(300)]
    many = grade_many(items)
    assert len(many) == len(items)
    for it, g in zip(items, many):
        assert same(g, grade(*it)), it
    # the comparison covers what matters: matches, discrepancies, uncertain references
    statuses = {g.status for g in many}
    assert {"match", "discrepancy", "nonfinite_mismatch"} <= statuses
    assert any(g.detail for g in many) and any(np.isnan(g.max_ulp_finite) for g in many if g.status != "nonfinite_mismatch")


def test_a_tie_keeps_the_first_worst_element():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    act = to_dtype(ref, "float32").astype(np.float64)
    act[[1, 3]] = np.nextafter(np.float32(act[[1, 3]]), np.float32(np.inf))  # 1 ulp off, twice
    g = grade_many([(act, ref, "float32", 0.5, None), (act[::-1].copy(), ref[::-1].copy(), "float32", 0.5, None)])
    assert [x.worst_index for x in g] == [(1,), (0,)] and all(x.status == "discrepancy" for x in g)
    assert g[0].max_ulp == 1.0 and g[0].excess == 0.5
