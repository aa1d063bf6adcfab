"""Keras 3 cross-entropy losses on each backend: tensorflow, jax, torch and numpy.

The backend is fixed per process by KERAS_BACKEND, so each backend is its own framework
(`keras[tensorflow]`, ...) and its own worker; the table below is shared by all four.

Conventions, from the Keras 3 source (keras/src/losses/losses.py and
keras/src/backend/<backend>/nn.py, keras 3.15.1):
* the functions return one value per sample: binary_crossentropy averages the elementwise
  loss over the last axis (reference convention axis_mean=True);
* label_smoothing: categorical y*(1-eps) + eps/C, binary z*(1-eps) + 0.5*eps (both are
  the reference's (1-eps)*y + eps/C with C outcomes);
* the loss classes reduce with "sum_over_batch_size" (the mean over samples, sample weights
  included in the sum: the canonical "mean"), "sum" or "none";
* probabilities are clipped to [epsilon, 1 - epsilon] (epsilon 1e-7) and categorical ones
  divided by their sum: documented departures recorded in cases/expectations.toml.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from adapters import Framework
from harness.spec import Api

GENERIC_NAME = "keras"
BACKENDS = ("tensorflow", "jax", "torch", "numpy")
REDUCTIONS = ("none", "sum", "mean")
KERAS_REDUCTION = {"mean": "sum_over_batch_size"}


def _setup():
    import keras

    return keras


def _to_native(a: np.ndarray):
    from keras import ops

    if a.dtype.name == "bfloat16":  # not every backend takes ml_dtypes arrays; the values are exact
        return ops.convert_to_tensor(a.astype(np.float32), dtype="bfloat16")
    return ops.convert_to_tensor(a, dtype=a.dtype.name)


def _to_numpy(t) -> np.ndarray:
    import keras
    import ml_dtypes
    from keras import ops

    dt = keras.backend.standardize_dtype(t.dtype) if hasattr(t, "dtype") else None
    out = np.asarray(ops.convert_to_numpy(t))
    if dt == "bfloat16" and out.dtype.name != "bfloat16":
        out = out.astype(ml_dtypes.bfloat16)  # convert_to_numpy widens bfloat16 on some backends
    return out


_ENV = {
    "tensorflow": {"TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"},
    "jax": {"JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1",
            "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"},
    "torch": {"OMP_NUM_THREADS": "1"},
    "numpy": {},
}

FRAMEWORKS = {
    f"keras[{b}]": Framework(
        name=f"keras[{b}]",
        package="keras",
        aliases={},
        setup=_setup,
        to_native=_to_native,
        to_numpy=_to_numpy,
        repro_imports=f'import os; os.environ["KERAS_BACKEND"] = "{b}"; import numpy as np, keras',
        repro_array="keras.ops.convert_to_tensor({values}, dtype='{dtype}')",
        repro_value="keras.ops.convert_to_numpy(keras.ops.cast({expr}, 'float64')).tolist()",
        env={"KERAS_BACKEND": b, **_ENV[b]},
    )
    for b in BACKENDS
}

FN = partial(Api, framework=GENERIC_NAME, inputs="y_pred", targets="y_true")
#: loss classes: constructor arguments, then instance(y_true, y_pred, sample_weight=...)
CLS = partial(FN, reductions=REDUCTIONS, reduction_arg="reduction", reduction_values=KERAS_REDUCTION,
              init_args=("from_logits", "label_smoothing", "reduction", "axis", "ignore_class"))

_LOGITS = {"from_logits": True}
_IGNORE = {"ignore_index": "ignore_class"}
_BIN = {"axis_mean": True}
APIS = [
    # functions: one value per sample, no reduction, no sample_weight
    FN(name="keras.losses.binary_crossentropy", family="binary", conventions=_BIN,
       params={"label_smoothing": "label_smoothing"}),
    FN(name="keras.losses.binary_crossentropy", variant="from_logits", family="sigmoid", conventions=_BIN,
       params={"label_smoothing": "label_smoothing"}, fixed=_LOGITS),
    FN(name="keras.losses.categorical_crossentropy", family="categorical",
       params={"label_smoothing": "label_smoothing"}),
    FN(name="keras.losses.categorical_crossentropy", variant="from_logits", family="softmax",
       params={"label_smoothing": "label_smoothing"}, fixed=_LOGITS),
    FN(name="keras.losses.sparse_categorical_crossentropy", family="sparse_categorical", params=_IGNORE),
    FN(name="keras.losses.sparse_categorical_crossentropy", variant="from_logits", family="sparse_softmax",
       params=_IGNORE, fixed=_LOGITS),
    # classes: reductions and sample_weight
    CLS(name="keras.losses.BinaryCrossentropy", family="binary", conventions=_BIN,
        params={"label_smoothing": "label_smoothing", "sample_weight": "sample_weight"}),
    CLS(name="keras.losses.BinaryCrossentropy", variant="from_logits", family="sigmoid", conventions=_BIN,
        params={"label_smoothing": "label_smoothing", "sample_weight": "sample_weight"}, fixed=_LOGITS),
    CLS(name="keras.losses.CategoricalCrossentropy", family="categorical",
        params={"label_smoothing": "label_smoothing", "sample_weight": "sample_weight"}),
    CLS(name="keras.losses.CategoricalCrossentropy", variant="from_logits", family="softmax",
        params={"label_smoothing": "label_smoothing", "sample_weight": "sample_weight"}, fixed=_LOGITS),
    CLS(name="keras.losses.SparseCategoricalCrossentropy", family="sparse_categorical",
        params={"sample_weight": "sample_weight", **_IGNORE}),
    CLS(name="keras.losses.SparseCategoricalCrossentropy", variant="from_logits", family="sparse_softmax",
        params={"sample_weight": "sample_weight", **_IGNORE}, fixed=_LOGITS),
]
