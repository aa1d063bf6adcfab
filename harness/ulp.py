"""ULP distance in a tested dtype.

Distance between two values of the same dtype = the number of representable values
between them (|key(a) - key(b)| for the monotone integer key of the bit pattern), so it is
an integer, +0 and -0 are the same point, and subnormals are spaced uniformly as the format
spaces them. Non-finite values are compared by class: equal classes are 0 apart, different
classes (or finite vs non-finite) are infinitely apart.
"""
from __future__ import annotations

import numpy as np

from .dtypes import UINT, np_dtype, to_dtype

_SIGNED = {2: np.int16, 4: np.int32, 8: np.int64}


def ordered_key(a: np.ndarray, dtype: str) -> np.ndarray:
    """Monotone int64 key of each value's bit pattern: key(+0) = key(-0) = 0,
    key(nextafter(x, +inf)) = key(x) + 1 for every finite x."""
    a = np.asarray(a, dtype=np_dtype(dtype))
    bits = a.view(_SIGNED[a.dtype.itemsize])
    sign = bits >> np.array(8 * a.dtype.itemsize - 1, bits.dtype)  # -1 where the sign bit is set, else 0
    mag = bits & np.array(np.iinfo(bits.dtype).max, bits.dtype)
    return ((mag ^ sign) - sign).astype(np.int64)  # -mag where negative (two's complement)


def value_class(a) -> np.ndarray:
    """0 finite, 1 nan, 2 +inf, 3 -inf."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    if finite.all():
        return np.zeros(a.shape, dtype=np.int64)
    return np.where(finite, 0, np.where(np.isnan(a), 1, np.where(a > 0, 2, 3)))


def ulp_distance(actual, expected, dtype: str) -> np.ndarray:
    """Elementwise ULP distance (float64) between two arrays of `dtype` values."""
    a = to_dtype(np.asarray(actual, dtype=np.float64), dtype)
    e = to_dtype(np.asarray(expected, dtype=np.float64), dtype)
    return rounded_distance(a, e, value_class(a), value_class(e), dtype)


def rounded_distance(a: np.ndarray, e: np.ndarray, ca: np.ndarray, ce: np.ndarray, dtype: str) -> np.ndarray:
    """ulp_distance of values already rounded to `dtype`, given their value classes."""
    ka, ke = ordered_key(a, dtype), ordered_key(e, dtype)
    if dtype == "float64":  # keys of opposite signs may be 2**64 apart: their distance in float64
        same_sign = (ka >= 0) == (ke >= 0)
        with np.errstate(over="ignore"):
            d_same = np.abs(np.where(same_sign, ka - ke, 0)).astype(np.float64)
        d_cross = np.abs(ka).astype(np.float64) + np.abs(ke).astype(np.float64)  # may exceed 2**63
        d = np.where(same_sign, d_same, d_cross)
    else:  # keys below 2**31: their difference is exact
        d = np.abs(ka - ke).astype(np.float64)
    if not (ca.any() or ce.any()):  # every value finite
        return d
    return np.where(ca != ce, np.inf, np.where(ca != 0, 0.0, d))


def ulp(x, dtype: str) -> np.ndarray:
    """Spacing of `dtype` at |x| (the gap to the next value away from zero)."""
    v = np.abs(to_dtype(np.asarray(x, dtype=np.float64), dtype))
    bits = v.view(UINT[dtype]) + np.asarray(1, dtype=UINT[dtype])
    nxt = bits.view(np_dtype(dtype))
    return nxt.astype(np.float64) - v.astype(np.float64)
