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
  included in the sum: the canonical "mean"), its alias "mean", "mean_with_sample_weight"
  (the sum divided by the sum of the sample weights), "sum" or "none";
* focal losses: binary_focal_crossentropy applies alpha only with apply_class_balancing=True
  (a variant of its own); categorical_focal_crossentropy always multiplies by alpha; with
  from_logits=True both apply sigmoid / softmax and continue on probabilities;
* probabilities are clipped to [epsilon, 1 - epsilon] (epsilon 1e-7) and categorical ones
  divided by their sum: documented departures recorded in cases/expectations.toml.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from adapters import Framework
from adapters.autodiff import JAX_REPRO, TF_REPRO, TORCH_REPRO, jax_vjp, tf_vjp, torch_import_autograd, torch_vjp
from adapters.jax import _cache_env as jax_cache_env
from adapters.jax import device_check as jax_device_check
from adapters.tensorflow import device_check as tensorflow_device_check
from adapters.torch import device_check as torch_device_check
from adapters.torch import poisoned as torch_poisoned
from harness.spec import Api

GENERIC_NAME = "keras"
BACKENDS = ("tensorflow", "jax", "torch", "numpy")
REDUCTIONS = ("none", "sum", "mean")
KERAS_REDUCTION = {"mean": "sum_over_batch_size"}


def _setup():
    import os

    import keras

    if os.environ.get("KERAS_BACKEND") == "torch":
        torch_import_autograd()
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
    # eager, op by op, as Keras runs outside a compiled train step; each operation's compiled
    # kernel kept in JAX's persistent compilation cache (adapters.jax), as the jax framework's
    "jax": {"JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1",
            "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", **jax_cache_env()},
    "torch": {"OMP_NUM_THREADS": "1"},
    "numpy": {},
}

#: each backend's autodiff (the numpy backend has none), and what its repro snippet imports for it
_AUTODIFF = {"tensorflow": (tf_vjp, TF_REPRO, ", tensorflow as tf"),
             "jax": (jax_vjp, JAX_REPRO, ", jax, jax.numpy as jnp"),
             "torch": (torch_vjp, TORCH_REPRO, ", torch"),
             "numpy": (None, "", "")}

#: each backend's check that it sees the GPU (the numpy backend runs on the CPU only)
_DEVICE_CHECK = {"tensorflow": tensorflow_device_check, "jax": jax_device_check, "torch": torch_device_check,
                 "numpy": None}

FRAMEWORKS = {
    f"keras[{b}]": Framework(
        name=f"keras[{b}]",
        package="keras",
        aliases={},
        setup=_setup,
        to_native=_to_native,
        to_numpy=_to_numpy,
        repro_imports=f'import os; os.environ["KERAS_BACKEND"] = "{b}"; import numpy as np, keras{_AUTODIFF[b][2]}',
        repro_array="keras.ops.convert_to_tensor({values}, dtype='{dtype}')",
        repro_value="keras.ops.convert_to_numpy(keras.ops.cast({expr}, 'float64')).tolist()",
        env={"KERAS_BACKEND": b, **_ENV[b]},
        device_env={"cuda": {"JAX_PLATFORMS": "cuda"}} if b == "jax" else {},
        device_check=_DEVICE_CHECK[b],
        poisoned=torch_poisoned if b == "torch" else None,  # a CUDA context after a device-side assert
        vjp=_AUTODIFF[b][0],
        repro_vjp=_AUTODIFF[b][1],
        # keras[jax] compiles each operation once per shape: stacking rows into buckets leaves
        # it few shapes (the values unchanged: tests/test_batching.py); the others dispatch
        # op by op without compiling, and gain little from it
        batch_rows=b == "jax",
    )
    for b in BACKENDS
}

FN = partial(Api, framework=GENERIC_NAME, inputs="y_pred", targets="y_true")
#: loss classes: constructor arguments, then instance(y_true, y_pred, sample_weight=...)
CLS = partial(FN, reductions=REDUCTIONS, reduction_arg="reduction", reduction_values=KERAS_REDUCTION,
              init_args=("from_logits", "label_smoothing", "reduction", "axis", "ignore_class", "alpha", "gamma",
                         "apply_class_balancing"))
#: the other names of a mean: "mean" is an alias of "sum_over_batch_size"; "mean_with_sample_weight"
#: divides by the sum of the sample weights (keras/src/losses/loss.py, reduce_values).
MEAN_VARIANTS = {"mean": ("mean", "elements"), "mean_with_sample_weight": ("mean_with_sample_weight", "weight_sum")}

_LOGITS = {"from_logits": True}
_BIN = {"axis_mean": True}
SMOOTH_AXIS = {"label_smoothing": "label_smoothing", "axis": "axis"}
SPARSE = {"ignore_index": "ignore_class", "axis": "axis"}
FOCAL = {"gamma": "gamma", **SMOOTH_AXIS}
#: (function, class, family on probabilities, family on logits, parameters, conventions, extra)
LOSSES = [
    ("binary_crossentropy", "BinaryCrossentropy", "binary", "sigmoid", SMOOTH_AXIS, _BIN, {}),
    ("categorical_crossentropy", "CategoricalCrossentropy", "categorical", "softmax", SMOOTH_AXIS, {}, {}),
    ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", "sparse_categorical", "sparse_softmax",
     SPARSE, {}, {}),
    # apply_class_balancing=False: alpha is not used
    ("binary_focal_crossentropy", "BinaryFocalCrossentropy", "binary_focal", "sigmoid_focal", FOCAL, _BIN, {}),
    # apply_class_balancing=True: alpha*z + (1-alpha)*(1-z) always applies, so the case must give alpha
    ("binary_focal_crossentropy", "BinaryFocalCrossentropy", "binary_focal", "sigmoid_focal",
     {"alpha": "alpha", **FOCAL}, _BIN, {"variant": "balanced", "fixed": {"apply_class_balancing": True},
                                          "required": ("alpha",)}),
    # alpha always multiplies (default 0.25): a case without alpha is passed alpha=1
    ("categorical_focal_crossentropy", "CategoricalFocalCrossentropy", "categorical_focal", "softmax_focal",
     {"alpha": "alpha", **FOCAL}, {}, {"defaults": {"alpha": 1.0}}),
]


def _entries() -> list[Api]:
    out = []
    for fn, cls, probs, logits, params, conv, extra in LOSSES:
        extra = dict(extra)
        base = extra.pop("variant", "")
        fixed = extra.pop("fixed", {})
        for fam, logit_kw in ((probs, {}), (logits, _LOGITS)):
            variant = ",".join(v for v in ("from_logits" if logit_kw else "", base) if v)
            kw = dict(family=fam, params=params, conventions=conv, fixed={**fixed, **logit_kw}, **extra)
            out.append(FN(name=f"keras.losses.{fn}", variant=variant, **kw))
            cparams = {**params, "sample_weight": "sample_weight"}
            out.append(CLS(name=f"keras.losses.{cls}", variant=variant, **{**kw, "params": cparams}))
            for name, (value, mean) in MEAN_VARIANTS.items():
                out.append(CLS(name=f"keras.losses.{cls}", variant=",".join(v for v in (variant, f"reduction={name}") if v),
                               **{**kw, "params": cparams, "reductions": ("mean",),
                                  "reduction_values": {"mean": value}, "conventions": {**conv, "mean": mean}}))
    return out


APIS = _entries()
