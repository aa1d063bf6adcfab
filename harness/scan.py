"""Exhaustive scan: one elementwise loss API on every bit pattern of a dtype.

Definitions.

* Domain. For the logit families (sigmoid, sigmoid_focal) every bit pattern of the dtype is
  an input x: finite values, +-0, subnormals, +-inf and every NaN payload. For the probability
  families (binary, binary_focal) the bit patterns whose value p lies in [0, 1], -0.0 included
  (NaN excluded). Each x is evaluated with each target z of `targets` (rounded to the dtype),
  reduction "none", as a column of shape (n, 1) (Keras' binary losses average over the last
  axis; a last axis of size 1 keeps each element its own output).
* Chunks. Chunk k covers the bit patterns [k*2^chunk_bits, (k+1)*2^chunk_bits), clipped to the
  requested range [start, stop); memory is bounded by one chunk. The framework runs in one
  worker process (harness.worker, spawned), one call per (chunk, target) and one call in flight
  while the parent computes the reference and grades the previous one.
* Reference. harness.oracle.loss at reference_precision(dtype) (float64 for float32 and
  below), rounded once to the dtype (as harness.compare.grade does). Certified: where the
  float64 value lies within BOUNDARY_REL (relative) of a rounding boundary of the dtype (a
  midpoint between adjacent values, or the overflow threshold), its own error could flip the
  rounding, so that element is recomputed in np.longdouble and rounded correctly from it
  (round-to-odd to float64, then to the dtype). Elements still within LONGDOUBLE_REL of a
  boundary are counted as `uncertain`.
* ULP distance: that of harness.ulp (the number of dtype values between the rounded reference
  and the output, +0 = -0). A different value class (nan, +inf, -inf, finite) is a nonfinite
  mismatch, not a ULP figure; equal non-finite classes are 0 apart (harness.compare.grade).
* Histogram of the ULP distances d over every (x, z): buckets "0", "1", "2", "3-4", "5-8", ...,
  "2^(k-1)+1-2^k"; plus "nonfinite_mismatch", and "raised" / "crashed" for the inputs of a call
  that raised or whose worker died or timed out. The counts sum to n_inputs.
* max_ulp and the worst input: the largest distance between finite values; ties go to the
  smallest bit pattern, then to the earlier target, so the result does not depend on the
  chunking. expected is the unrounded reference (float64), actual the API's output.
* Resumable: after every chunk the state (chunks done, running aggregates) is written
  atomically to STATE_DIR/<name>.state.json; a call with the same arguments resumes after the
  last completed chunk. When the requested range is done the certificate is written to
  STATE_DIR/<name>.certificate.json (see `paths`).

Nothing here imports a framework.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import sys
import time
from typing import Any, Iterator

import numpy as np

from harness import oracle
from harness.dtypes import UINT, finfo, format_number, np_dtype, parse_number, reference_precision, to_dtype

#: families whose loss is one output per input element
ELEMENTWISE = ("sigmoid", "binary", "sigmoid_focal", "binary_focal")
LOGIT_FAMILIES = ("sigmoid", "sigmoid_focal")
#: dtypes a scan supports (float64 has 2^64 patterns and a long double reference: not scanned)
SCAN_DTYPES = ("float16", "bfloat16", "float32")
#: scalar parameters a scan may carry (pos_weight is passed as an array over the last axis)
SCAN_PARAMS = ("pos_weight", "alpha", "gamma", "label_smoothing")
#: a float64 reference closer than this (relative) to a rounding boundary is recomputed in long
#: double. The float64 reference's measured error is below 2^-51 relative (README).
BOUNDARY_REL = 2.0 ** -40
#: a long double value closer than this (relative) to a boundary is counted as uncertain
#: (the long double reference's measured error is about 2^-61 relative).
LONGDOUBLE_REL = 2.0 ** -56
MAX_CHUNK_BITS = 28
#: certificate fields that describe the run, not the result: equal scans may differ in them
RUN_FIELDS = ("wall_s", "date", "chunk_bits", "timing")
STATE_VERSION = 1


# --- domain ---------------------------------------------------------------------------------
def nbits(dtype: str) -> int:
    """Width of the dtype's bit patterns."""
    return 8 * np_dtype(dtype).itemsize


def domain_intervals(family: str, dtype: str) -> list[tuple[int, int]]:
    """The family's domain as sorted half-open intervals of bit patterns."""
    n = nbits(dtype)
    if family in LOGIT_FAMILIES:
        return [(0, 1 << n)]
    one = int(np.asarray(1.0, dtype=np_dtype(dtype)).view(UINT[dtype]))
    return [(0, one + 1), (1 << (n - 1), (1 << (n - 1)) + 1)]  # +0 .. 1.0, and -0.0


def domain_text(family: str, dtype: str) -> str:
    n = nbits(dtype)
    w = n // 4
    if family in LOGIT_FAMILIES:
        return (f"every bit pattern of {dtype} (2^{n} values: finite, +-0, subnormals, +-inf and every NaN "
                f"payload) as the logit x")
    (lo, hi), (neg0, _) = domain_intervals(family, dtype)
    return (f"every bit pattern of {dtype} whose value p is in [0, 1], -0.0 included, NaN excluded "
            f"(0x{lo:0{w}x}..0x{hi - 1:0{w}x} and 0x{neg0:0{w}x}: {hi - lo + 1} values) as the probability p")


def _overlap(intervals, lo: int, hi: int) -> list[tuple[int, int]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if max(a, lo) < min(b, hi)]


def _count(intervals, lo: int, hi: int) -> int:
    return sum(b - a for a, b in _overlap(intervals, lo, hi))


# --- rounding boundaries -----------------------------------------------------------------
def midpoint_distance(a: np.ndarray, dtype: str) -> np.ndarray:
    """|a - the nearest rounding boundary of `dtype`| / |a|, in a's precision (float64 or long
    double). The boundaries are the midpoints between adjacent finite values of the dtype and
    the overflow threshold max + ulp(max)/2. inf for a = 0 and for non-finite a."""
    a = np.asarray(a)
    mag = np.abs(a)
    ok = np.isfinite(mag) & (mag > 0)
    m = np.where(ok, mag, 1).astype(a.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        v = to_dtype(m.astype(np.float64), dtype)  # the dtype value at (or next to) a
    fi = finfo(dtype)
    u = UINT[dtype]
    inf_bits = np.asarray(np.inf, dtype=np_dtype(dtype)).view(u)
    bits = v.view(u)
    one = np.asarray(1, dtype=u)
    bits = np.where(bits == inf_bits, inf_bits - one, bits).astype(u)  # beyond max: the overflow threshold
    v = bits.view(np_dtype(dtype))
    up = (bits + one).view(np_dtype(dtype)).astype(np.float64)
    up = np.where(np.isinf(up), 2.0 ** int(fi.maxexp), up)  # the value after max, had the format one
    down = np.where(bits == 0, bits, bits - one).view(np_dtype(dtype)).astype(np.float64)
    vf = v.astype(np.float64)
    # midpoints are exact in float64 (the dtypes have at most 24 significant bits)
    mid_hi = (vf + (up - vf) / 2).astype(a.dtype)
    mid_lo = (vf - (vf - down) / 2).astype(a.dtype)
    d = np.minimum(np.abs(m - mid_hi), np.abs(m - mid_lo)) / m
    return np.where(ok, d, np.inf)


def near_rounding_boundary(ref: np.ndarray, dtype: str, rel: float = BOUNDARY_REL) -> np.ndarray:
    """Mask of the reference values (float64) that lie within `rel` (relative) of a rounding
    boundary of `dtype`: an error of that size in the reference could change its rounding.
    Equal to midpoint_distance(ref, dtype) <= rel, computed without it for most values:
    * |ref| in the dtype's normal range: the bits of the float64 significand below the dtype's
      half-quantum are within rel*2^53 of the midpoint pattern 100..0 for every flagged value
      (a cheap integer prefilter); the candidates are checked with midpoint_distance;
    * |ref| below the smallest normal: the boundaries are the odd multiples of h = half the
      smallest subnormal, so the distance is |f - 1|*h with f = (|ref|/h) mod 2 (exact);
    * |ref| >= 2^maxexp, 0, inf and nan: never near a boundary."""
    r = np.asarray(ref, dtype=np.float64)
    flat = np.abs(r.ravel())
    fi = finfo(dtype)
    nmant, minexp, maxexp = int(fi.nmant), int(fi.minexp), int(fi.maxexp)
    out = np.zeros(flat.shape, dtype=bool)
    b = flat.view(np.uint64)
    e = b >> np.uint64(52)  # biased exponent (the sign is cleared)
    s = 52 - nmant  # float64 significand bits below the dtype's quantum (normal range)
    half = 1 << (s - 1)
    w = min(half, int(math.ceil(rel * 2.0 ** 53)) + 1)
    normal = (e >= np.uint64(1023 + minexp)) & (e <= np.uint64(1023 + maxexp - 1))
    low = (b - np.uint64(half - w)) & np.uint64((1 << s) - 1)
    cand = np.flatnonzero(normal & (low <= np.uint64(2 * w)))
    if cand.size:
        out[cand] = midpoint_distance(flat[cand], dtype) <= rel
    sub = np.flatnonzero((e < np.uint64(1023 + minexp)) & (flat > 0))
    if sub.size:
        q = flat[sub] * 2.0 ** -(minexp - nmant - 1)  # in units of h, exact
        f = q - 2 * np.floor(q * 0.5)
        out[sub] = np.abs(f - 1) <= rel * q
    return out.reshape(r.shape)


def round_longdouble(a: np.ndarray, dtype: str) -> np.ndarray:
    """Long double values rounded correctly (nearest-even) to `dtype`: round-to-odd to float64
    (53 >= 24 + 2 bits), then harness.dtypes.to_dtype (correct from float64)."""
    a = np.asarray(a, dtype=np.longdouble)
    with np.errstate(over="ignore", invalid="ignore"):
        r = a.astype(np.float64)
        inexact = np.isfinite(r) & (r.astype(np.longdouble) != a)
        bits = r.view(np.uint64).copy()
        away = inexact & (np.abs(r.astype(np.longdouble)) > np.abs(a))
        bits = np.where(away, bits - np.uint64(1), bits)
        bits = np.where(inexact, bits | np.uint64(1), bits)
    return to_dtype(bits.astype(np.uint64).view(np.float64), dtype)


# --- the reference ---------------------------------------------------------------------------
def sigmoid01_reference(x: np.ndarray, zs) -> list[np.ndarray]:
    """oracle.sigmoid_elementwise(x, z) for z in zs, each 0 or 1, without pos_weight or
    weight, in float64, sharing one tail log1p(exp(-|x|)) between the targets. With the
    oracle's coefficient-zero convention its definition reduces exactly (same operations on the
    same values) to: z = 0: where(x >= 0, x, 0) + tail;  z = 1: where(x >= 0, 0, -x) + tail,
    i.e. loss(x, 1) = loss(-x, 0). tests/test_scan.py checks equality with oracle.loss."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(x, dtype=np.float64).ravel()
        tail = np.abs(x)
        np.negative(tail, out=tail)
        np.exp(tail, out=tail)
        np.log1p(tail, out=tail)
        pos = x >= 0
        out = []
        for z in zs:
            if z == 0:
                r = np.where(pos, x, 0.0)
            else:
                r = np.where(pos, 0.0, x)
                np.negative(r, out=r)
            r += tail
            out.append(r)
    return out


def _fast_path(family: str, params: dict, targets_f: list[float]) -> bool:
    return family == "sigmoid" and not (set(params) - {"reduction"}) and all(z in (0.0, 1.0) for z in targets_f)


def reference(family: str, x: np.ndarray, targets_f: list[float], params: dict, conv: dict,
              dtype: str) -> list[np.ndarray]:
    """The unrounded reference (float64) of each target for the column x (n, 1): one flat array
    per target."""
    prec, _ = reference_precision(dtype)
    if _fast_path(family, params, targets_f):
        return sigmoid01_reference(x, targets_f)
    out = []
    for z in targets_f:
        t = np.full(x.shape, z, dtype=x.dtype)
        out.append(np.asarray(oracle.loss(family, x, t, params, conv, prec), dtype=np.float64).ravel())
    return out


def certify(family: str, x: np.ndarray, z: float, params: dict, conv: dict, dtype: str,
            ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The reference rounded once to `dtype`, certified: (rounded, expected float64,
    recomputed count, uncertain count). Elements near a rounding boundary (near_rounding_boundary)
    are recomputed in long double and rounded from it; those still within LONGDOUBLE_REL of a
    boundary are counted as uncertain."""
    with np.errstate(over="ignore"):
        rounded = to_dtype(ref, dtype)
    near = np.flatnonzero(near_rounding_boundary(ref, dtype))
    if near.size == 0:
        return rounded, ref, 0, 0
    xs = x.reshape(-1, 1)[near]
    ld = np.asarray(oracle.loss(family, xs, np.full(xs.shape, z, dtype=xs.dtype), params, conv, np.longdouble),
                    dtype=np.longdouble).ravel()
    rounded = rounded.copy()
    rounded[near] = round_longdouble(ld, dtype)
    expected = ref.copy()
    expected[near] = ld.astype(np.float64)
    uncertain = int(np.count_nonzero(midpoint_distance(ld, dtype) <= LONGDOUBLE_REL))
    return rounded, expected, int(near.size), uncertain


# --- comparison --------------------------------------------------------------------------------
_INT = {2: np.int16, 4: np.int32}


def _keys(a: np.ndarray, dtype: str) -> np.ndarray:
    """harness.ulp.ordered_key for arrays already in `dtype`, in the signed integer type of the
    dtype's width: s ^ (sign ? 0x7f..f : 0) - (sign ? -1 : 0) is the magnitude, negated for
    negative values (so -0 and +0 are both 0)."""
    s = a.view(_INT[np_dtype(dtype).itemsize])
    neg = s >> (nbits(dtype) - 1)  # -1 where the sign bit is set, else 0
    k = neg & np.asarray((1 << (nbits(dtype) - 1)) - 1, dtype=s.dtype)
    k ^= s
    k -= neg
    return k


def bucket_label(b: int) -> str:
    """Label of histogram bucket b: 0 -> "0", 1 -> "1", 2 -> "2", b >= 3 -> "2^(b-2)+1-2^(b-1)"."""
    return str(b) if b < 3 else f"{(1 << (b - 2)) + 1}-{1 << (b - 1)}"


def buckets(d: np.ndarray) -> np.ndarray:
    """Bucket index of each ULP distance d >= 0 (int64): 0 for 0, else bit_length(d - 1) + 1."""
    out = np.zeros(d.shape, dtype=np.int64)
    nz = d > 0
    out[nz] = np.frexp((d[nz] - 1).astype(np.float64))[1] + 1
    return out


def compare(actual: np.ndarray, rounded: np.ndarray, dtype: str) -> dict:
    """Per-element grading of `actual` against the reference `rounded` (both in `dtype`), with
    harness.compare.grade's semantics: {"hist": bucket counts of the ULP distances (equal
    non-finite classes are 0 apart), "max": the largest distance between finite values (-1 when
    none), "argmax": its first index, "mismatch": indices of the nonfinite mismatches (a value
    class differs: counted there, not in "hist")}."""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        return _compare(actual, rounded, dtype)


def _compare(actual: np.ndarray, rounded: np.ndarray, dtype: str) -> dict:
    fa, fr = np.isfinite(actual), np.isfinite(rounded)
    both = fa & fr
    d = _keys(actual, dtype).astype(np.int64)
    d -= _keys(rounded, dtype)
    np.abs(d, out=d)
    d[~both] = -1
    i = int(np.argmax(d)) if both.any() else -1
    dmax = int(d[i]) if i >= 0 else -1
    bad = np.flatnonzero(~both)
    if bad.size:
        a, r = actual[bad].astype(np.float64), rounded[bad].astype(np.float64)
        same = (np.isnan(a) & np.isnan(r)) | (a == r)  # equal non-finite classes: 0 apart
        d[bad[same]] = 0
        mismatch = bad[~same]
        d[mismatch] = -1
        d = d[d >= 0]
    else:
        mismatch = bad
    hist = np.bincount(buckets(d)) if d.size else np.zeros(0, dtype=np.int64)
    return {"hist": hist, "max": dmax, "argmax": i, "mismatch": mismatch}


# --- state ----------------------------------------------------------------------------------
def number(v) -> float:
    """A number given as a number or as text: decimal, inf, nan, -0.0 or a hex float (0x1p-149)."""
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            pass
    return parse_number(v)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")


def _key(framework, api_id, dtype, targets_f, params_j, start, stop, chunk_bits) -> dict:
    return {"framework": framework, "api": api_id, "dtype": dtype, "targets": [format_number(z) for z in targets_f],
            "params": params_j, "range": [start, stop], "chunk_bits": chunk_bits}


def _name(key: dict) -> str:
    n = nbits(key["dtype"]) // 4
    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    z = "_".join(str(t) for t in key["targets"])
    p = "_".join(f"{k}{v}" for k, v in sorted(key["params"].items()))
    s = _slug(f"{key['framework']}__{key['api']}__{key['dtype']}__z{z}__{p}__"
              f"{key['range'][0]:0{n}x}-{key['range'][1]:0{n}x}__cb{key['chunk_bits']}")
    return f"{s[:150]}-{h}"


def _atomic_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _new_agg() -> dict:
    return {"n_x": 0, "n_inputs": 0, "hist": [], "max_ulp": None, "worst": None, "nonfinite": 0,
            "nonfinite_example": None, "raised": 0, "raised_example": None, "crashed": 0, "crashed_example": None,
            "recomputed": 0, "uncertain": 0, "actual_dtypes": [],
            "timing": {"framework_s": 0.0, "reference_s": 0.0, "compare_s": 0.0, "ipc_s": 0.0, "wait_s": 0.0}}


def _example(bits: int, w: int, dtype: str, z: float, expected: float, actual: float) -> dict:
    x = np.asarray(bits, dtype=UINT[dtype]).view(np_dtype(dtype)).astype(np.float64)
    return {"x": format_number(float(x)), "x_bits": f"0x{bits:0{w}x}", "z": format_number(z),
            "expected": format_number(expected), "actual": format_number(actual)}


def _before(order, other) -> bool:
    return other is None or tuple(order) < tuple(other["_order"])


# --- the worker -------------------------------------------------------------------------------
class _Worker:
    """One framework's worker process (harness.runner.WorkerHandle), one call at a time."""

    def __init__(self, framework: str, log_dir: str | None) -> None:
        from harness.runner import WorkerHandle

        self.framework = framework
        self.h = WorkerHandle(framework, log_dir)
        self.version = self._ready()
        self.next_id = 0

    def _ready(self) -> str:
        from harness.runner import START_TIMEOUT_S

        kind, msg = self._recv(START_TIMEOUT_S)
        if kind != "msg":
            self.h.kill()
            raise RuntimeError(f"{self.framework} worker failed to start: {msg}")
        if msg[0] == "unavailable":
            self.h.stop()
            raise RuntimeError(f"framework {self.framework} unavailable: {msg[1]}")
        return msg[1]

    def _recv(self, timeout: float):
        from multiprocessing.connection import wait

        ready = wait([self.h.conn, self.h.proc.sentinel], timeout=timeout)
        if not ready:
            return "crashed", f"timeout after {timeout:.0f} s"
        try:
            if not self.h.conn.poll():
                raise EOFError
            return "msg", self.h.conn.recv()
        except (EOFError, OSError):
            self.h.proc.join(5)
            code = self.h.proc.exitcode
            return "crashed", f"worker exited ({'signal ' + str(-code) if code is not None and code < 0 else code})"

    def submit(self, api_id: str, x: np.ndarray, t: np.ndarray, params: dict) -> int | str:
        """Send one call; its task id, or the reason it could not be sent."""
        self.next_id += 1
        try:
            self.h.conn.send((self.next_id, [(api_id, [(x, t, params)], ("loss",), False)]))  # harness.worker's protocol
        except (OSError, BrokenPipeError) as e:
            return f"worker unreachable: {type(e).__name__}"
        return self.next_id

    def result(self, task_id) -> tuple[str, Any, float]:
        """(kind, payload, framework seconds): ("ok", array), ("raised", msg) or ("crashed", why);
        a crashed worker is restarted."""
        from harness.runner import CALL_TIMEOUT_S

        if isinstance(task_id, str):
            kind, msg = "crashed", task_id
        else:
            kind, msg = self._recv(CALL_TIMEOUT_S)
        if kind != "msg":
            self.h.kill()
            self.h.start()
            self._ready()
            return "crashed", msg, 0.0
        tid, ((status, payload),), (seconds,) = msg  # harness.worker's protocol: one case per call
        assert tid == task_id, (tid, task_id)
        if status != "ok":
            return "raised", payload, seconds
        k, v = payload["loss"]
        return ("ok", np.asarray(v), seconds) if k == "ok" else ("raised", str(v), seconds)

    def stop(self) -> None:
        self.h.stop()


# --- the scan ---------------------------------------------------------------------------------
def _find_api(framework: str, api_id: str):
    import adapters

    try:
        apis = adapters.load(framework).apis
    except ValueError as e:
        raise ValueError(str(e)) from None
    for a in apis:
        if a.id == api_id:
            return a
    raise ValueError(f"unknown api {api_id!r} of {framework}")


def _canonical_params(api, params: dict | None, dtype: str) -> tuple[dict, dict]:
    """(params as JSON, params as passed to the API and the oracle), pos_weight rounded to the dtype."""
    params = dict(params or {})
    params.pop("reduction", None)
    bad = sorted(set(params) - set(SCAN_PARAMS))
    if bad:
        raise ValueError(f"parameter(s) {', '.join(bad)} not supported by a scan (supported: {', '.join(SCAN_PARAMS)})")
    pj, call = {}, {"reduction": "none"}
    for k, v in sorted(params.items()):
        v = number(v)
        if k == "pos_weight":
            arr = to_dtype(np.asarray([v]), dtype)
            pj[k] = format_number(float(arr[0].astype(np.float64)))
            call[k] = arr
        else:
            pj[k] = format_number(v)
            call[k] = v
    return pj, call


def paths(framework: str, api_id: str, dtype: str = "float32", targets=(0.0, 1.0), params: dict | None = None, *,
          chunk_bits: int = 24, state_dir: str, start: int = 0, stop: int | None = None) -> tuple[str, str]:
    """(state file, certificate file) of a scan with these arguments."""
    api = _find_api(framework, api_id)
    targets_f = [float(to_dtype(np.asarray(number(z)), dtype).astype(np.float64)) for z in targets]
    pj, _ = _canonical_params(api, params, dtype)
    stop = (1 << nbits(dtype)) if stop is None else stop
    name = _name(_key(framework, api_id, dtype, targets_f, pj, start, stop, chunk_bits))
    return os.path.join(state_dir, name + ".state.json"), os.path.join(state_dir, name + ".certificate.json")


def scan(framework: str, api_id: str, dtype: str = "float32", targets=(0.0, 1.0), params: dict | None = None, *,
         chunk_bits: int = 24, state_dir: str, start: int = 0, stop: int | None = None, progress: bool = True,
         max_chunks: int | None = None) -> dict:
    """Evaluate `api_id` of `framework` on every input of its family's domain in `dtype` whose
    bit pattern lies in [start, stop), for each target z, against the certified reference (see
    the module doc). Resumes from STATE_DIR's state for the same arguments; `max_chunks` stops
    after that many chunks in this call. Returns the certificate (written to
    paths(...)[1] once the range is done): framework, framework_version, api, family, dtype,
    targets, params, domain, range, complete (the whole domain was evaluated), finished (the
    range was), n_x, n_inputs (pairs (x, z)), max_ulp, worst, nonfinite_mismatches,
    nonfinite_example, histogram, reference, wall_s, date, chunk_bits, git_revision, timing
    (seconds, summed over the calls: framework_s inside the framework calls as the worker
    measures them, reference_s the reference and its certification, compare_s the grading,
    ipc_s sending the calls, wait_s waiting for the replies; the worker computes the next call
    while the parent grades, so they overlap). Bad arguments raise ValueError; a worker that
    cannot start, or a state made with another framework version, raises RuntimeError."""
    if dtype not in SCAN_DTYPES:
        raise ValueError(f"dtype {dtype!r} cannot be scanned (supported: {', '.join(SCAN_DTYPES)})")
    api = _find_api(framework, api_id)
    if api.family not in ELEMENTWISE:
        raise ValueError(f"{api_id} computes the {api.family} family, not an elementwise one "
                         f"({', '.join(ELEMENTWISE)})")
    pj, call_params = _canonical_params(api, params, dtype)
    why = api.cannot_express(call_params, dtype, 2)
    if why:
        raise ValueError(why)
    targets = list(targets)
    if not targets:
        raise ValueError("no targets")
    targets_f = [float(to_dtype(np.asarray(number(z)), dtype).astype(np.float64)) for z in targets]
    if len(set(map(format_number, targets_f))) != len(targets_f):
        raise ValueError(f"repeated targets {targets_f}")
    n = nbits(dtype)
    stop = (1 << n) if stop is None else int(stop)
    start = int(start)
    if not 0 <= start < stop <= (1 << n):
        raise ValueError(f"bad range 0x{start:x}:0x{stop:x} (bit patterns of {dtype}: 0 to 0x{1 << n:x})")
    if not 1 <= int(chunk_bits) <= MAX_CHUNK_BITS:
        raise ValueError(f"chunk_bits {chunk_bits} outside 1..{MAX_CHUNK_BITS}")
    if max_chunks is not None and max_chunks < 1:
        raise ValueError("max_chunks must be >= 1")
    cb = int(chunk_bits)
    os.makedirs(state_dir, exist_ok=True)
    key = _key(framework, api_id, dtype, targets_f, pj, start, stop, cb)
    state_path, cert_path = (os.path.join(state_dir, _name(key) + s) for s in (".state.json", ".certificate.json"))
    conv = {"mean": api.convention("mean"), "axis_mean": api.convention("axis_mean")}
    intervals = domain_intervals(api.family, dtype)
    first, last = start >> cb, (stop - 1) >> cb
    total_x = _count(intervals, start, stop)

    state = None
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        if state.get("key") != key or state.get("version") != STATE_VERSION:
            state = None  # another scan's file under a colliding name, or an old format: start over
    if state is None:
        state = {"version": STATE_VERSION, "key": key, "next_chunk": first, "framework_version": "",
                 "wall_s": 0.0, "agg": _new_agg()}
    if state["next_chunk"] > last and os.path.exists(cert_path):
        with open(cert_path) as f:
            return json.load(f)

    agg = state["agg"]
    w = n // 4
    t_call = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_x, initial=agg["n_x"], unit="x", unit_scale=True, dynamic_ncols=True,
                   desc=f"scan {api_id} {dtype}", file=sys.stderr, smoothing=0.05)

    def chunk_bits_of(k: int) -> np.ndarray:
        parts = [np.arange(a, b, dtype=np.uint64) for a, b in _overlap(intervals, max(k << cb, start),
                                                                       min((k + 1) << cb, stop))]
        return (np.concatenate(parts) if parts else np.zeros(0, np.uint64)).astype(UINT[dtype])

    def events() -> Iterator[tuple]:
        done = 0
        for k in range(state["next_chunk"], last + 1):
            if max_chunks is not None and done >= max_chunks:
                return
            done += 1
            bits = chunk_bits_of(k)
            if bits.size == 0:
                yield k, None, None, None
                continue
            x = bits.view(np_dtype(dtype)).reshape(-1, 1)
            for zi in range(len(targets_f)):
                yield k, zi, bits, x

    worker = None
    ref_cache: dict[int, list[np.ndarray]] = {}

    def grade_call(k, zi, bits, x, reply):
        with np.errstate(all="ignore"):  # signalling NaN inputs raise 'invalid' in casts; nan and inf are data
            _grade_call(k, zi, bits, x, reply)

    def _grade_call(k, zi, bits, x, reply):
        kind, payload, seconds = reply
        agg["timing"]["framework_s"] += seconds
        z = targets_f[zi]
        m = bits.size
        agg["n_inputs"] += m
        if kind == "ok" and payload.size != m:
            kind, payload = "raised", f"returned shape {payload.shape} for {m} inputs"
        if kind != "ok":
            agg[kind] += m
            if agg[f"{kind}_example"] is None:
                agg[f"{kind}_example"] = {"x_bits": f"0x{int(bits[0]):0{w}x}..0x{int(bits[-1]):0{w}x}",
                                          "z": format_number(z), "detail": str(payload)}
            return
        actual = payload.ravel()
        if actual.dtype.name not in agg["actual_dtypes"]:
            agg["actual_dtypes"].append(actual.dtype.name)
        if actual.dtype != np_dtype(dtype):
            actual = to_dtype(actual.astype(np.float64), dtype)
        t0 = time.perf_counter()
        if k not in ref_cache:
            ref_cache.clear()
            ref_cache[k] = reference(api.family, x, targets_f, call_params, conv, dtype)
        rounded, expected, nrec, nunc = certify(api.family, x, z, call_params, conv, dtype, ref_cache[k][zi])
        agg["recomputed"] += nrec
        agg["uncertain"] += nunc
        t1 = time.perf_counter()
        c = compare(actual, rounded, dtype)
        agg["timing"]["reference_s"] += t1 - t0
        agg["timing"]["compare_s"] += time.perf_counter() - t1
        h = agg["hist"]
        h.extend([0] * (len(c["hist"]) - len(h)))
        for b, cnt in enumerate(c["hist"].tolist()):
            h[b] += cnt
        if c["max"] >= 0:
            i = c["argmax"]
            order = [int(bits[i]), zi]
            if agg["max_ulp"] is None or c["max"] > agg["max_ulp"] or (c["max"] == agg["max_ulp"]
                                                                        and _before(order, agg["worst"])):
                agg["max_ulp"] = c["max"]
                agg["worst"] = {**_example(order[0], w, dtype, z, float(expected[i]), float(actual[i])),
                                "_order": order}
        mm = c["mismatch"]
        if mm.size:
            agg["nonfinite"] += int(mm.size)
            i = int(mm[0])
            order = [int(bits[i]), zi]
            if _before(order, agg["nonfinite_example"]):
                agg["nonfinite_example"] = {**_example(order[0], w, dtype, z, float(expected[i]),
                                                       float(actual[i])), "_order": order}

    def finish_chunk(k: int, m: int) -> None:
        agg["n_x"] += m
        state["next_chunk"] = k + 1
        state["wall_s"] = wall0 + time.perf_counter() - t_call
        _atomic_json(state_path, state)
        if bar is not None:
            bar.update(m)

    wall0 = state["wall_s"]
    try:
        evs = events()
        cur = next(evs, None)
        pending = None  # the task id of the call in flight for `cur`, once submitted
        while cur is not None:
            k, zi, bits, x = cur
            if zi is None:
                finish_chunk(k, 0)
                cur = next(evs, None)
                continue
            if worker is None:
                os.makedirs(os.path.join(state_dir, "logs"), exist_ok=True)
                worker = _Worker(framework, os.path.join(state_dir, "logs"))
                if state["framework_version"] and state["framework_version"] != worker.version:
                    raise RuntimeError(f"{state_path} was made with {framework} {state['framework_version']}, "
                                       f"now {worker.version}: remove it to start over")
                state["framework_version"] = worker.version
            if pending is None:
                tw = time.perf_counter()
                pending = worker.submit(api_id, x, np.full(x.shape, targets_f[zi], dtype=x.dtype), call_params)
                agg["timing"]["ipc_s"] += time.perf_counter() - tw
            tw = time.perf_counter()
            reply = worker.result(pending)
            agg["timing"]["wait_s"] += time.perf_counter() - tw
            nxt = next(evs, None)
            pending = None
            if nxt is not None and nxt[1] is not None and reply[0] != "crashed":  # keep the worker busy
                _, nzi, _, nx = nxt
                tw = time.perf_counter()
                pending = worker.submit(api_id, nx, np.full(nx.shape, targets_f[nzi], dtype=nx.dtype), call_params)
                agg["timing"]["ipc_s"] += time.perf_counter() - tw
            grade_call(k, zi, bits, x, reply)
            if zi == len(targets_f) - 1:
                ref_cache.clear()
                finish_chunk(k, bits.size)
            cur = nxt
    finally:
        if worker is not None:
            worker.stop()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_call
    state["wall_s"] = wall0 + wall
    if agg["n_x"] or state["next_chunk"] > first:
        _atomic_json(state_path, state)
    finished = state["next_chunk"] > last
    cert = _certificate(api, dtype, targets_f, pj, start, stop, cb, state, finished, total_x)
    if finished:
        _atomic_json(cert_path, cert)
    if progress:
        print(f"scan {framework}:{api_id} {dtype}: {wall:.1f} s wall time this call "
              f"({state['wall_s']:.1f} s in all)", file=sys.stderr)
    return cert


def _public(e: dict | None) -> dict | None:
    return None if e is None else {k: v for k, v in e.items() if not k.startswith("_")}


def _certificate(api, dtype, targets_f, pj, start, stop, cb, state, finished, total_x) -> dict:
    from harness.dtypes import LONGDOUBLE_BITS
    from harness.results import git_revision

    agg = state["agg"]
    n = nbits(dtype)
    w = n // 4
    hist = {bucket_label(b): c for b, c in enumerate(agg["hist"]) if c}
    for k in ("nonfinite", "raised", "crashed"):
        if agg[k]:
            hist["nonfinite_mismatch" if k == "nonfinite" else k] = agg[k]
    complete = finished and _count(domain_intervals(api.family, dtype), start, stop) == \
        _count(domain_intervals(api.family, dtype), 0, 1 << n)
    cert = {
        "framework": api.framework, "framework_version": state["framework_version"], "api": api.id,
        "family": api.family, "dtype": dtype, "targets": [format_number(z) for z in targets_f], "params": pj,
        "reduction": "none", "input_shape": "(n, 1)",
        "domain": domain_text(api.family, dtype),
        "range": {"start": f"0x{start:0{w}x}", "stop": f"0x{stop:0{w}x}", "n_x": total_x},
        "complete": bool(complete), "finished": bool(finished),
        "n_x": agg["n_x"], "n_inputs": agg["n_inputs"], "max_ulp": agg["max_ulp"], "worst": _public(agg["worst"]),
        "nonfinite_mismatches": agg["nonfinite"], "nonfinite_example": _public(agg["nonfinite_example"]),
        "histogram": hist,
        "reference": {"precision": reference_precision(dtype)[1], "rounded_once_to": dtype,
                      "boundary_rel": f"2^{int(math.log2(BOUNDARY_REL))}",
                      "recomputed_longdouble": agg["recomputed"], "longdouble_bits": LONGDOUBLE_BITS,
                      "uncertain": agg["uncertain"],
                      "uncertain_rel": f"2^{int(math.log2(LONGDOUBLE_REL))}"},
        "actual_dtypes": sorted(agg["actual_dtypes"]),
        "wall_s": round(state["wall_s"], 3),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "chunk_bits": cb, "git_revision": git_revision(),
        "timing": {k: round(v, 3) for k, v in agg["timing"].items()},
    }
    for k in ("raised", "crashed"):
        if agg[f"{k}_example"]:
            cert[f"{k}_example"] = agg[f"{k}_example"]
    return cert


# --- command line -------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    """Register `scan` on an argparse subparsers object (func=cmd_scan)."""
    p = subparsers.add_parser("scan", help="exhaustive scan of an elementwise loss API over every bit pattern "
                                           "of a dtype")
    p.add_argument("--api", required=True, metavar="PATTERN",
                   help="fnmatch pattern against the API id or 'framework:id'; every elementwise API it matches "
                        "is scanned")
    p.add_argument("--dtype", default="float32", help="float16, bfloat16 or float32 (default: float32)")
    p.add_argument("--targets", default="0,1", help="comma-separated target values (default: 0,1)")
    p.add_argument("--pos-weight", dest="pos_weight", metavar="W",
                   help="pos_weight for the sigmoid-family APIs that take it")
    p.add_argument("--chunk-bits", dest="chunk_bits", type=int, default=24,
                   help="log2 of the bit patterns per chunk (default: 24)")
    p.add_argument("--out", metavar="DIR", default="reports/scans",
                   help="state and certificates (default: reports/scans)")
    p.add_argument("--range", dest="range", metavar="START:STOP",
                   help="bit-pattern range [START, STOP), hex or int (a partial scan is marked complete=false)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_scan)


def _parse_range(s: str, dtype: str) -> tuple[int, int]:
    n = nbits(dtype)
    a, sep, b = s.partition(":")
    if not sep:
        raise ValueError(f"bad range {s!r}: expected START:STOP")
    try:
        start = int(a.strip(), 0) if a.strip() else 0
        stop = int(b.strip(), 0) if b.strip() else 1 << n
    except ValueError:
        raise ValueError(f"bad range {s!r}: START and STOP are integers (0x.. for hex)") from None
    if not 0 <= start < stop <= (1 << n):
        raise ValueError(f"bad range {s!r}: need 0 <= START < STOP <= 0x{1 << n:x} for {dtype}")
    return start, stop


def select_apis(pattern: str) -> list:
    """The elementwise APIs whose id or 'framework:id' matches `pattern` (adapters.select)."""
    import adapters

    return adapters.select(pattern, ELEMENTWISE)


def cmd_scan(args) -> int:
    """`xentc scan`: scan each selected API in turn and print one summary line per API."""
    from harness.cli import UsageError

    def usage(msg: str):
        return UsageError(" ".join(str(msg).split()))

    if args.dtype not in SCAN_DTYPES:
        raise usage(f"dtype {args.dtype!r} cannot be scanned (supported: {', '.join(SCAN_DTYPES)})")
    try:
        targets = [number(z) for z in args.targets.split(",") if z.strip()]
        pos_weight = number(args.pos_weight) if args.pos_weight is not None else None
        start, stop = _parse_range(args.range, args.dtype) if args.range else (0, 1 << nbits(args.dtype))
    except ValueError as e:
        raise usage(e) from None
    if not targets:
        raise usage(f"no targets in {args.targets!r}")
    if not 1 <= args.chunk_bits <= MAX_CHUNK_BITS:
        raise usage(f"--chunk-bits {args.chunk_bits} outside 1..{MAX_CHUNK_BITS}")
    apis = select_apis(args.api)
    if not apis:
        raise usage(f"--api {args.api!r} matches no elementwise API ({', '.join(ELEMENTWISE)}); see `xentc list`")
    if pos_weight is not None and not any("pos_weight" in a.params for a in apis):
        raise usage(f"--pos-weight: no API matched by {args.api!r} takes pos_weight")
    runs, skipped = [], []
    for a in apis:
        params = {"pos_weight": pos_weight} if pos_weight is not None and "pos_weight" in a.params else {}
        why = a.cannot_express({"reduction": "none", **params}, args.dtype, 2)
        (skipped if why else runs).append((a, params, why))
    if not runs:
        raise usage(f"no API matched by {args.api!r} can be scanned: {skipped[0][2]}")
    from harness.cli import _writable_dir

    out = _writable_dir(args.out)  # raises the CLI's one-line UsageError
    for a, _, why in skipped:
        print(f"skipped {a.framework}:{a.id}: {why}")
    for a, params, _ in runs:
        if pos_weight is not None and not params:
            print(f"note: {a.framework}:{a.id} takes no pos_weight; scanned without it")
        try:
            cert = scan(a.framework, a.id, args.dtype, targets, params, chunk_bits=args.chunk_bits, state_dir=out,
                        start=start, stop=stop, progress=not args.quiet and sys.stderr.isatty())
        except (ValueError, RuntimeError) as e:
            raise usage(f"{a.framework}:{a.id}: {e}") from None
        _, cert_path = paths(a.framework, a.id, args.dtype, targets, params, chunk_bits=args.chunk_bits,
                             state_dir=out, start=start, stop=stop)
        print(summary_line(cert, cert_path))
    return 0


def summary_line(cert: dict, cert_path: str) -> str:
    """One line: api, dtype, max ULP, worst input, inputs evaluated, wall time, certificate."""
    wst = cert.get("worst")
    worst = f"x={wst['x']} ({wst['x_bits']}) z={wst['z']}" if wst else "-"
    nf = f" nonfinite_mismatches={cert['nonfinite_mismatches']}" if cert["nonfinite_mismatches"] else ""
    part = "" if cert["complete"] else " complete=False"
    return (f"{cert['framework']}:{cert['api']} {cert['dtype']} max_ulp={cert['max_ulp']} worst {worst}{nf} "
            f"inputs={cert['n_inputs']}{part} wall={cert['wall_s']:.1f}s certificate={cert_path}")
