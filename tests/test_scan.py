"""harness.scan: exhaustive scans of an elementwise loss API (torch only, float16 in full,
float32 on a small range), their independence of the chunking, resuming, the certified
reference's helpers, and the command line's input errors."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from harness import oracle, scan
from harness.dtypes import LONGDOUBLE_BITS, UINT, finfo, np_dtype, to_dtype
from harness.ulp import ordered_key, ulp_distance, value_class

SIGMOID_API = "torch.nn.functional.binary_cross_entropy_with_logits"
BINARY_API = "torch.nn.functional.binary_cross_entropy"
CONV = {"mean": "elements", "axis_mean": False}


def result(cert: dict) -> dict:
    """A certificate without the fields that describe the run rather than the result."""
    return {k: v for k, v in cert.items() if k not in scan.RUN_FIELDS}


@pytest.fixture(scope="module")
def sigmoid16(tmp_path_factory):
    """Full float16 scans of the sigmoid API with two chunkings."""
    return {cb: scan.scan("torch", SIGMOID_API, "float16", chunk_bits=cb, progress=False,
                          state_dir=str(tmp_path_factory.mktemp(f"cb{cb}")))
            for cb in (16, 12)}


def _bucket(d: int) -> str:
    return scan.bucket_label(0 if d == 0 else (d - 1).bit_length() + 1)


def test_float16_full_scan_independent_of_chunking_and_of_the_worker_path(sigmoid16, tmp_path):
    c16, c12 = sigmoid16[16], sigmoid16[12]
    assert result(c16) == result(c12)
    assert c16["complete"] and c16["finished"]
    assert c16["n_x"] == 1 << 16 and c16["n_inputs"] == 2 << 16
    assert sum(c16["histogram"].values()) == c16["n_inputs"]

    # torch called directly (1-D inputs, another process), graded with harness.ulp on oracle.loss
    out = tmp_path / "torch.npy"
    code = ("import sys, numpy as np, torch\n"
            "x = torch.from_numpy(np.arange(1 << 16, dtype=np.uint16).view(np.float16))\n"
            "f = torch.nn.functional.binary_cross_entropy_with_logits\n"
            "out = [f(x, torch.full_like(x, z), reduction='none').numpy() for z in (0.0, 1.0)]\n"
            "np.save(sys.argv[1], np.stack(out))\n")
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=120)
    actual = np.load(out)
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    hist: dict[str, int] = {}
    worst, mismatches = [], []
    with np.errstate(all="ignore"):
        for zi, z in enumerate((0.0, 1.0)):
            ref = oracle.loss("sigmoid", x[:, None], np.full((x.size, 1), z, np.float16), {"reduction": "none"},
                              CONV, np.float64).ravel()
            r16 = to_dtype(ref, "float16")
            d = ulp_distance(actual[zi], r16, "float16")
            mism = value_class(actual[zi]) != value_class(r16)
            mismatches += [(int(i), zi) for i in np.flatnonzero(mism)]
            for v, cnt in zip(*np.unique(d[~mism].astype(np.int64), return_counts=True)):
                hist[_bucket(int(v))] = hist.get(_bucket(int(v)), 0) + int(cnt)
            both = np.isfinite(actual[zi]) & np.isfinite(r16)
            i = int(np.argmax(np.where(both, d, -1)))
            worst.append((-int(d[i]), i, zi, float(ref[i]), float(actual[zi][i])))  # ties: smallest bits, then z
    nonfinite = len(mismatches)
    if nonfinite:
        hist["nonfinite_mismatch"] = nonfinite
    assert c16["histogram"] == hist
    negd, i, zi, exp, act = min(worst)
    assert c16["max_ulp"] == -negd
    w = c16["worst"]
    assert (int(w["x_bits"], 16), w["z"], w["expected"], w["actual"]) == (i, (0.0, 1.0)[zi], exp, act)
    assert c16["nonfinite_mismatches"] == nonfinite
    if nonfinite:
        i, zi = min(mismatches)
        assert (int(c16["nonfinite_example"]["x_bits"], 16), c16["nonfinite_example"]["z"]) == (i, (0.0, 1.0)[zi])
    assert c16["reference"]["recomputed_longdouble"] == 0  # none near a float16 boundary: graded alike


def test_fast_sigmoid_reference_equals_the_oracle():
    """The shared-tail reference for z in {0, 1} is oracle.loss, bit for bit, and
    loss(x, 1) = loss(-x, 0) holds for the oracle's definition."""
    rng = np.random.default_rng(7)
    x32 = np.concatenate([rng.integers(0, 1 << 32, size=1 << 17, dtype=np.uint64).astype(np.uint32),
                          np.array([0, 0x80000000, 1, 0x80000001, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001,
                                    0x7f7fffff, 0xff7fffff, 0x42b00000, 0xc2b00000, 0x3f800000], np.uint32)])
    cases = [(np.arange(1 << 16, dtype=np.uint16).view(np.float16), "float16"),
             (np.arange(1 << 16, dtype=np.uint16).view(np_dtype("bfloat16")), "bfloat16"),
             (x32.view(np.float32), "float32")]
    for x, dtype in cases:
        fast = scan.reference("sigmoid", x[:, None], [0.0, 1.0], {"reduction": "none"}, CONV, dtype)
        with np.errstate(all="ignore"):
            slow = [oracle.loss("sigmoid", x[:, None], np.full((x.size, 1), z, x.dtype), {"reduction": "none"},
                                CONV, np.float64).ravel() for z in (0.0, 1.0)]
            mirrored = oracle.loss("sigmoid", -x[:, None], np.zeros((x.size, 1), x.dtype), {"reduction": "none"},
                                   CONV, np.float64).ravel()
        for f, s in zip(fast, slow):
            np.testing.assert_array_equal(f, s)
        np.testing.assert_array_equal(slow[1], mirrored)


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    d1, d2 = str(tmp_path / "a"), str(tmp_path / "b")
    part = scan.scan("torch", BINARY_API, "float16", chunk_bits=12, state_dir=d1, progress=False, max_chunks=3)
    assert not part["finished"] and not part["complete"] and part["n_x"] == 3 << 12
    state_path, cert_path = scan.paths("torch", BINARY_API, "float16", chunk_bits=12, state_dir=d1)
    assert json.load(open(state_path))["next_chunk"] == 3 and not os.path.exists(cert_path)
    resumed = scan.scan("torch", BINARY_API, "float16", chunk_bits=12, state_dir=d1, progress=False)
    whole = scan.scan("torch", BINARY_API, "float16", chunk_bits=16, state_dir=d2, progress=False)
    assert result(resumed) == result(whole)
    assert resumed == json.load(open(cert_path))
    # the probability domain: [0, 1] and -0.0; torch clamps log at -100, so p = 0, z = 1 gives 100, not inf
    assert resumed["complete"] and resumed["n_x"] == 0x3C00 + 2 and "[0, 1]" in resumed["domain"]
    assert resumed["nonfinite_example"]["x_bits"] == "0x0000" and resumed["nonfinite_example"]["actual"] == 100.0
    # a finished scan is read back, not run again
    assert scan.scan("torch", BINARY_API, "float16", chunk_bits=12, state_dir=d1, progress=False) == resumed


def test_float32_range_through_the_command_line(tmp_path, capsys):
    p = argparse.ArgumentParser()
    scan.add_parser(p.add_subparsers(dest="command"))
    out = tmp_path / "scans"
    args = p.parse_args(["scan", "--api", "torch:" + SIGMOID_API, "--range", "0x41780000:0x41880000",
                         "--chunk-bits", "18", "--out", str(out), "-q"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "complete=False" in lines[0] and "float32" in lines[0]
    cert_file = lines[0].rsplit("certificate=", 1)[1]
    cert = json.load(open(cert_file))
    assert cert["range"] == {"start": "0x41780000", "stop": "0x41880000", "n_x": 1 << 20}
    assert not cert["complete"] and cert["finished"]
    assert cert["n_x"] == 1 << 20 and cert["n_inputs"] == 2 << 20
    assert sum(cert["histogram"].values()) == cert["n_inputs"]
    assert cert["max_ulp"] is not None and 0x41780000 <= int(cert["worst"]["x_bits"], 16) < 0x41880000


@pytest.mark.parametrize("argv, message", [
    (["--api", "no.such.api*"], "matches no elementwise API"),
    (["--api", "torch.nn.functional.cross_entropy*"], "matches no elementwise API"),
    (["--api", SIGMOID_API, "--dtype", "float64"], "cannot be scanned"),
    (["--api", SIGMOID_API, "--range", "10:5"], "bad range"),
    (["--api", SIGMOID_API, "--range", "0x10"], "bad range"),
    (["--api", SIGMOID_API, "--range", "a:b"], "bad range"),
    (["--api", SIGMOID_API, "--dtype", "float16", "--range", "0:0x10001"], "bad range"),
    (["--api", SIGMOID_API, "--targets", "zero"], "expected a number"),
    (["--api", SIGMOID_API, "--targets", "1,1"], "repeated targets"),
    (["--api", BINARY_API, "--pos-weight", "2"], "takes pos_weight"),
    (["--api", SIGMOID_API, "--chunk-bits", "0"], "--chunk-bits"),
    (["--api", "keras.losses.BinaryCrossentropy[reduction=mean]"], "can be scanned"),
])
def test_bad_input_is_one_line_usage_error(argv, message, tmp_path):
    from harness.cli import UsageError

    p = argparse.ArgumentParser()
    scan.add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["scan", *argv, "--out", str(tmp_path), "-q"])
    with pytest.raises(UsageError) as e:
        scan.cmd_scan(args)
    assert message in str(e.value) and "\n" not in str(e.value)


# --- helpers ---------------------------------------------------------------------------------
def _values(dtype: str, rng) -> np.ndarray:
    """Positive finite values of `dtype`: random bit patterns, the smallest and largest."""
    n = scan.nbits(dtype)
    top = int(np.asarray(finfo(dtype).max, np_dtype(dtype)).view(UINT[dtype]))
    b = np.concatenate([rng.integers(0, top + 1, size=4000, dtype=np.uint64), [0, 1, 2, top - 1, top]])
    assert top < 1 << (n - 1)
    return b.astype(UINT[dtype]).view(np_dtype(dtype))


@pytest.mark.parametrize("dtype", scan.SCAN_DTYPES)
def test_near_rounding_boundary(dtype):
    rng = np.random.default_rng(3)
    v = _values(dtype, rng)
    nxt = (v.view(UINT[dtype]) + np.asarray(1, UINT[dtype])).view(np_dtype(dtype)).astype(np.float64)
    vf = v.astype(np.float64)
    nxt = np.where(np.isinf(nxt), 2.0 ** int(finfo(dtype).maxexp), nxt)  # max: the overflow threshold
    mid = vf + (nxt - vf) / 2  # exact
    for sign in (1.0, -1.0):
        near = np.concatenate([mid, mid * (1 + 2.0 ** -45), mid * (1 - 2.0 ** -45), mid + (nxt - vf) * 2.0 ** -42])
        far = np.concatenate([vf[vf > 0], mid * (1 + 2.0 ** -30), mid * (1 - 2.0 ** -30)])
        assert scan.near_rounding_boundary(sign * near, dtype).all()
        assert not scan.near_rounding_boundary(sign * far, dtype).any()
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 2.0 ** 200, 1e-300, 2.0 ** -1074])
    assert not scan.near_rounding_boundary(special, dtype).any()
    # the prefiltered mask is exactly midpoint_distance <= rel, on any float64
    anyf = np.concatenate([rng.integers(0, 1 << 64, size=1 << 16, dtype=np.uint64).view(np.float64),
                           near * (1 + rng.uniform(-2.0 ** -38, 2.0 ** -38, near.size)),
                           far * (1 + rng.uniform(-2.0 ** -38, 2.0 ** -38, far.size))])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(scan.near_rounding_boundary(anyf, dtype),
                                      scan.midpoint_distance(anyf, dtype) <= scan.BOUNDARY_REL)


@pytest.mark.skipif(LONGDOUBLE_BITS <= 53, reason="long double is float64 here")
def test_round_longdouble_is_one_rounding():
    one = np.float32(1.0)
    nxt = np.nextafter(one, np.float32(2))
    mid = (np.longdouble(one) + np.longdouble(nxt)) / 2  # a tie: nearest-even goes to 1
    above, below = mid * (1 + np.longdouble(2.0) ** -60), mid * (1 - np.longdouble(2.0) ** -60)
    assert to_dtype(np.float64(above), "float32") == one  # via float64 the tie is rounded twice: wrong
    assert scan.round_longdouble(np.array([above]), "float32")[0] == nxt
    assert scan.round_longdouble(np.array([below, mid]), "float32").tolist() == [one, one]
    for dtype in scan.SCAN_DTYPES:
        a = np.array([1.5, 1e-30, -3.25], dtype=np.longdouble)
        np.testing.assert_array_equal(scan.round_longdouble(a, dtype), to_dtype(a.astype(np.float64), dtype))


@pytest.mark.parametrize("dtype", scan.SCAN_DTYPES)
def test_compare_grades_as_harness_ulp(dtype):
    rng = np.random.default_rng(11)
    n = scan.nbits(dtype)
    a = rng.integers(0, 1 << n, size=20000, dtype=np.uint64).astype(UINT[dtype]).view(np_dtype(dtype))
    r = a.copy()
    r[::3] = rng.integers(0, 1 << n, size=r[::3].size, dtype=np.uint64).astype(UINT[dtype]).view(np_dtype(dtype))
    near = ordered_key(a[1::3], dtype) + rng.integers(-3, 4, size=a[1::3].size)
    near = np.clip(near, -(1 << (n - 1)) + 1, (1 << (n - 1)) - 1)
    r[1::3] = np.where(near < 0, (-near) | (1 << (n - 1)), near).astype(UINT[dtype]).view(np_dtype(dtype))
    c = scan.compare(a, r, dtype)
    with np.errstate(all="ignore"):
        d = ulp_distance(a.astype(np.float64), r.astype(np.float64), dtype)
        mism = value_class(a) != value_class(r)
    np.testing.assert_array_equal(c["mismatch"], np.flatnonzero(mism))
    fin = d[~mism].astype(np.int64)
    want = np.bincount([0 if v == 0 else int(v - 1).bit_length() + 1 for v in fin])
    np.testing.assert_array_equal(c["hist"], want)
    assert c["max"] == fin.max() and c["argmax"] == int(np.argmax(np.where(mism, -1, d)))
    assert [scan.bucket_label(b) for b in range(6)] == ["0", "1", "2", "3-4", "5-8", "9-16"]


class FakeWorker:
    """Stands in for the framework's worker: returns the rounded reference, except that the
    calls of chunk 1 raise and those of chunk 2 find the worker dead."""

    version = "fake"

    def __init__(self, framework, log_dir):
        self.calls = []

    def submit(self, api_id, x, t, params):
        self.calls.append((x, t))
        return len(self.calls)

    def result(self, task_id):
        x, t = self.calls[task_id - 1]
        chunk = int(x.view(np.uint16)[0, 0]) >> 12
        if chunk == 1:
            return "raised", "ValueError: boom", 0.0
        if chunk == 2:
            return "crashed", "worker exited (signal 9)", 0.0
        ref = oracle.loss("sigmoid", x, t, {"reduction": "none"}, CONV, np.float64)
        return "ok", to_dtype(ref, "float16"), 0.0

    def stop(self):
        pass


def test_raised_and_crashed_calls_are_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "_Worker", FakeWorker)
    with np.errstate(all="ignore"):
        c = scan.scan("torch", SIGMOID_API, "float16", [0.0, 1.0], chunk_bits=12, state_dir=str(tmp_path),
                      progress=False)
    assert c["complete"] and c["framework_version"] == "fake"
    assert c["histogram"] == {"0": (2 << 16) - 4 * 4096, "raised": 2 * 4096, "crashed": 2 * 4096}
    assert c["max_ulp"] == 0 and c["nonfinite_mismatches"] == 0 and c["n_inputs"] == 2 << 16
    assert c["raised_example"] == {"x_bits": "0x1000..0x1fff", "z": 0.0, "detail": "ValueError: boom"}
    assert c["crashed_example"]["detail"] == "worker exited (signal 9)"
