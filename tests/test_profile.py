"""harness.profile: the bands partition the finite inputs in equal steps of the ordered key, and
each band keeps the largest graded error of its elements (checked against a brute-force loop)."""
import numpy as np
import pytest

from harness import profile
from harness.ulp import ordered_key


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_bands_hold_the_largest_error_of_their_elements(dtype):
    rng = np.random.default_rng(0)
    from harness.dtypes import to_dtype

    x = to_dtype(rng.standard_normal(3000) * 10.0 ** rng.integers(-6, 4, 3000), dtype)
    x = np.concatenate([x, [np.inf, np.nan]])
    u = rng.integers(0, 50, x.size).astype(float)
    u[rng.random(x.size) < 0.2] = np.nan  # ungraded elements
    p = profile.parse(profile.build(x, u, dtype, bins=17))
    assert len(p["x_lo"]) == len(p["x_hi"]) == len(p["max_ulp"]) <= 17
    fin = np.isfinite(x)
    for lo, hi, m in zip(p["x_lo"], p["x_hi"], p["max_ulp"]):
        inside = fin & (x >= lo) & (x <= hi)
        graded = inside & ~np.isnan(u)
        assert m == (float(np.max(u[graded])) if graded.any() else None)
    # every finite input lies in exactly one band, bands in order
    k = ordered_key(x[fin], dtype)
    counts = sum(((x[fin] >= lo) & (x[fin] <= hi)).astype(int) for lo, hi in zip(p["x_lo"], p["x_hi"]))
    assert np.all(counts == 1)
    assert p["x_lo"][0] == float(np.min(x[fin])) and p["x_hi"][-1] == float(np.max(x[fin]))
    assert all(a < b for a, b in zip(p["x_hi"], p["x_lo"][1:]))
    assert k.size == fin.sum()


def test_mismatched_sizes_give_no_profile():
    assert profile.build(np.zeros(3), np.zeros(4), "float16") == ""
    assert profile.parse("") is None
