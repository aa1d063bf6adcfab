"""Invalid input: the kinds of input outside a loss's domain, how the reference recognises
them, and what an API that silently returns a value for them most likely computed.

The reference defines the losses on their domain (harness.oracle): targets in [0, 1] for the
binary families, non-negative soft targets, probabilities in [0, 1], class indices in [0, C) (or the ignore_index), shapes that fit, a class
axis that exists, floating inputs, at least one class, label smoothing in [0, 1], non-negative
weights. A case outside it is *invalid*: it has no reference value, and an API's behaviour on it
is its own conformance dimension, with the statuses

  rejected      the API raised (detail: exception type and first line of the message)
  silent_nan    it returned, and the result holds a nan
  silent_value  it returned numbers (finite, or inf) for invalid input: the dangerous one; the
                detail gives the value and the reading of the input it matches, if any

Some kinds are recorded, not judged (`judged=False`): negative weights, negative pos_weight and
label smoothing outside [0, 1] have a meaning some APIs accept on purpose (the formula
extends), so silent_value there is information, not a defect.

A case file declares an invalid case with "invalid": "<kind>"; `violations` must find that kind
in its data (and finds nothing in a valid case), so a declaration cannot lie and garbage cannot
slip into the graded corpus undeclared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from harness.spec import FAMILIES, SAMPLED_FAMILIES

INDEX = ("sparse_softmax", "sparse_categorical")
BINARY = ("sigmoid", "binary", "sigmoid_focal", "binary_focal")
ROWS_DENSE = ("softmax", "categorical", "softmax_focal", "categorical_focal")
PROBS = ("binary", "categorical", "sparse_categorical", "binary_focal", "categorical_focal")
ALL = tuple(FAMILIES)
NOT_SAMPLED = tuple(f for f in FAMILIES if f not in SAMPLED_FAMILIES)
ROWWISE = tuple(f for f in NOT_SAMPLED if FAMILIES[f].rowwise)
#: the families a weight parameter of each kind applies to
WEIGHTED = tuple(f for f in NOT_SAMPLED if "weight" in FAMILIES[f].params or "sample_weight" in FAMILIES[f].params
                 or "class_weight" in FAMILIES[f].params)
SMOOTHED = tuple(f for f in FAMILIES if "label_smoothing" in FAMILIES[f].params)


@dataclass(frozen=True)
class InvalidKind:
    """One kind of invalid input.

    name:        the value of a case's "invalid" field and of the results column `invalid`.
    description: what is wrong, for reports.
    families:    the families it is generated for.
    judged:      False: recorded only (some APIs accept it on purpose).
    """

    name: str
    description: str
    families: tuple[str, ...]
    judged: bool = True


KINDS: dict[str, InvalidKind] = {k.name: k for k in (
    InvalidKind("index_eq_C", "class index = C (one past the last class)", INDEX + SAMPLED_FAMILIES),
    InvalidKind("index_gt_C", "class index > C", INDEX + SAMPLED_FAMILIES),
    InvalidKind("index_minus_1", "class index -1", INDEX + SAMPLED_FAMILIES),
    InvalidKind("index_below_minus_C", "class index -C-1 (below -C)", INDEX + SAMPLED_FAMILIES),
    InvalidKind("index_negative", "class index -2 (in [-C, -2], where Python's negative indexing would wrap)",
                INDEX + SAMPLED_FAMILIES),
    InvalidKind("target_above_1", "binary target > 1", BINARY),
    InvalidKind("target_below_0", "binary target < 0", BINARY),
    InvalidKind("nan_target", "nan target", BINARY + ROWS_DENSE),
    InvalidKind("negative_soft_target", "soft target row with a negative entry (the row still sums to 1)", ROWS_DENSE),
    InvalidKind("prob_above_1", "probability > 1", PROBS),
    InvalidKind("prob_below_0", "probability < 0", PROBS),
    InvalidKind("nan_prob", "nan probability", PROBS),
    InvalidKind("shape_targets", "targets with one row fewer than the inputs", NOT_SAMPLED),
    InvalidKind("shape_targets_broadcast", "targets of a shape that broadcasts against the inputs' "
                "((N,) against (N, 1); index targets (N, 1) against (N,))", NOT_SAMPLED),
    InvalidKind("shape_weight", "a weight with one element too many (weight, sample_weight)", WEIGHTED),
    InvalidKind("shape_pos_weight", "pos_weight of length C+1", ("sigmoid",)),
    InvalidKind("shape_class_weight", "class_weight of length C+1", ("softmax", "sparse_softmax", "categorical",
                                                                     "sparse_categorical")),
    InvalidKind("axis_out_of_range", "class axis = ndim (out of range)", ROWWISE + ("binary", "sigmoid")),
    InvalidKind("int_inputs", "integer inputs (int32) where floats are required", ALL),
    InvalidKind("bool_inputs", "boolean inputs where floats are required", NOT_SAMPLED),
    InvalidKind("empty_classes", "rows of zero classes", ROWWISE),
    InvalidKind("label_smoothing_above_1", "label smoothing 1.5", SMOOTHED, judged=False),
    InvalidKind("label_smoothing_negative", "label smoothing -0.2", SMOOTHED, judged=False),
    InvalidKind("negative_weight", "a negative weight (weight, sample_weight or class_weight)", WEIGHTED, judged=False),
    InvalidKind("negative_pos_weight", "a negative pos_weight", ("sigmoid",), judged=False),
)}


_WEIGHT_KEYS = ("weight", "sample_weight", "class_weight")


def _num_classes(family: str, x: np.ndarray, params: Mapping[str, Any]) -> int | None:
    if family in SAMPLED_FAMILIES:
        return int(np.shape(params.get("output_weights", np.zeros((0, 0))))[0])
    if x.ndim == 0:
        return None
    ax = params.get("axis", -1)
    return int(x.shape[ax]) if -x.ndim <= ax < x.ndim else None


def violations(family: str, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any]) -> list[str]:
    """The invalid kinds present in a case's data, exactly as a framework receives it
    (`Case.in_dtype`: so integer or boolean inputs show as such); [] for a valid case."""
    from harness.casefile import param_shape_problem

    fam = FAMILIES[family]
    x, t = np.asarray(x), np.asarray(t)
    out: list[str] = []
    if x.dtype.kind in "iu":
        out.append("int_inputs")
    elif x.dtype.kind == "b":
        out.append("bool_inputs")
    ax = params.get("axis", -1)
    axis_ok = x.ndim >= 1 and -x.ndim <= ax < x.ndim
    if not axis_ok and "axis" in params:
        out.append("axis_out_of_range")
    C = _num_classes(family, x, params)
    if fam.rowwise and family not in SAMPLED_FAMILIES and axis_ok and C == 0:
        out.append("empty_classes")
    # targets' shape
    if axis_ok:
        per_sample = x.shape[:ax % x.ndim] + x.shape[ax % x.ndim + 1:]
        want = per_sample if fam.targets == "index" else x.shape if fam.targets == "dense" else None
        if want is not None and t.shape != want:
            try:
                np.broadcast_shapes(t.shape, want)
                out.append("shape_targets_broadcast")
            except ValueError:
                out.append("shape_targets")
        # parameters' shapes
        raw = dict(params)
        for k, v in params.items():
            if isinstance(v, np.ndarray) and k in ("weight", "sample_weight", "pos_weight", "class_weight") \
                    and param_shape_problem(k, v, x, t, per_sample, raw):
                out.append({"weight": "shape_weight", "sample_weight": "shape_weight"}.get(k, f"shape_{k}"))
    # values
    with np.errstate(invalid="ignore"):
        if fam.targets == "dense" and t.dtype.kind == "f":
            if family in BINARY:
                if (t > 1).any():
                    out.append("target_above_1")
                if (t < 0).any():
                    out.append("target_below_0")
            elif (t < 0).any():
                out.append("negative_soft_target")
            if np.isnan(t).any():
                out.append("nan_target")
        if fam.targets in ("index", "classes") and C is not None and t.dtype.kind in "iu":
            k = t.astype(np.int64)
            if "ignore_index" in params:
                k = k[k != params["ignore_index"]]
            if (k == C).any():
                out.append("index_eq_C")
            if (k > C).any():
                out.append("index_gt_C")
            if (k == -1).any():
                out.append("index_minus_1")
            if (k < -C).any():
                out.append("index_below_minus_C")
            if ((k < -1) & (k >= -C)).any():
                out.append("index_negative")
        if fam.inputs == "probabilities" and x.dtype.kind == "f":
            if (x > 1).any():
                out.append("prob_above_1")
            if (x < 0).any():
                out.append("prob_below_0")
            if np.isnan(x).any():
                out.append("nan_prob")
        ls = params.get("label_smoothing")
        if ls is not None and ls > 1:
            out.append("label_smoothing_above_1")
        if ls is not None and ls < 0:
            out.append("label_smoothing_negative")
        if any(k in params and (np.asarray(params[k]) < 0).any() for k in _WEIGHT_KEYS):
            out.append("negative_weight")
        if "pos_weight" in params and (np.asarray(params["pos_weight"]) < 0).any():
            out.append("negative_pos_weight")
    return out


# --- what a silently returned value most likely is -------------------------------------------
#: A reading: (family, inputs, targets, params, conventions) -> the reference's value of the input
#: read that way, or None where the reading does not apply.
Reading = Callable[[str, np.ndarray, np.ndarray, dict, Mapping[str, Any]], "np.ndarray | None"]


def _ref(family, x, t, p, conv):
    """The float64 reference of the input as read; from the persistent cache (harness.refcache)
    when computed before, as the runner's references are."""
    from harness import oracle, refcache

    def compute() -> dict[str, np.ndarray]:
        with np.errstate(all="ignore"):
            return {"loss": np.asarray(oracle.loss(family, x, t, p, conv, np.float64))}

    return refcache.cached(("reading", family, dict(conv), x, t, p), compute)["loss"]


def _floats(x):
    return x.astype(np.float64) if x.dtype.kind in "iub" else x


def _as_given(family, x, t, p, conv):
    return _ref(family, _floats(x), t, p, conv)


def _clip_targets(family, x, t, p, conv):
    return _ref(family, x, np.clip(t, 0, 1), p, conv)


def _nan_to(v: float) -> Reading:
    def f(family, x, t, p, conv):
        fam = FAMILIES[family]
        if fam.inputs == "probabilities":
            x = np.where(np.isnan(x), v, x)
        if fam.targets == "dense":
            t = np.where(np.isnan(t), v, t)
        return _ref(family, x, t, p, conv)
    return f


def _clip_probs(eps: float) -> Reading:
    def f(family, x, t, p, conv):
        return _ref(family, np.clip(_floats(x), eps, 1 - eps), t, p, conv)
    return f


def _out_of_range(family, x, t, p) -> tuple[int, np.ndarray] | None:
    C = _num_classes(family, x, p)
    if not C:
        return None
    return C, ((t < 0) | (t >= C)) & (t != p.get("ignore_index", -(2 ** 62)))


def _index(how: str) -> Reading:
    def f(family, x, t, p, conv):
        oor = _out_of_range(family, x, t, p)
        if oor is None:
            return None
        C, bad = oor
        k = np.clip(t, 0, C - 1) if how == "clamp" else np.mod(t, C)
        return _ref(family, x, np.where(bad, k, t), p, conv)
    return f


def _row_zero(counted: bool) -> Reading:
    """An out-of-range target's row contributes 0: left out of a mean (as ignore_index), or
    still counted in it (a one-hot of the index that is all zeros)."""
    def f(family, x, t, p, conv):
        oor = _out_of_range(family, x, t, p)
        if oor is None or family in SAMPLED_FAMILIES or not oor[1].any():
            return None
        bad = oor[1] | (t == p.get("ignore_index", -(2 ** 62)))
        ig = int(np.min(t[oor[1]]))  # an ignore_index no valid target has
        q, t = {**p, "ignore_index": ig}, np.where(bad, ig, t)
        if not counted:
            return _ref(family, x, t, q, conv)
        weighted = any(k in p for k in _WEIGHT_KEYS)
        if p.get("reduction", "none") != "mean" or not (conv.get("mean", "elements") == "elements" or not weighted):
            return None  # the same as left out
        return np.asarray(np.mean(_ref(family, x, t, {**q, "reduction": "none"}, conv)))
    return f


def _weights_clipped(family, x, t, p, conv):
    return _ref(family, x, t, {k: (np.maximum(v, 0) if k in _WEIGHT_KEYS + ("pos_weight",) else v)
                               for k, v in p.items()}, conv)


def _smoothing_clipped(family, x, t, p, conv):
    return _ref(family, x, t, {**p, "label_smoothing": float(np.clip(p["label_smoothing"], 0, 1))}, conv)


def _reshaped(family, x, t, p, conv):
    """Targets reshaped to the shape the family expects (same number of elements)."""
    fam = FAMILIES[family]
    want = x.shape[:-1] if fam.targets == "index" else x.shape
    if t.size != int(np.prod(want)):
        return None
    return _ref(family, x, t.reshape(want), p, conv)


def _broadcast(family, x, t, p, conv):
    """Targets (and, elementwise, inputs) broadcast against each other."""
    fam = FAMILIES[family]
    if fam.targets == "index":
        return None
    if fam.rowwise:
        return _ref(family, x, np.broadcast_to(t, x.shape), p, conv)
    shape = np.broadcast_shapes(x.shape, t.shape)
    return _ref(family, np.broadcast_to(x, shape), np.broadcast_to(t, shape), p, conv)


def _zero_per_row(family, x, t, p, conv):
    """Every row's loss 0: a sum over no classes (and so a sum or mean of 0)."""
    ax = p.get("axis", -1) % x.ndim
    return np.zeros(x.shape[:ax] + x.shape[ax + 1:]) if p.get("reduction", "none") == "none" else np.asarray(0.0)


_INDEX_READINGS = (("the index clamped to [0, C-1]", _index("clamp")), ("the index wrapped modulo C", _index("wrap")),
                   ("the row's loss 0, left out of the mean (as if ignored)", _row_zero(False)),
                   ("the row's loss 0 (an all-zero one-hot row), still counted in the mean", _row_zero(True)))
_KERAS_CLIP = ("the probability clipped to [1e-7, 1-1e-7] (Keras' epsilon)", _clip_probs(1e-7))
#: kind -> readings tried in order: (what the value means, the reference's value read that way)
READINGS: dict[str, tuple[tuple[str, Reading], ...]] = {
    "index_eq_C": _INDEX_READINGS,
    "target_above_1": (("the formula applied to the target as given", _as_given),
                       ("the target clipped to [0, 1]", _clip_targets)),
    "nan_target": (("the nan read as 0", _nan_to(0.0)), ("the nan read as 1", _nan_to(1.0))),
    "negative_soft_target": (("the formula applied to the targets as given", _as_given),
                             ("the targets clipped to [0, 1]", _clip_targets)),
    "prob_above_1": (_KERAS_CLIP, ("the probability clipped to [0, 1]", _clip_probs(0.0)),
                     ("the formula applied to the probability as given", _as_given)),
    "nan_prob": (("the nan read as 0", _nan_to(0.0)), ("the nan read as 1", _nan_to(1.0)),
                 ("the nan read as 1e-7 (Keras' epsilon)", _nan_to(1e-7))),
    "shape_targets_broadcast": (("the targets reshaped to the inputs' shape", _reshaped),
                                ("targets and inputs broadcast against each other", _broadcast)),
    "int_inputs": (("the inputs converted to floats", _as_given),
                   ("the inputs converted to floats and clipped to [1e-7, 1-1e-7] (Keras' epsilon)", _clip_probs(1e-7))),
    "empty_classes": (("0 for every row (a sum over no classes)", _zero_per_row),),
    "label_smoothing_above_1": (("the formula applied to the smoothing as given", _as_given),
                                ("the smoothing clipped to [0, 1]", _smoothing_clipped)),
    "negative_weight": (("the formula applied to the weights as given", _as_given),
                        ("negative weights clipped to 0", _weights_clipped)),
}
for _k, _same in (("index_gt_C", "index_eq_C"), ("index_negative", "index_eq_C"), ("index_minus_1", "index_eq_C"),
                  ("index_below_minus_C", "index_eq_C"),
                  ("target_below_0", "target_above_1"), ("prob_below_0", "prob_above_1"),
                  ("bool_inputs", "int_inputs"), ("label_smoothing_negative", "label_smoothing_above_1"),
                  ("negative_pos_weight", "negative_weight")):
    READINGS[_k] = READINGS[_same]
#: a reading matches when every element agrees to this relative error (and to this fraction of
#: the mean magnitude): loose on purpose. It names what was computed, it does not grade accuracy
#: (the readings of one kind differ by far more: 0 against 0.88, 16.1 against inf).
READING_RTOL = 1e-3


def classify(out: np.ndarray) -> str:
    """silent_nan when the returned array holds a nan, else silent_value."""
    out = np.asarray(out)
    return "silent_nan" if out.dtype.kind in "fc" and np.isnan(out).any() else "silent_value"


def describe(out: np.ndarray, expected_shape: tuple | None = None) -> str:
    """The returned value in a few words: its first elements (and shape when it is not a scalar)."""
    out = np.asarray(out)
    if out.size == 0:
        return f"returned an empty array of shape {out.shape}"
    flat = out.ravel().astype(np.float64) if out.dtype.kind in "fiub" else out.ravel()
    head = ", ".join(f"{float(v):.6g}" for v in flat[:3]) + (", ..." if flat.size > 3 else "")
    s = f"returned {head}" if out.ndim == 0 else f"returned shape {out.shape}: [{head}]"
    if out.dtype.kind == "f" and np.isinf(out).any():
        s += f" ({int(np.isinf(out).sum())} inf)"
    return s


def reading(kind: str, family: str, x, t, params: dict, out: np.ndarray, conventions: Mapping[str, Any]) -> str | None:
    """The first reading of the invalid input whose reference value the framework's `out` agrees
    with (same shape, same nan/inf pattern, values to READING_RTOL), or None. The reference is
    evaluated on the re-read input; it is never told what the framework returned."""
    out = np.asarray(out)
    if out.dtype.kind not in "fiub":
        return None
    o = out.astype(np.float64)
    for label, read in READINGS.get(kind, ()):
        try:
            ref = read(family, np.asarray(x), np.asarray(t), dict(params), dict(conventions))
        except Exception:  # noqa: BLE001 - a reading the reference cannot evaluate is not this one
            continue
        if ref is None:
            continue
        ref = np.asarray(ref, np.float64)
        if ref.shape != o.shape:
            continue
        fin = np.isfinite(ref)
        same_class = np.array_equal(np.isnan(ref), np.isnan(o)) and np.array_equal(
            np.where(np.isinf(ref), ref, 0), np.where(np.isinf(o), o, 0))
        if not same_class:
            continue
        scale = float(np.mean(np.abs(ref[fin]))) if fin.any() else 0.0
        if np.all(np.abs(o[fin] - ref[fin]) <= READING_RTOL * (np.abs(ref[fin]) + scale)):
            return label
    return None
