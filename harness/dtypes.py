"""Tested dtypes as numpy types, rounding to them, and the number syntax of case files.

bfloat16 comes from ml_dtypes (the same type JAX uses). Rounding is round-to-nearest-even,
done by numpy's cast from float64 (ml_dtypes rounds correctly from float64 too).
"""
from __future__ import annotations

import math
from functools import lru_cache

import ml_dtypes
import numpy as np

NP_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
#: unsigned integer type of the same width, for bit-level work.
UINT: dict[str, np.dtype] = {
    "float16": np.dtype(np.uint16),
    "bfloat16": np.dtype(np.uint16),
    "float32": np.dtype(np.uint32),
    "float64": np.dtype(np.uint64),
}


def np_dtype(name: str) -> np.dtype:
    try:
        return NP_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (known: {', '.join(NP_DTYPES)})") from None


@lru_cache(maxsize=None)
def finfo(name: str):
    """finfo for a dtype name (ml_dtypes.finfo understands bfloat16)."""
    return ml_dtypes.finfo(np_dtype(name))


def to_dtype(a, name: str) -> np.ndarray:
    """Round float64 values to dtype `name` (nearest-even). Integers pass through unchanged."""
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return a
    with np.errstate(over="ignore"):  # values beyond the dtype's range round to +-inf, as intended
        return np.asarray(a, dtype=np.float64).astype(np_dtype(name))


def widen(a: np.ndarray, precision=np.float64) -> np.ndarray:
    """Widen dtype-rounded values exactly to the reference precision."""
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return a
    return a.astype(np.float64).astype(precision)


# The reference precision used to grade each dtype. float64 needs >= 64 significant bits.
LONGDOUBLE_BITS = np.finfo(np.longdouble).nmant + 1


def reference_precision(name: str):
    """(numpy type, label) of the reference used to grade results in dtype `name`."""
    if name == "float64":
        if LONGDOUBLE_BITS >= 64:
            return np.longdouble, f"longdouble({LONGDOUBLE_BITS}-bit)"
        raise RuntimeError(
            "this platform's long double has only %d bits; float64 grading needs >= 64" % LONGDOUBLE_BITS
        )
    return np.float64, "float64"


# --- number syntax of case files ----------------------------------------------------
_SPECIAL = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "nan": math.nan, "-0.0": -0.0}


def parse_number(v) -> float:
    """A case-file number: a JSON number, "inf", "-inf", "nan", "-0.0" or a hex float "0x1p-149"."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _SPECIAL:
            return _SPECIAL[s]
        if "0x" in s:
            try:
                return float.fromhex(s)
            except ValueError:
                pass
        raise ValueError(f"expected a number or one of inf, -inf, nan, -0.0, a hex float; got {v!r}")
    raise ValueError(f"expected a number, got {type(v).__name__}")


def format_number(x: float) -> float | str:
    """Inverse of parse_number for JSON output: exact, and JSON-safe for non-finite values."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0 and math.copysign(1.0, x) < 0:
        return "-0.0"
    return x  # repr(float) round-trips exactly
