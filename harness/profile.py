"""ULP-error profiles: the largest error in each band of input values, for the plots of the
published report (harness.website).

A profile bins the elements of an exhaustive case by their input value x, in equal steps of the
dtype's ordered bit-pattern key (harness.ulp.ordered_key), so each band spans the same number of
representable values: the bands are about logarithmic in |x| and symmetric about 0, which is how
the format places its values. Each band keeps the largest ULP error over its elements where
result and reference are finite and the reference certain (compare.Grade.ulps_certain).

Serialised as JSON in the results column `ulp_profile`: {"dtype", "x_lo", "x_hi", "max_ulp"},
lists of equal length, max_ulp null where a band holds no graded element.
"""
from __future__ import annotations

import json

import numpy as np

from harness.dtypes import np_dtype, to_dtype
from harness.ulp import ordered_key

#: bands per profile
BINS = 96


def _from_key(k: np.ndarray, dtype: str) -> np.ndarray:
    """The value of `dtype` whose ordered key is k (the inverse of ordered_key on finite values)."""
    from harness.dtypes import UINT

    nbits = 8 * np.dtype(np_dtype(dtype)).itemsize
    k = np.asarray(k, np.int64)
    bits = np.where(k < 0, (1 << (nbits - 1)) | (-k), k).astype(np.uint64).astype(UINT[dtype])
    return bits.view(np_dtype(dtype)).astype(np.float64)


def build(x: np.ndarray, ulps_certain: np.ndarray, dtype: str, bins: int = BINS) -> str:
    """The profile of one exhaustive row as JSON ('' when x and the errors do not pair up)."""
    x = np.asarray(x).ravel()
    u = np.asarray(ulps_certain, np.float64).ravel()
    if x.size != u.size or x.size == 0:
        return ""
    xs = to_dtype(np.asarray(x, np.float64), dtype)
    fin = np.isfinite(xs)
    if not fin.any():
        return ""
    k = ordered_key(xs[fin], dtype)
    u = u[fin]
    lo, hi = int(k.min()), int(k.max())
    edges = np.linspace(lo, hi + 1, bins + 1).round().astype(np.int64)
    edges = np.unique(edges)
    band = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, len(edges) - 2)
    best = np.full(len(edges) - 1, -1.0)
    graded = ~np.isnan(u)
    np.maximum.at(best, band[graded], u[graded])
    return json.dumps({
        "dtype": dtype,
        "x_lo": [float(v) for v in _from_key(edges[:-1], dtype)],
        "x_hi": [float(v) for v in _from_key(edges[1:] - 1, dtype)],
        "max_ulp": [None if b < 0 else float(b) for b in best],
    }, allow_nan=False)


def parse(text) -> dict | None:
    """A profile from the results column, or None where there is none."""
    if not isinstance(text, str) or not text:
        return None
    p = json.loads(text)
    if not all(len(p[k]) == len(p["max_ulp"]) for k in ("x_lo", "x_hi")):
        raise ValueError("ulp_profile: lists of unequal length")
    return p
