"""The built-in corpus: seeded, deterministic cases of extreme logits, soft labels,
imbalanced weights and edge shapes for every family.

Case ids are "<category>/<family>/<name>"; the category is one of CATEGORIES, or
"exhaustive" (every bit pattern of a 16-bit dtype, `exhaustive_cases`) or "found" (the
worst inputs `xentc explore` found, read from cases/found/*.json). Each case's random draws
come from a generator seeded by (seed, crc32(id)), so adding or removing a case never
changes another one.
"""
from __future__ import annotations

import glob
import os
import zlib
from typing import Any, Callable, Iterable

import numpy as np

from harness.casefile import Case, load_cases
from harness.dtypes import UINT, finfo, np_dtype
from harness.spec import DTYPES, FAMILIES

CATEGORIES = ("baseline", "extreme", "soft_labels", "weights", "shapes")
EXHAUSTIVE = "exhaustive"  # rows certified over a whole input domain (an upper bound)
FOUND = "found"  # inputs found by search (xentc explore), kept as cases
FOUND_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "found")
LARGE_C = 32768  # ">= 32,768 classes"

Builder = Callable[[np.random.Generator], Case]


def _rng(seed: int, cid: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(cid.encode())])


def _steps(x: float, dtype: str, ks: Iterable[int] = (-2, -1, 0, 1, 2)) -> list[float]:
    """x rounded to `dtype`, and k ulps either side of it (in that dtype), as float64."""
    from harness.dtypes import np_dtype, UINT

    v = np.asarray(x, dtype=np.float64).astype(np_dtype(dtype))
    bits = int(v.view(UINT[dtype]))
    out = []
    for k in ks:
        b = bits + (k if x >= 0 else -k)
        out.append(float(np.asarray(b, dtype=UINT[dtype]).view(np_dtype(dtype)).astype(np.float64)))
    return out


def thresholds(dtype: str) -> dict[str, float]:
    """Where exp/log1p change regime in `dtype`: exp overflow log(max), exp underflow to
    subnormal log(tiny), to zero log(smallest subnormal), and -log(eps) where
    log1p(exp(-x)) drops below one ulp of x."""
    fi = finfo(dtype)
    return {
        "exp-overflow": float(np.log(float(fi.max))),
        "exp-underflow": float(np.log(float(fi.tiny))),
        "exp-to-zero": float(np.log(float(fi.smallest_subnormal))),
        "log-eps": float(-np.log(float(fi.eps))),
    }


def _special_values() -> list[float]:
    return [0.0, -0.0, 1.0, -1.0, 1e4, -1e4, 1e8, -1e8, 1e30, -1e30, np.inf, -np.inf, np.nan]


def _finfo_values(dtype: str) -> list[float]:
    fi = finfo(dtype)
    v = [float(fi.max), float(fi.tiny), float(fi.smallest_subnormal), float(fi.eps)]
    return v + [-a for a in v]


# --- per-family case constructors ------------------------------------------------------
def _elementwise(fam: str, cid: str, x, z, *, params=None, dtypes=None) -> Case:
    return Case(cid, fam, np.asarray(x, np.float64), np.asarray(z, np.float64), dict(params or {}), dtypes)


def _grid(values: list[float], targets: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Every value against every target: shape (len(targets), len(values))."""
    x = np.tile(np.asarray(values, np.float64), (len(targets), 1))
    z = np.repeat(np.asarray(targets, np.float64)[:, None], len(values), axis=1)
    return x, z


def onehot(idx, c: int) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64)
    out = np.zeros(idx.shape + (c,))
    np.put_along_axis(out, idx[..., None], 1.0, axis=-1)
    return out


def _softmax_targets(rng, n: int, c: int, kind: str) -> np.ndarray:
    if kind == "onehot":
        return onehot(rng.integers(0, c, n), c)
    if kind == "dirichlet-small":
        return rng.dirichlet(np.full(c, 0.05), n)
    if kind == "dirichlet-large":
        return rng.dirichlet(np.full(c, 50.0), n)
    if kind == "zeros":
        return np.zeros((n, c))
    if kind == "sum-half":
        return 0.5 * rng.dirichlet(np.ones(c), n)
    if kind == "sum-two":
        return 2.0 * rng.dirichlet(np.ones(c), n)
    raise ValueError(kind)


def _probs(rng, n: int, c: int, scale: float = 3.0) -> np.ndarray:
    x = rng.normal(0, scale, (n, c))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid_cases(seed: int) -> list[Case]:
    F, out = "sigmoid", []
    zs = [0.0, 0.5, 1.0]
    x, z = _grid(_special_values(), zs)
    out.append(_elementwise(F, "extreme/sigmoid/specials", x, z))
    for d in DTYPES:
        x, z = _grid(_finfo_values(d), zs)
        out.append(_elementwise(F, f"extreme/sigmoid/finfo-{d}", x, z, dtypes=(d,)))
        vals = [s for t in thresholds(d).values() for v in (t, -t) for s in _steps(v, d)]
        x, z = _grid(vals, zs)
        out.append(_elementwise(F, f"extreme/sigmoid/exp-thresholds-{d}", x, z, dtypes=(d,)))
    r = _rng(seed, "extreme/sigmoid/large-spread")
    x = np.sign(r.normal(size=(4, 16))) * 10.0 ** r.uniform(-3, 4, (4, 16))
    out.append(_elementwise(F, "extreme/sigmoid/large-spread", x, r.choice(zs, x.shape)))

    r = _rng(seed, "soft_labels/sigmoid/uniform")
    out.append(_elementwise(F, "soft_labels/sigmoid/uniform", r.normal(0, 4, (6, 8)), r.uniform(0, 1, (6, 8))))
    x, z = _grid([-30.0, -10.0, -1.0, 0.0, 1.0, 10.0, 30.0], [1e-6, 0.25, 1 - 1e-6])
    out.append(_elementwise(F, "soft_labels/sigmoid/near-binary", x, z))

    base_x, base_z = _grid([-100.0, -20.0, -2.0, 0.0, 2.0, 20.0, 100.0], zs)
    for q in (0.0, 1e-6, 1e6):
        out.append(_elementwise(F, f"weights/sigmoid/pos_weight-{q:g}", base_x, base_z,
                                params={"pos_weight": np.full(base_x.shape[-1], q)},
                                dtypes=None if q < 1e5 else ("bfloat16", "float32", "float64")))
    r = _rng(seed, "weights/sigmoid/pos_weight-span")
    out.append(_elementwise(F, "weights/sigmoid/pos_weight-span", base_x, base_z,
                            params={"pos_weight": 10.0 ** r.uniform(-6, 6, base_x.shape[-1])},
                            dtypes=("bfloat16", "float32", "float64")))
    wx, wz = _grid([-np.inf, -1e4, -1.0, 0.0, 1.0, 1e4, np.inf], [0.0, 0.5, 1.0])
    out.append(_elementwise(F, "weights/sigmoid/weight-zero", wx, wz, params={"weight": np.zeros(wx.shape)}))
    r = _rng(seed, "weights/sigmoid/weight-span")
    ww = 10.0 ** r.uniform(-6, 6, base_x.shape)
    for red in ("none", "sum", "mean"):
        out.append(_elementwise(F, f"weights/sigmoid/weight-span-{red}", base_x, base_z,
                                params={"weight": ww, "reduction": red}, dtypes=("bfloat16", "float32", "float64")))

    r = _rng(seed, "shapes/sigmoid")
    out.append(_elementwise(F, "shapes/sigmoid/batch1", [[3.5]], [[1.0]]))
    out.append(_elementwise(F, "shapes/sigmoid/empty", np.zeros((0, 3)), np.zeros((0, 3))))
    for red in ("none", "mean"):
        out.append(_elementwise(F, f"shapes/sigmoid/wide-{red}", r.normal(0, 5, (2, LARGE_C)),
                                r.integers(0, 2, (2, LARGE_C)).astype(float), params={"reduction": red}))
    out.append(_elementwise(F, "shapes/sigmoid/empty-mean", np.zeros((0, 3)), np.zeros((0, 3)),
                            params={"reduction": "mean"}))

    r = _rng(seed, "baseline/sigmoid")
    bx, bz = r.normal(0, 3, (8, 6)), r.choice([0.0, 1.0, 0.3], (8, 6))
    for red in ("none", "sum", "mean"):
        out.append(_elementwise(F, f"baseline/sigmoid/random-{red}", bx, bz, params={"reduction": red}))
    out.append(_elementwise(F, "baseline/sigmoid/pos_weight", bx, bz,
                            params={"pos_weight": r.uniform(0.5, 3, 6)}))
    out.append(_elementwise(F, "baseline/sigmoid/weight-mean", bx, bz,
                            params={"weight": r.uniform(0.1, 2, (8, 6)), "reduction": "mean"}))
    out += _smoothing_and_sample_weights(F, bx, bz, seed)
    return out


def binary_cases(seed: int) -> list[Case]:
    F, out = "binary", []
    zs = [0.0, 0.5, 1.0]
    x, z = _grid([0.0, 1e-30, 1e-8, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-8, 1.0], zs)
    out.append(_elementwise(F, "extreme/binary/specials", x, z))
    for d in DTYPES:
        fi = finfo(d)
        one_minus = _steps(1.0, d, (-3, -2, -1))
        vals = [0.0, float(fi.smallest_subnormal), float(fi.tiny), float(fi.eps), 0.5] + one_minus + [1.0]
        x, z = _grid(vals, zs)
        out.append(_elementwise(F, f"extreme/binary/edges-{d}", x, z, dtypes=(d,)))

    r = _rng(seed, "soft_labels/binary/uniform")
    out.append(_elementwise(F, "soft_labels/binary/uniform", r.uniform(0.01, 0.99, (6, 8)), r.uniform(0, 1, (6, 8))))

    r = _rng(seed, "weights/binary")
    bx, bz = _grid([1e-6, 0.1, 0.5, 0.9, 1 - 1e-6], zs)
    px, pz = _grid([0.0, 0.5, 1.0], zs)
    out.append(_elementwise(F, "weights/binary/weight-zero", px, pz, params={"weight": np.zeros(px.shape)}))
    ww = 10.0 ** r.uniform(-6, 6, bx.shape)
    for red in ("none", "sum", "mean"):
        out.append(_elementwise(F, f"weights/binary/weight-span-{red}", bx, bz,
                                params={"weight": ww, "reduction": red}, dtypes=("bfloat16", "float32", "float64")))

    r = _rng(seed, "shapes/binary")
    out.append(_elementwise(F, "shapes/binary/batch1", [[0.25]], [[1.0]]))
    out.append(_elementwise(F, "shapes/binary/empty", np.zeros((0, 3)), np.zeros((0, 3))))
    out.append(_elementwise(F, "shapes/binary/wide-mean", r.uniform(0.001, 0.999, (2, LARGE_C)),
                            r.integers(0, 2, (2, LARGE_C)).astype(float), params={"reduction": "mean"}))

    r = _rng(seed, "baseline/binary")
    bx, bz = r.uniform(0.02, 0.98, (8, 6)), r.choice([0.0, 1.0, 0.3], (8, 6))
    for red in ("none", "sum", "mean"):
        out.append(_elementwise(F, f"baseline/binary/random-{red}", bx, bz, params={"reduction": red}))
    out.append(_elementwise(F, "baseline/binary/weight-mean", bx, bz,
                            params={"weight": r.uniform(0.1, 2, (8, 6)), "reduction": "mean"}))
    out += _smoothing_and_sample_weights(F, bx, bz, seed)
    return out


def _row_case(fam: str, cid: str, x, t, params=None, dtypes=None) -> Case:
    t = np.asarray(t, np.int64 if FAMILIES[fam].targets == "index" else np.float64)
    return Case(cid, fam, np.asarray(x, np.float64), t, dict(params or {}), dtypes)


def _dense_to(fam: str, y: np.ndarray) -> np.ndarray:
    """Dense one-hot rows -> index targets for sparse families (argmax)."""
    return np.argmax(y, axis=-1) if FAMILIES[fam].targets == "index" else y


def logit_rows_cases(fam: str, seed: int) -> list[Case]:
    """Cases for 'softmax' (dense targets) and 'sparse_softmax' (index targets)."""
    out: list[Case] = []
    sparse = FAMILIES[fam].targets == "index"

    def add(cid, x, y_onehot_or_dense, params=None, dtypes=None):
        out.append(_row_case(fam, cid, x, _dense_to(fam, np.asarray(y_onehot_or_dense, float)), params, dtypes))

    e = np.eye(4)
    for H in (1e4, 1e8, 1e30, -1e30):
        x = np.full((2, 4), H)
        add(f"extreme/{fam}/equal-huge-{H:g}", x, np.stack([e[0], e[3]]))
    for d in DTYPES:
        fi = finfo(d)
        M = float(fi.max)
        x = np.array([[M, M, M, M], [M, -M, 0, 1], [-M, -M, -M, -M], [M, 0, 0, 0]])
        add(f"extreme/{fam}/finfo-max-{d}", x, np.stack([e[0], e[1], e[2], e[3]]), dtypes=(d,))
        th = thresholds(d)
        rows = []
        for key in ("exp-overflow", "exp-underflow", "exp-to-zero", "log-eps"):
            for v in _steps(th[key] if key != "log-eps" else -th[key], d, (-1, 0, 1)):
                rows.append([v, 0.0, 0.0, 0.0])
        x = np.array(rows)
        y = np.stack([e[i % 2] for i in range(len(rows))])  # target at the extreme and beside it
        add(f"extreme/{fam}/exp-thresholds-{d}", x, y, dtypes=(d,))
        sub = float(fi.smallest_subnormal)
        x = np.array([[sub, -sub, 0.0, -0.0], [float(fi.tiny), 0.0, -0.0, sub]])
        add(f"extreme/{fam}/subnormal-{d}", x, np.stack([e[0], e[2]]), dtypes=(d,))
    for D in (20.0, 50.0, 100.0, 1e4, 1e30):
        x = np.array([[D, 0, 0, 0], [D, 0, 0, 0]])
        add(f"extreme/{fam}/dominant-{D:g}", x, np.stack([e[0], e[1]]))
    x = np.array([[1e4, -1e4, 0.0, 1.0], [1e30, -1e30, 1.0, 0.0], [30.0, -30.0, 15.0, 0.0]])
    add(f"extreme/{fam}/large-spread", x, np.stack([e[1], e[2], e[2]]))
    inf, nan = np.inf, np.nan
    specials = [
        ([inf, 0, 0, 0], e[0]), ([inf, 0, 0, 0], e[1]), ([-inf, 0, 0, 0], e[1]), ([-inf, 0, 0, 0], e[0]),
        ([inf, inf, 0, 0], e[2]), ([-inf, -inf, -inf, -inf], e[0]), ([nan, 0, 0, 0], e[1]),
        ([-inf, 1, 2, 3], e[3]),
    ]
    for i, (row, y) in enumerate(specials):
        add(f"extreme/{fam}/nonfinite-{i}", np.array([row]), np.array([y]))

    if not sparse:
        r = _rng(seed, f"soft_labels/{fam}")
        x = r.normal(0, 3, (6, 8))
        for kind in ("onehot", "dirichlet-small", "dirichlet-large", "zeros", "sum-half", "sum-two"):
            add(f"soft_labels/{fam}/{kind}", x, _softmax_targets(r, 6, 8, kind))
        add(f"soft_labels/{fam}/neg-inf-zero-target", np.array([[-inf, 0.0, 1.0, 2.0]]), np.array([[0.0, 0.2, 0.3, 0.5]]))

    r = _rng(seed, f"weights/{fam}")
    C = 8
    x = r.normal(0, 3, (6, C))
    y = _softmax_targets(r, 6, C, "onehot" if sparse else "dirichlet-small")
    spans = {"span": np.logspace(-6, 6, C), "zero": np.where(np.arange(C) % 2 == 0, 0.0, 1.0),
             "all-zero": np.zeros(C)}
    for name, cw in spans.items():
        for red in ("none", "sum", "mean"):
            add(f"weights/{fam}/class_weight-{name}-{red}", x, y, params={"class_weight": cw, "reduction": red},
                dtypes=("bfloat16", "float32", "float64") if cw.max() > 6e4 else None)

    r = _rng(seed, f"shapes/{fam}")
    add(f"shapes/{fam}/batch1", r.normal(0, 2, (1, 5)), np.eye(5)[[2]])
    add(f"shapes/{fam}/empty", np.zeros((0, 5)), np.zeros((0, 5)))
    add(f"shapes/{fam}/empty-mean", np.zeros((0, 5)), np.zeros((0, 5)), params={"reduction": "mean"})
    add(f"shapes/{fam}/one-class", r.normal(0, 2, (3, 1)), np.ones((3, 1)))
    add(f"shapes/{fam}/two-classes", r.normal(0, 4, (4, 2)), np.eye(2)[[0, 1, 1, 0]])
    big = r.normal(0, 5, (2, LARGE_C))
    yb = onehot([7, LARGE_C - 1], LARGE_C) if sparse else _softmax_targets(r, 2, LARGE_C, "dirichlet-small")
    for red in ("none", "mean"):
        add(f"shapes/{fam}/classes-{LARGE_C}-{red}", big, yb, params={"reduction": red})

    r = _rng(seed, f"baseline/{fam}")
    x = r.normal(0, 3, (8, 10))
    y = _softmax_targets(r, 8, 10, "onehot" if sparse else "dirichlet-large")
    for red in ("none", "sum", "mean"):
        add(f"baseline/{fam}/random-{red}", x, y, params={"reduction": red})
    add(f"baseline/{fam}/class_weight-mean", x, y, params={"class_weight": r.uniform(0.2, 3, 10), "reduction": "mean"})
    yt = _dense_to(fam, y)
    out += _smoothing_and_sample_weights(fam, x, yt, seed)
    if sparse:
        out += ignore_index_cases(fam, x, yt, seed)
    for red in ("none", "mean"):
        add(f"weights/{fam}/class_weight-label_smoothing-{red}", x, y,
            params={"class_weight": r.uniform(0.2, 3, 10), "label_smoothing": 0.1, "reduction": red})
    D = np.array([[20.0, 0, 0, 0], [50.0, 0, 0, 0], [1e4, 0, 0, 0]])
    add(f"extreme/{fam}/label_smoothing-dominant", D, np.eye(4)[[0, 0, 1]], params={"label_smoothing": 0.25})
    return out


def prob_rows_cases(F: str, seed: int) -> list[Case]:
    """Cases for 'categorical' (dense targets) and 'sparse_categorical' (index targets)."""
    out: list[Case] = []
    e = np.eye(4)
    sparse = FAMILIES[F].targets == "index"

    def add(cid, p, y, params=None, dtypes=None):
        y = np.asarray(y, float)
        one_hot = y.shape[0] == 0 or (np.all(y.max(axis=-1) == 1) and np.all(y.sum(axis=-1) == 1))
        if sparse and not one_hot:
            return  # soft targets have no index form
        out.append(_row_case(F, cid, p, _dense_to(F, y), params, dtypes))

    add(f"extreme/{F}/zero-prob", np.array([[0.0, 0.5, 0.5, 0.0], [0.0, 0.5, 0.5, 0.0]]), np.stack([e[1], e[0]]))
    add(f"extreme/{F}/one-hot-probs", np.array([[1.0, 0.0, 0.0, 0.0]] * 2), np.stack([e[0], e[1]]))
    add(f"extreme/{F}/tiny-probs", np.array([[1 - 3e-30, 1e-30, 1e-30, 1e-30], [1 - 3e-8, 1e-8, 1e-8, 1e-8]]),
        np.stack([e[1], e[1]]))
    for d in DTYPES:
        fi = finfo(d)
        sub, tiny = float(fi.smallest_subnormal), float(fi.tiny)
        add(f"extreme/{F}/subnormal-{d}", np.array([[sub, tiny, 0.5, 0.5 - tiny - sub]]), np.array([e[0]]),
            dtypes=(d,))
    r = _rng(seed, f"soft_labels/{F}")
    p = _probs(r, 6, 8)
    for kind in ("onehot", "dirichlet-small", "dirichlet-large", "zeros", "sum-half", "sum-two"):
        add(f"soft_labels/{F}/{kind}", p, _softmax_targets(r, 6, 8, kind))
    r = _rng(seed, f"weights/{F}")
    p, y = _probs(r, 6, 8), _softmax_targets(r, 6, 8, "onehot" if sparse else "dirichlet-small")
    for red in ("none", "sum", "mean"):
        add(f"weights/{F}/class_weight-span-{red}", p, y,
            params={"class_weight": np.logspace(-6, 6, 8), "reduction": red}, dtypes=("bfloat16", "float32", "float64"))
    r = _rng(seed, f"shapes/{F}")
    add(f"shapes/{F}/batch1", _probs(r, 1, 5), np.eye(5)[[2]])
    add(f"shapes/{F}/empty", np.zeros((0, 5)), np.zeros((0, 5)))
    add(f"shapes/{F}/one-class", np.ones((3, 1)), np.ones((3, 1)))
    add(f"shapes/{F}/two-classes", _probs(r, 4, 2), np.eye(2)[[0, 1, 1, 0]])
    add(f"shapes/{F}/classes-{LARGE_C}", _probs(r, 2, LARGE_C, 2.0),
        onehot([3, LARGE_C - 2], LARGE_C) if sparse else _softmax_targets(r, 2, LARGE_C, "dirichlet-small"))
    r = _rng(seed, f"baseline/{F}")
    p, y = _probs(r, 8, 10), _softmax_targets(r, 8, 10, "onehot" if sparse else "dirichlet-large")
    for red in ("none", "sum", "mean"):
        add(f"baseline/{F}/random-{red}", p, y, params={"reduction": red})
    out += _smoothing_and_sample_weights(F, p, _dense_to(F, y), seed)
    if sparse:
        out += ignore_index_cases(F, p, _dense_to(F, y), seed)
    return out


def _smoothing_and_sample_weights(fam: str, x: np.ndarray, t: np.ndarray, seed: int) -> list[Case]:
    """label_smoothing (0.1, and 0.25, exact in every dtype) and sample weights (zeros, and a
    spread over 1e-3..1e3) under every reduction, on a baseline input of the family."""
    r = _rng(seed, f"weights/{fam}/sample_weight")
    sw = 10.0 ** r.uniform(-3, 3, x.shape[:-1])
    sw.flat[0] = 0.0
    out = [Case(f"baseline/{fam}/label_smoothing-{eps:g}", fam, x, t, {"label_smoothing": eps}, None)
           for eps in (0.1, 0.25)]
    for red in ("none", "sum", "mean"):
        out.append(Case(f"weights/{fam}/sample_weight-{red}", fam, x, t, {"sample_weight": sw, "reduction": red},
                        ("bfloat16", "float32", "float64")))
    out.append(Case(f"soft_labels/{fam}/label_smoothing-sample_weight-mean", fam, x, t,
                    {"label_smoothing": 0.1, "sample_weight": sw, "reduction": "mean"}, None))
    # a degenerate denominator: every sample weight zero (a weighted mean is undefined)
    out.append(Case(f"shapes/{fam}/sample_weight-all-zero-mean", fam, x, t,
                    {"sample_weight": np.zeros(x.shape[:-1]), "reduction": "mean"}, None))
    return out


def ignore_index_cases(fam: str, x: np.ndarray, k: np.ndarray, seed: int) -> list[Case]:
    """ignore_index: targets of -100 (PyTorch's default) or of a real class; with class weights;
    and a batch where every target is ignored (the mean is undefined)."""
    out = []
    k = np.asarray(k).copy()
    k100 = k.copy()
    k100[::3] = -100
    for red in ("none", "sum", "mean"):
        out.append(Case(f"weights/{fam}/ignore_index--100-{red}", fam, x, k100, {"ignore_index": -100, "reduction": red}))
    ignore_class = int(k[0])
    out.append(Case(f"weights/{fam}/ignore_index-class-mean", fam, x, k, {"ignore_index": ignore_class, "reduction": "mean"}))
    r = _rng(seed, f"weights/{fam}/ignore_index")
    out.append(Case(f"weights/{fam}/ignore_index-class_weight-mean", fam, x, k100,
                    {"ignore_index": -100, "class_weight": r.uniform(0.2, 3, x.shape[-1]), "reduction": "mean"}))
    out.append(Case(f"shapes/{fam}/all-ignored-mean", fam, x, np.full_like(k, -100), {"ignore_index": -100, "reduction": "mean"}))
    return out


def focal_cases(F: str, seed: int) -> list[Case]:
    """Focal families: gamma 0 (plain cross-entropy), 0.5, 2, 5; alpha; extreme logits and
    probabilities; label smoothing (applied to the targets); sample weights under each reduction."""
    fam = FAMILIES[F]
    logits = fam.inputs == "logits"
    out: list[Case] = []
    r = _rng(seed, f"baseline/{F}")
    if fam.rowwise:
        x = r.normal(0, 3, (8, 6)) if logits else _probs(r, 8, 6)
        t = _softmax_targets(r, 8, 6, "onehot")
        soft = _softmax_targets(r, 8, 6, "dirichlet-large")
    else:
        x = r.normal(0, 3, (8, 6)) if logits else r.uniform(0.02, 0.98, (8, 6))
        t = r.choice([0.0, 1.0], (8, 6))
        soft = r.uniform(0, 1, (8, 6))

    def add(cid, x, t, params=None, dtypes=None):
        out.append(Case(cid, F, np.asarray(x, np.float64), np.asarray(t, np.float64), dict(params or {}), dtypes))

    for red in ("none", "sum", "mean"):
        add(f"baseline/{F}/random-{red}", x, t, {"reduction": red})
    for g in (0.0, 0.5, 5.0):
        add(f"baseline/{F}/gamma-{g:g}", x, t, {"gamma": g})
    for a in (0.25, 0.9):
        add(f"baseline/{F}/alpha-{a:g}", x, t, {"alpha": a, "gamma": 2.0})
    add(f"soft_labels/{F}/soft-targets", x, soft, {"alpha": 0.25})
    for eps in (0.1, 0.25):
        add(f"soft_labels/{F}/label_smoothing-{eps:g}", x, t, {"label_smoothing": eps, "alpha": 0.25})
    sw = 10.0 ** r.uniform(-3, 3, x.shape[:-1])
    sw.flat[0] = 0.0
    for red in ("none", "sum", "mean"):
        add(f"weights/{F}/sample_weight-{red}", x, t, {"sample_weight": sw, "alpha": 0.25, "reduction": red},
            ("bfloat16", "float32", "float64"))
    add(f"shapes/{F}/sample_weight-all-zero-mean", x, t, {"sample_weight": np.zeros(x.shape[:-1]), "reduction": "mean"})
    add(f"shapes/{F}/empty-mean", np.zeros((0, 4)), np.zeros((0, 4)), {"reduction": "mean"})
    add(f"shapes/{F}/batch1", x[:1], t[:1])
    if fam.rowwise:
        xw = r.normal(0, 5, (2, LARGE_C)) if logits else _probs(r, 2, LARGE_C, 2.0)
        add(f"shapes/{F}/classes-{LARGE_C}-mean", xw, onehot([7, LARGE_C - 1], LARGE_C), {"reduction": "mean"})
        add(f"shapes/{F}/one-class", x[:3, :1] if logits else np.ones((3, 1)), np.ones((3, 1)))
        x2 = r.normal(0, 4, (4, 2)) if logits else _probs(r, 4, 2)
        add(f"shapes/{F}/two-classes", x2, np.eye(2)[[0, 1, 1, 0]])
    else:
        xw = r.normal(0, 5, (2, LARGE_C)) if logits else r.uniform(0.001, 0.999, (2, LARGE_C))
        add(f"shapes/{F}/wide-mean", xw, r.integers(0, 2, (2, LARGE_C)).astype(float), {"reduction": "mean"})
    if not fam.rowwise and logits:
        zs = [0.0, 0.5, 1.0]
        gx, gz = _grid(_special_values(), zs)
        add(f"extreme/{F}/specials", gx, gz, {"alpha": 0.25})
        for d in DTYPES:
            vals = [v for th in thresholds(d).values() for v in (th, -th)] + _finfo_values(d)
            gx, gz = _grid(vals, zs)
            add(f"extreme/{F}/thresholds-{d}", gx, gz, {"gamma": 2.0}, (d,))
    elif not fam.rowwise:
        for d in DTYPES:
            fi = finfo(d)
            vals = [0.0, float(fi.smallest_subnormal), float(fi.tiny), float(fi.eps), 0.5] + _steps(1.0, d, (-2, -1)) + [1.0]
            gx, gz = _grid(vals, [0.0, 0.5, 1.0])
            add(f"extreme/{F}/edges-{d}", gx, gz, {"alpha": 0.25}, (d,))
    elif logits:
        e = np.eye(4)
        for D in (20.0, 100.0, 1e4, 1e30):
            add(f"extreme/{F}/dominant-{D:g}", np.array([[D, 0, 0, 0], [D, 0, 0, 0]]), np.stack([e[0], e[1]]))
        inf, nan = np.inf, np.nan
        rows = np.array([[inf, 0, 0, 0], [inf, 0, 0, 0], [-inf, 0, 0, 0], [nan, 0, 0, 0], [-1e30, 1e30, 0, 0]])
        add(f"extreme/{F}/nonfinite", rows, np.stack([e[0], e[1], e[0], e[1], e[1]]))
    else:
        e = np.eye(4)
        add(f"extreme/{F}/zero-and-one-probs", np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0.5, 0.5, 0, 0]]),
            np.stack([e[0], e[1], e[2]]))
        add(f"extreme/{F}/tiny-probs", np.array([[1 - 3e-30, 1e-30, 1e-30, 1e-30], [1 - 3e-8, 1e-8, 1e-8, 1e-8]]),
            np.stack([e[1], e[0]]))
    return out


def axis_cases(seed: int) -> list[Case]:
    """`axis`: K-dimensional inputs with the class axis at 1 (PyTorch's layout), and the class
    axis first; for the elementwise families, the axis a per-sample mean runs over."""
    out: list[Case] = []
    r = _rng(seed, "shapes/axis")
    x3 = r.normal(0, 3, (3, 5, 4))  # (N, C, d1)
    k3 = r.integers(0, 5, (3, 4))
    y3 = np.moveaxis(onehot(k3, 5), -1, 1)
    x4 = r.normal(0, 3, (2, 4, 3, 2))  # (N, C, d1, d2)
    k4 = r.integers(0, 4, (2, 3, 2))
    y4 = np.moveaxis(r.dirichlet(np.ones(4), (2, 3, 2)), -1, 1)
    cw = r.uniform(0.2, 3, 5)
    for red in ("none", "sum", "mean"):
        out.append(_row_case("sparse_softmax", f"shapes/sparse_softmax/axis1-3d-{red}", x3, k3, {"axis": 1, "reduction": red}))
        out.append(_row_case("softmax", f"shapes/softmax/axis1-3d-{red}", x3, y3, {"axis": 1, "reduction": red}))
    out.append(_row_case("sparse_softmax", "shapes/sparse_softmax/axis1-3d-class_weight-mean", x3, k3,
                         {"axis": 1, "class_weight": cw, "reduction": "mean"}))
    k3i = k3.copy()
    k3i[0, :2] = -100
    out.append(_row_case("sparse_softmax", "shapes/sparse_softmax/axis1-3d-ignore_index-mean", x3, k3i,
                         {"axis": 1, "ignore_index": -100, "class_weight": cw, "reduction": "mean"}))
    out.append(_row_case("softmax", "shapes/softmax/axis1-3d-label_smoothing-mean", x3, y3,
                         {"axis": 1, "label_smoothing": 0.1, "class_weight": cw, "reduction": "mean"}))
    out.append(_row_case("sparse_softmax", "shapes/sparse_softmax/axis1-4d", x4, k4, {"axis": 1}))
    out.append(_row_case("softmax", "shapes/softmax/axis1-4d", x4, y4, {"axis": 1}))
    out.append(_row_case("softmax", "shapes/softmax/axis0", x3[:, :, 0], y3[:, :, 0], {"axis": 0}))
    out.append(_row_case("sparse_softmax", "shapes/sparse_softmax/axis0", x3[:, :, 0].T.copy(), k3[:, 0], {"axis": 0}))
    p3 = np.exp(x3) / np.exp(x3).sum(axis=1, keepdims=True)
    out.append(_row_case("categorical", "shapes/categorical/axis1-3d", p3, y3, {"axis": 1}))
    out.append(_row_case("sparse_categorical", "shapes/sparse_categorical/axis1-3d", p3, k3, {"axis": 1}))
    out.append(_row_case("categorical", "shapes/categorical/axis1-3d-sample_weight-mean", p3, y3,
                         {"axis": 1, "sample_weight": r.uniform(0.1, 2, (3, 4)), "reduction": "mean"}))
    z3 = r.choice([0.0, 1.0], x3.shape)
    out.append(_elementwise("sigmoid", "shapes/sigmoid/axis1-3d", x3, z3, params={"axis": 1}))
    out.append(_elementwise("sigmoid", "shapes/sigmoid/axis1-3d-sample_weight-mean", x3, z3,
                            params={"axis": 1, "sample_weight": r.uniform(0.1, 2, (3, 4)), "reduction": "mean"}))
    out.append(_elementwise("binary", "shapes/binary/axis0", 1 / (1 + np.exp(-x3[:, :, 0])), z3[:, :, 0],
                            params={"axis": 0}))
    out.append(Case("shapes/softmax_focal/axis1-3d", "softmax_focal", x3, y3, {"axis": 1, "alpha": 0.5}))
    out.append(Case("shapes/sigmoid_focal/axis0", "sigmoid_focal", x3[:, :, 0], z3[:, :, 0], {"axis": 0}))
    return out


def where_cases(seed: int) -> list[Case]:
    """optax's `where`: classes left out of the softmax (per class, or whole rows), including
    left-out non-finite logits, a row with nothing left and a left-out index target."""
    out: list[Case] = []
    r = _rng(seed, "weights/where")
    x = r.normal(0, 3, (6, 5))
    k = np.array([0, 1, 2, 3, 4, 0])
    y = r.dirichlet(np.ones(5), 6)
    wh = r.uniform(size=(6, 5)) > 0.35
    wh[np.arange(6), k] = True  # every index target kept ...
    wh[5] = False  # ... but row 5 has nothing left
    wk = wh.copy()
    wk[1, 1] = False  # and row 1's target left out
    out.append(_row_case("softmax", "weights/softmax/where-classes", x, y, {"where": wh}))
    out.append(_row_case("sparse_softmax", "weights/sparse_softmax/where-classes", x, k, {"where": wh}))
    out.append(_row_case("sparse_softmax", "weights/sparse_softmax/where-target-left-out", x, k, {"where": wk}))
    rows = np.array([True, False, True, True, False, True])
    out.append(_row_case("softmax", "weights/softmax/where-rows", x, y, {"where": rows}))
    out.append(_row_case("sparse_softmax", "weights/sparse_softmax/where-rows", x, k, {"where": rows}))
    inf, nan = np.inf, np.nan
    xs = np.array([[nan, 0.0, 1.0, 2.0], [inf, 0.0, 1.0, 2.0], [1e30, -1e30, 0.0, 1.0]])
    ws = np.array([[False, True, True, True], [False, True, True, True], [False, True, True, True]])
    out.append(_row_case("softmax", "extreme/softmax/where-nonfinite-left-out", xs, np.eye(4)[[1, 2, 3]], {"where": ws}))
    out.append(_row_case("sparse_softmax", "extreme/sparse_softmax/where-nonfinite-left-out", xs, [1, 2, 3], {"where": ws}))
    x3 = r.normal(0, 3, (2, 5, 3))
    w3 = r.uniform(size=x3.shape) > 0.3
    w3[:, 0, :] = True
    out.append(_row_case("sparse_softmax", "weights/sparse_softmax/where-axis1", x3, np.zeros((2, 3), int),
                         {"where": w3, "axis": 1}))
    out.append(_row_case("softmax", "weights/softmax/where-poly", x, y, {"where": wh, "poly_epsilon": 2.0}))
    return out


def poly_cases(seed: int) -> list[Case]:
    """Poly-1 (optax.poly_loss_cross_entropy): epsilon 2 (classification), -1 (detection, the
    Poly-1 term cancels the first order of -log p) and -3."""
    out: list[Case] = []
    r = _rng(seed, "baseline/softmax/poly")
    x, y = r.normal(0, 3, (8, 10)), _softmax_targets(r, 8, 10, "onehot")
    soft = _softmax_targets(r, 8, 10, "dirichlet-large")
    e = np.eye(4)
    D = np.array([[1e-9, 0, 0, 0], [5.0, 0, 0, 0], [20.0, 0, 0, 0], [1e4, 0, 0, 0], [np.inf, 0, 0, 0],
                  [-1e4, 0, 0, 0]])
    for eps in (2.0, -1.0, -3.0):
        out.append(_row_case("softmax", f"baseline/softmax/poly-{eps:g}", x, y, {"poly_epsilon": eps}))
        out.append(_row_case("softmax", f"extreme/softmax/poly-{eps:g}-dominant", D,
                             np.stack([e[0]] * 5 + [e[1]]), {"poly_epsilon": eps}))
    out.append(_row_case("softmax", "soft_labels/softmax/poly-2-soft", x, soft, {"poly_epsilon": 2.0}))
    out.append(_row_case("softmax", "soft_labels/softmax/poly-2-label_smoothing", x, y,
                         {"poly_epsilon": 2.0, "label_smoothing": 0.1}))
    return out


def sampled_cases(F: str, seed: int) -> list[Case]:
    """tf.nn.sampled_softmax_loss / nce_loss with fixed sampled values: accidental hits kept and
    removed, num_true 1 and 3, imbalanced expected counts, large logits, a zero expected count,
    an empty batch, and 32768 classes."""
    out: list[Case] = []

    def add(cid, x, labels, W, b, s, qt, qs, hits=None, red=None, dtypes=None):
        p = {"output_weights": np.asarray(W, np.float64), "output_biases": np.asarray(b, np.float64),
             "sampled": np.asarray(s, np.int64), "true_expected_count": np.asarray(qt, np.float64),
             "sampled_expected_count": np.asarray(qs, np.float64)}
        if hits is not None:
            p["remove_accidental_hits"] = hits
        if red is not None:
            p["reduction"] = red
        out.append(Case(cid, F, np.asarray(x, np.float64), np.asarray(labels, np.int64), p, dtypes))

    r = _rng(seed, f"baseline/{F}")
    N, d, C, S = 6, 4, 12, 5
    x, W, b = r.normal(0, 1, (N, d)), r.normal(0, 1, (C, d)), r.normal(0, 0.5, C)
    lab = r.integers(0, C, (N, 1))
    s = np.array([1, 3, 5, 7, 9])
    lab[0, 0] = 3  # an accidental hit in row 0
    qt, qs = r.uniform(0.05, 0.9, (N, 1)), r.uniform(0.05, 0.9, S)
    for red in ("none", "sum", "mean"):
        add(f"baseline/{F}/random-{red}", x, lab, W, b, s, qt, qs, red=red)
    for hits in (False, True):
        add(f"weights/{F}/remove_accidental_hits-{str(hits).lower()}", x, lab, W, b, s, qt, qs, hits=hits)
    add(f"weights/{F}/expected-count-span", x, lab, W, b, s, 10.0 ** r.uniform(-6, 0, (N, 1)),
        10.0 ** r.uniform(-6, 0, S), dtypes=("bfloat16", "float32", "float64"))
    lab3 = np.stack([r.choice(C, 3, replace=False) for _ in range(N)])
    lab3[1] = [1, 3, 4]
    add(f"soft_labels/{F}/num_true-3", x, lab3, W, b, s, r.uniform(0.05, 0.9, (N, 3)), qs, hits=True)
    add(f"soft_labels/{F}/num_true-3-hits-kept", x, lab3, W, b, s, r.uniform(0.05, 0.9, (N, 3)), qs, hits=False)
    add(f"extreme/{F}/large-logits", x, lab, 1e3 * W, b, s, qt, qs)
    qt0 = qt.copy()
    qt0[1, 0] = 0.0
    add(f"extreme/{F}/zero-expected-count", x, lab, W, b, s, qt0, qs)
    add(f"extreme/{F}/every-sample-a-hit", x[:2], [[1], [3]], W, b, [1, 1, 3], [[0.5], [0.5]], [0.5, 0.5, 0.5],
        hits=True)
    add(f"shapes/{F}/empty", np.zeros((0, d)), np.zeros((0, 1), np.int64), W, b, s, np.zeros((0, 1)), qs)
    add(f"shapes/{F}/empty-mean", np.zeros((0, d)), np.zeros((0, 1), np.int64), W, b, s, np.zeros((0, 1)), qs,
        red="mean")
    add(f"shapes/{F}/batch1", x[:1], lab[:1], W, b, s, qt[:1], qs)
    Wl, bl = r.normal(0, 1, (LARGE_C, d)), r.normal(0, 0.5, LARGE_C)
    sl = r.choice(LARGE_C, 64, replace=False)
    add(f"shapes/{F}/classes-{LARGE_C}", x, r.integers(0, LARGE_C, (N, 1)), Wl, bl, sl,
        r.uniform(0.001, 0.01, (N, 1)), r.uniform(0.001, 0.01, 64))
    return out


INVALID = "invalid"  # inputs outside the losses' domain (harness.badinput), float32 only
INVALID_DTYPES = ("float32",)


def _valid_base(F: str, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """A small valid case of family F (4 rows, 3 classes) that each invalid kind then breaks."""
    fam = FAMILIES[F]
    N, C = 4, 3
    if F in ("sampled_softmax", "nce"):
        d, K, S = 3, 6, 3
        p = {"output_weights": r.normal(0, 1, (K, d)), "output_biases": r.normal(0, 0.5, K),
             "sampled": np.array([0, 2, 4]), "true_expected_count": np.full((N, 1), 0.3),
             "sampled_expected_count": np.full(S, 0.3)}
        return np.round(r.normal(0, 1, (N, d)), 3), r.integers(0, K, (N, 1)), p
    if fam.inputs == "probabilities":
        x = _probs(r, N, C, 1.0) if fam.rowwise else r.uniform(0.05, 0.95, (N, C))
    else:
        x = r.normal(0, 3, (N, C))
    x = np.round(x, 3) if not fam.rowwise or fam.inputs == "logits" else x
    if fam.targets == "index":
        t = r.integers(0, C, N)
    elif fam.rowwise:
        t = onehot(r.integers(0, C, N), C)
    else:
        t = r.choice([0.0, 0.25, 1.0], (N, C))
    p = {"gamma": 2.0} if F in ("sigmoid_focal", "binary_focal", "softmax_focal", "categorical_focal") else {}
    return x, t, p


def _break(kind: str, F: str, x, t, p, r) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    """(id suffix, inputs, targets, params) of the invalid variants of one kind."""
    fam = FAMILIES[F]
    x, t, p = x.copy(), t.copy(), dict(p)
    C = np.shape(p["output_weights"])[0] if F in ("sampled_softmax", "nce") else x.shape[-1]
    N = x.shape[0]
    one = (1, 0) if t.ndim == 2 else (1,)
    if kind.startswith("index_"):
        t[one] = {"index_eq_C": C, "index_gt_C": C + 3, "index_minus_1": -1, "index_below_minus_C": -C - 1,
                  "index_negative": -2}[kind]
        return [("", x, t, p)]
    if kind in ("target_above_1", "target_below_0", "nan_target"):
        t[1, 1] = {"target_above_1": 1.5, "target_below_0": -0.5, "nan_target": np.nan}[kind]
        return [("", x, t, p)]
    if kind == "negative_soft_target":
        t[1] = [1.5, -0.5, 0.0]
        return [("", x, t, p)]
    if kind in ("prob_above_1", "prob_below_0", "nan_prob"):
        if fam.rowwise:
            x[1] = {"prob_above_1": [1.5, -0.25, -0.25], "prob_below_0": [-0.2, 0.6, 0.6],
                    "nan_prob": [np.nan, 0.5, 0.5]}[kind]
        else:
            x[1, 1] = {"prob_above_1": 1.5, "prob_below_0": -0.2, "nan_prob": np.nan}[kind]
        return [("", x, t, p)]
    if kind == "shape_targets":
        return [("", x, t[:-1], p)]
    if kind == "shape_targets_broadcast":
        if fam.targets == "index":
            return [("", x, t[:, None], p)]
        if fam.rowwise:
            return [("", x, t[:1], p)]
        return [("", x[:, :1], t[:, 0], p)]
    if kind in ("shape_weight", "negative_weight"):
        out = []
        for k in ("weight", "sample_weight", "class_weight"):
            if k not in fam.params or (kind == "shape_weight" and k == "class_weight"):
                continue
            shape = {"weight": x.shape, "sample_weight": x.shape[:-1], "class_weight": (C,)}[k]
            w = np.round(r.uniform(0.5, 2.0, shape), 3)
            if kind == "shape_weight":
                w = np.concatenate([w, w[..., :1]], axis=-1)
            else:
                w[(1,) * w.ndim] = -2.0
            out.append((f"-{k}", x, t, {**p, k: w}))
        return out
    if kind in ("shape_pos_weight", "negative_pos_weight"):
        return [("", x, t, {**p, "pos_weight": np.array([1.0, 2.0, 0.5, 1.0]) if kind == "shape_pos_weight"
                            else np.array([1.0, -2.0, 1.0])})]
    if kind == "shape_class_weight":
        return [("", x, t, {**p, "class_weight": np.array([1.0, 2.0, 0.5, 1.0])})]
    if kind == "axis_out_of_range":
        return [("", x, t, {**p, "axis": x.ndim})]
    if kind in ("int_inputs", "bool_inputs"):
        if fam.inputs == "probabilities":
            xi = onehot(r.integers(0, C, N), C) if fam.rowwise else r.integers(0, 2, x.shape).astype(np.float64)
        else:
            xi = r.integers(-3, 4, x.shape).astype(np.float64)
            if kind == "bool_inputs":
                xi = np.abs(np.sign(xi))
        return [("", xi, t, p)]
    if kind == "empty_classes":
        return [("", x[:, :0], t[:, :0] if fam.targets == "dense" else np.zeros(N, np.int64), p)]
    if kind in ("label_smoothing_above_1", "label_smoothing_negative"):
        return [("", x, t, {**p, "label_smoothing": 1.5 if kind.endswith("above_1") else -0.2})]
    raise ValueError(f"no generator for invalid kind {kind!r}")  # pragma: no cover


#: a second copy of each invalid case with the parameter some APIs always apply (Keras' class-balanced
#: focal losses require alpha; optax's poly_loss_cross_entropy requires its epsilon), so that every
#: API meets the invalid kinds
INVALID_VARIANTS = {"sigmoid_focal": (("alpha", {"alpha": 0.25}),), "binary_focal": (("alpha", {"alpha": 0.25}),),
                    "softmax": (("poly", {"poly_epsilon": 2.0}),)}


def invalid_cases(seed: int) -> list[Case]:
    """One case per (family, invalid kind, weight parameter) of harness.badinput.KINDS, each a
    small valid case broken in one way, unreduced and with a mean; float32 only (what an API
    does with bad input does not depend on the float format), and again with the parameter some
    APIs require (INVALID_VARIANTS). Ids: invalid/<family>/<kind>[-weight param][-variant]-<reduction>."""
    from harness.badinput import KINDS, violations

    out: list[Case] = []
    for kind in KINDS.values():
        for F in kind.families:
            x0, t0, p0 = _valid_base(F, _rng(seed, f"{INVALID}/{F}"))
            variants = [("", {})] + [(f"-{name}", extra) for name, extra in INVALID_VARIANTS.get(F, ())]
            for vname, extra in variants:
                broken = _break(kind.name, F, x0, t0, {**p0, **extra}, _rng(seed, f"{INVALID}/{F}/{kind.name}"))
                for suffix, x, t, p in broken:
                    for red in ("none", "mean"):
                        c = Case(f"{INVALID}/{F}/{kind.name}{suffix}{vname}-{red}", F, np.asarray(x, np.float64),
                                 np.asarray(t), {**p, "reduction": red}, INVALID_DTYPES, None, kind.name)
                        assert kind.name in violations(F, *c.in_dtype("float32")), c.id
                        out.append(c)
    return out


#: the targets of every exhaustive case: {0, 1} and a grid of soft targets
EXHAUSTIVE_TARGETS = (0.0, 1.0, 0.1, 0.25, 0.5, 0.75, 0.9)
EXHAUSTIVE_DTYPES = ("float16", "bfloat16")
EXHAUSTIVE_POS_WEIGHT = 10.0
#: the focal domains run with and without alpha (the class-balanced variants require one)
EXHAUSTIVE_ALPHA = 0.25


def all_values(dtype: str, unit_interval: bool = False) -> np.ndarray:
    """Every finite value of a 16-bit `dtype` as float64, in bit-pattern order (+-0 and the
    subnormals included; the non-finite patterns, +-inf and the NaNs, are the specials cases'
    business); `unit_interval`: only the values in [0, 1] (and -0)."""
    bits = np.arange(2 ** 16, dtype=np.uint32).astype(UINT[dtype])
    with np.errstate(invalid="ignore"):  # NaN patterns stay NaN
        v = bits.view(np_dtype(dtype)).astype(np.float64)
    v = v[np.isfinite(v)]
    if unit_interval:
        v = v[(v >= 0) & (v <= 1)]  # -0.0 == 0 is kept
    return v


def exhaustive_cases() -> list[Case]:
    """Every finite float16 and bfloat16 input x (probability families: every one in [0, 1]) against
    each of EXHAUSTIVE_TARGETS, unreduced, for each elementwise family (sigmoid with and without
    pos_weight, binary, and the focal variants with gamma = 2, with and without alpha). Inputs shaped (n, 1), so a last-axis
    mean (Keras) keeps each element its own output. A row of these cases is certified: its max ULP
    is over every input of the domain."""
    out = []
    for d in EXHAUSTIVE_DTYPES:
        for fam, name, params in (
                ("sigmoid", "all", {}),
                ("sigmoid", f"pos_weight-{EXHAUSTIVE_POS_WEIGHT:g}-all", {"pos_weight": np.array([EXHAUSTIVE_POS_WEIGHT])}),
                ("binary", "unit-interval", {}),
                ("sigmoid_focal", "all", {"gamma": 2.0}),
                ("sigmoid_focal", f"alpha-{EXHAUSTIVE_ALPHA:g}-all", {"gamma": 2.0, "alpha": EXHAUSTIVE_ALPHA}),
                ("binary_focal", "unit-interval", {"gamma": 2.0}),
                ("binary_focal", f"alpha-{EXHAUSTIVE_ALPHA:g}-unit-interval", {"gamma": 2.0, "alpha": EXHAUSTIVE_ALPHA})):
            v = all_values(d, unit_interval=FAMILIES[fam].inputs == "probabilities")
            x = np.tile(v, len(EXHAUSTIVE_TARGETS))[:, None]
            z = np.repeat(np.asarray(EXHAUSTIVE_TARGETS), v.size)[:, None]
            out.append(Case(f"{EXHAUSTIVE}/{fam}/{name}-{d}", fam, x, z, dict(params), (d,)))
    return out


def found_cases(directory: str = FOUND_DIR) -> list[Case]:
    """The cases `xentc explore` appended to directory/*.json (M1 case-file format), file by file."""
    out: list[Case] = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        out += load_cases(path)
    return out


#: the scale case: a language model's batch of tokens over its vocabulary
LARGE_ROWS, LARGE_CLASSES = 4096, 131072


def large_cases(seed: int = 0) -> list[Case]:
    """Sparse softmax cross-entropy over 4,096 rows x 131,072 classes, float32, unreduced: its
    reference and grading run a block of rows at a time (harness.chunked). Not in build_corpus
    (each API's call moves 2 GiB of logits and 2 GiB of gradient): `xentc run --large` adds it.
    The logits are held as float32 (the values every API receives), half the memory of float64.
    Rows: standard normal logits times 4; every 64th row has one confident logit (+40) on a class
    other than its target, every 64th from row 32 a confident one (+40) on its target."""
    cid = f"shapes/sparse_softmax/large-{LARGE_ROWS}x{LARGE_CLASSES}"
    r = _rng(seed, cid)
    x = r.standard_normal((LARGE_ROWS, LARGE_CLASSES), dtype=np.float32)
    x *= np.float32(4)
    k = r.integers(0, LARGE_CLASSES, LARGE_ROWS)
    wrong = np.arange(0, LARGE_ROWS, 64)
    x[wrong, (k[wrong] + 1) % LARGE_CLASSES] = 40
    right = np.arange(32, LARGE_ROWS, 64)
    x[right, k[right]] = 40
    return [Case(cid, "sparse_softmax", x, k.astype(np.int64), {}, ("float32",))]


def build_corpus(seed: int = 0, *, exhaustive: bool = True, found: bool = True, invalid: bool = True) -> list[Case]:
    """Every built-in case, in a fixed order: the seeded corpus, then the exhaustive cases, the
    found ones, and the invalid ones (their own conformance dimension, harness.badinput)."""
    cases = (sigmoid_cases(seed) + binary_cases(seed) + logit_rows_cases("softmax", seed)
             + logit_rows_cases("sparse_softmax", seed) + prob_rows_cases("categorical", seed)
             + prob_rows_cases("sparse_categorical", seed)
             + [c for f in ("sigmoid_focal", "binary_focal", "softmax_focal", "categorical_focal")
                for c in focal_cases(f, seed)]
             + axis_cases(seed) + where_cases(seed) + poly_cases(seed)
             + sampled_cases("sampled_softmax", seed) + sampled_cases("nce", seed)
             + (exhaustive_cases() if exhaustive else []) + (found_cases() if found else [])
             + (invalid_cases(seed) if invalid else []))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids in the corpus"
    return cases
