"""Tested dtypes as numpy types, rounding to them, and the number syntax of case files.

bfloat16 comes from ml_dtypes (the same type JAX uses). Rounding is round-to-nearest-even.
numpy's casts from float64 round correctly for float16 and float32; ml_dtypes converts
float64 to bfloat16 by way of float32 (two roundings), so `to_dtype` first rounds to float32
with round-to-odd, which makes the second rounding the correct one (Boldo & Melquiond,
"Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd",
IEEE Trans. Computers 57(4), 2008; 24 bits >= 8 + 2).
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


def _to_float32_odd(a: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded to odd: truncate toward zero, and set the last bit if inexact."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = a.astype(np.float32)
        finite = np.isfinite(r)
        inexact = finite & (r.astype(np.float64) != a)
        bits = r.view(np.uint32).copy()
        away = inexact & (np.abs(r.astype(np.float64)) > np.abs(a))  # rounded away from zero: step back
        bits = np.where(away, bits - np.uint32(1), bits)
        bits = np.where(inexact, bits | np.uint32(1), bits)
        # a finite float64 beyond float32's range: the largest float32 (odd) keeps it "just above"
        big = ~finite & np.isfinite(a)
        bits = np.where(big, np.float32(np.finfo(np.float32).max).view(np.uint32) | (bits & np.uint32(0x80000000)), bits)
    return bits.astype(np.uint32).view(np.float32)


def to_dtype(a, name: str) -> np.ndarray:
    """Round float64 values to dtype `name` (correctly, nearest-even). Integers pass through."""
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return a
    if name != "float64" and a.dtype == np_dtype(name):  # a large generated case's float32 values: no copy
        return a
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore"):  # values beyond the dtype's range round to +-inf, as intended
        if name == "bfloat16":
            return _to_float32_odd(a).astype(np_dtype(name))
        return a.astype(np_dtype(name))


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
    if isinstance(v, float) and math.isinf(v):  # JSON has no infinity: a literal like 1e400 overflowed
        raise ValueError('a number beyond float64\'s range (JSON has no infinity); write "inf" or "-inf"')
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            raise ValueError(f"the integer of {len(str(abs(v)))} digits is beyond float64's range; "
                             'write "inf" for infinity') from None
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _SPECIAL:
            return _SPECIAL[s]
        if "0x" in s:
            try:
                return float.fromhex(s)
            except ValueError:
                pass
            except OverflowError:
                raise ValueError(f"hex float {v!r} is beyond float64's range") from None
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
