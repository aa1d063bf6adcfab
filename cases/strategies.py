"""Hypothesis strategies over the space the built-in corpus samples (cases/generator.py):
extreme logits (the exp/log1p regime thresholds of every dtype, +-inf, nan, subnormals,
-0.0, huge values up to each dtype's max), soft labels, imbalanced weights (pos_weight,
weight, class_weight, including 0 and 1e-6..1e6), every reduction, and edge shapes (empty
batch, one class, two classes).

    from cases.strategies import cases, register_profiles
    register_profiles()                       # once, e.g. from tests/conftest.py
    @given(cases(family="softmax", finite=True))
    def test_something(case): ...

Every strategy yields `harness.casefile.Case` objects with ids "hypothesis/<family>/<n>"
(category "hypothesis"), valid by the case-file rules (they survive Case.to_json ->
casefile.parse_cases).

Profiles (`register_profiles`): "ci" is derandomized (the same examples on every run),
60 examples a test; "thorough" runs 2000 random examples a test.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from harness.casefile import Case
from harness.dtypes import finfo
from harness.spec import DTYPES, FAMILIES, REDUCTIONS, SAMPLED_FAMILIES

from .generator import _steps, thresholds

CATEGORY = "hypothesis"
MAX_BATCH = 4


def register_profiles() -> None:
    """Register the Hypothesis profiles "ci" and "thorough" (load one with
    hypothesis.settings.load_profile, e.g. from $HYPOTHESIS_PROFILE)."""
    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None, print_blob=True,
                              suppress_health_check=slow_ok)
    settings.register_profile("thorough", max_examples=2000, deadline=None, suppress_health_check=slow_ok)


# --- scalar values ---------------------------------------------------------------------------
@lru_cache(maxsize=None)
def extreme_values() -> tuple[float, ...]:
    """Finite values the corpus singles out: +-0, +-1, 1e4, 1e8, 1e30, each dtype's max, tiny,
    smallest subnormal and eps, and each dtype's exp/log1p thresholds with 1 ulp either side."""
    vals = [0.0, -0.0, 1.0, -1.0, 1e4, -1e4, 1e8, -1e8, 1e30, -1e30]
    for d in DTYPES:
        fi = finfo(d)
        for v in (float(fi.max), float(fi.tiny), float(fi.smallest_subnormal), float(fi.eps)):
            vals += [v, -v]
        for t in thresholds(d).values():
            for s in (t, -t):
                vals += _steps(s, d, (-1, 0, 1))
    return tuple(dict.fromkeys(vals))  # ordered, unique (this drops -0.0: logit_values adds it)


def logit_values(finite: bool = False) -> st.SearchStrategy[float]:
    """One logit: moderate, extreme, subnormal, or any float64; non-finite unless `finite`."""
    parts = [
        st.floats(-30.0, 30.0),
        st.sampled_from(extreme_values()),
        st.just(-0.0),
        st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True),
    ]
    if not finite:
        parts.append(st.sampled_from([math.inf, -math.inf, math.nan]))
    return st.one_of(parts)


@lru_cache(maxsize=None)
def _probability_edges() -> tuple[float, ...]:
    vals = [0.0, 1.0, 0.5, 1e-30, 1e-8, 1e-3, 1 - 1e-3, 1 - 1e-8]
    for d in DTYPES:
        fi = finfo(d)
        vals += [float(fi.smallest_subnormal), float(fi.tiny), float(fi.eps)]
        vals += _steps(1.0, d, (-3, -2, -1))
    return tuple(dict.fromkeys(vals))


def probability_values(finite: bool = False) -> st.SearchStrategy[float]:
    """One probability in [0, 1] (edges: 0, subnormals, tiny, eps, 1 - k ulps, 1). Never nan: a nan
    probability is invalid input (harness.badinput, kind nan_prob), not a graded case; `finite` is
    kept for the callers' symmetry with the logits (probabilities are always finite)."""
    return st.one_of([st.floats(0.0, 1.0), st.sampled_from(_probability_edges())])


def label_values() -> st.SearchStrategy[float]:
    """A soft label in [0, 1]: exactly 0, 1 or 1/2, near-binary (1e-6, 1 - 1e-6), or any."""
    return st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1e-6, 1 - 1e-6]), st.floats(0.0, 1.0))


def weight_values() -> st.SearchStrategy[float]:
    """An imbalanced weight: 0, 1e-6, 1, 1e6, or log-uniform in [1e-6, 1e6]."""
    return st.one_of(st.sampled_from([0.0, 1e-6, 1.0, 1e6]), st.floats(-6.0, 6.0).map(lambda e: 10.0**e))


# --- arrays ------------------------------------------------------------------------------------
def _array(draw, shape: tuple[int, ...], values: st.SearchStrategy[float]) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    flat = draw(st.lists(values, min_size=n, max_size=n))
    return np.asarray(flat, dtype=np.float64).reshape(shape)


def _shape(draw, family: str, max_classes: int) -> tuple[int, ...]:
    """(batch, classes): batch 0 (empty) .. MAX_BATCH, classes 1 .. max_classes, biased to the
    edges; elementwise families sometimes 1-D."""
    batch = draw(st.one_of(st.sampled_from([0, 1]), st.integers(0, MAX_BATCH)))
    classes = draw(st.one_of(st.sampled_from([1, 2]), st.integers(1, max_classes)))
    if not FAMILIES[family].rowwise and draw(st.integers(0, 4)) == 0:
        return (classes,)
    return (batch, classes)


def _dense_row_targets(draw, shape: tuple[int, ...]) -> np.ndarray:
    """Softmax/categorical targets: one-hot, soft (normalized), zeros, or summing to 1/2 or 2."""
    kind = draw(st.sampled_from(["onehot", "soft", "zeros", "sum-half", "sum-two", "free"]))
    B, C = shape
    if kind == "onehot":
        idx = draw(st.lists(st.integers(0, C - 1), min_size=B, max_size=B))
        y = np.zeros(shape)
        y[np.arange(B), idx] = 1.0
        return y
    if kind == "zeros":
        return np.zeros(shape)
    y = _array(draw, shape, label_values())
    if kind == "free":
        return y
    s = y.sum(axis=-1, keepdims=True)
    y = np.where(s > 0, y / np.where(s > 0, s, 1.0), 1.0 / C)
    return y * {"soft": 1.0, "sum-half": 0.5, "sum-two": 2.0}[kind]


def _probability_rows(draw, shape: tuple[int, ...], finite: bool) -> np.ndarray:
    """Rows of probabilities: normalized random rows, or rows of edge values."""
    if draw(st.booleans()):
        w = _array(draw, shape, st.floats(0.0, 1.0))
        s = w.sum(axis=-1, keepdims=True)
        p = np.where(s > 0, w / np.where(s > 0, s, 1.0), 1.0 / shape[-1])
        return p
    return _array(draw, shape, probability_values(finite))


@st.composite
def cases(draw, family: str | None = None, finite: bool = False, max_classes: int = 16) -> Case:
    """A valid Case of `family` (any family if None). finite=True: no inf or nan in the inputs
    (huge finite values still occur). max_classes bounds the class (last) axis."""
    fam_name = family or draw(st.sampled_from(sorted(set(FAMILIES) - set(SAMPLED_FAMILIES))))
    fam = FAMILIES[fam_name]
    shape = _shape(draw, fam_name, max_classes)
    C = shape[-1]

    if fam.inputs == "logits":
        x = _array(draw, shape, logit_values(finite))
    elif fam.rowwise:
        x = _probability_rows(draw, shape, finite)
    else:
        x = _array(draw, shape, probability_values(finite))

    if fam.targets == "index":
        n = int(np.prod(shape[:-1]))
        k = draw(st.lists(st.integers(0, C - 1), min_size=n, max_size=n))
        t = np.asarray(k, dtype=np.int64).reshape(shape[:-1])
    elif fam.rowwise:
        t = _dense_row_targets(draw, shape)
    else:
        t = _array(draw, shape, label_values())

    params: dict = {}
    if "pos_weight" in fam.params and draw(st.booleans()):
        params["pos_weight"] = _array(draw, (draw(st.sampled_from([1, C])),), weight_values())
    if "weight" in fam.params and draw(st.booleans()):
        params["weight"] = _array(draw, shape, weight_values())
    if "class_weight" in fam.params and draw(st.booleans()):
        params["class_weight"] = _array(draw, (C,), weight_values())
    if "sample_weight" in fam.params and draw(st.booleans()):
        params["sample_weight"] = _array(draw, shape[:-1], weight_values())
    if "label_smoothing" in fam.params and draw(st.booleans()):
        params["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]))
    if "alpha" in fam.params and draw(st.booleans()):
        params["alpha"] = draw(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0.0, 1.0)))
    if "gamma" in fam.params and draw(st.booleans()):
        params["gamma"] = draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]), st.floats(0.0, 5.0)))
    if "poly_epsilon" in fam.params and draw(st.integers(0, 3)) == 0:
        params["poly_epsilon"] = draw(st.one_of(st.sampled_from([-1.0, 2.0]), st.floats(-1.0, 4.0)))
    if "where" in fam.params and len(shape) == 2 and draw(st.integers(0, 3)) == 0:
        per_row = draw(st.booleans())
        n = shape[0] if per_row else int(np.prod(shape))
        params["where"] = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool).reshape(
            shape[:1] if per_row else shape)
    reduction = draw(st.one_of(st.none(), st.sampled_from(REDUCTIONS)))
    if reduction is not None:
        params["reduction"] = reduction
    if "axis" in fam.params and len(shape) == 2 and draw(st.integers(0, 3)) == 0:
        # the same data with its class (or mean) axis first: axis 0 or -2
        x = x.T.copy()
        t = t.T.copy() if fam.targets == "dense" else t
        if "weight" in params:
            params["weight"] = params["weight"].T.copy()
        if "where" in params and params["where"].ndim == 2:
            params["where"] = params["where"].T.copy()
        if "pos_weight" in params:  # over the (new) last axis
            params["pos_weight"] = params["pos_weight"][:1]
        params["axis"] = draw(st.sampled_from([0, -2]))

    dtypes = draw(st.one_of(st.none(), st.lists(st.sampled_from(DTYPES), min_size=1, max_size=4, unique=True)))
    n = draw(st.integers(0, 9999))
    return Case(f"{CATEGORY}/{fam_name}/{n}", fam_name, x, t, params, tuple(dtypes) if dtypes else None)


def case_lists(family: str | None = None, finite: bool = False, max_classes: int = 16,
               max_size: int = 4) -> st.SearchStrategy[list[Case]]:
    """Lists of cases with unique ids (a case file's content)."""
    return st.lists(cases(family, finite, max_classes), min_size=1, max_size=max_size, unique_by=lambda c: c.id)
