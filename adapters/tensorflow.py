"""TensorFlow (CPU) cross-entropy APIs, including tf.keras.losses (Keras 3 on the
TensorFlow backend, which is what `tf.keras` is in TF >= 2.16).

Conventions:
* tf.nn.*_with_logits return the unreduced loss (elementwise, or one value per row);
  softmax_cross_entropy_with_logits takes the class `axis`.
* tf.nn.sampled_softmax_loss / nce_loss are given fixed `sampled_values` (sampled classes and
  expected counts), so the sampled objective is deterministic; they return one loss per example.
* tf.keras.losses.binary_crossentropy returns the mean over the last axis (one value per
  sample): reference convention axis_mean=True.
* Keras clips probabilities to [epsilon, 1 - epsilon], epsilon = 1e-7 (keras.config.epsilon()),
  and categorical_crossentropy divides the probabilities by their sum: documented departures
  recorded in cases/expectations.toml, not modelled by the reference.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from adapters import Framework
from adapters.autodiff import TF_REPRO, tf_vjp
from harness.spec import Api

API = partial(Api, framework="tensorflow")
KERAS = partial(API, inputs="y_pred", targets="y_true")
_BIN = {"axis_mean": True}  # binary_crossentropy averages over the last axis
SMOOTH = {"label_smoothing": "label_smoothing"}

# tf.compat.v1.losses: weights, label_smoothing and a Reduction (values are the enum's strings).
# The default SUM_BY_NONZERO_WEIGHTS entry takes none/sum/mean; one variant per other mean.
V1 = partial(API, reduction_arg="reduction")
_V1_MEANS = {  # variant -> (Reduction value, reference mean convention)
    "": ("weighted_sum_by_nonzero_weights", "nonzero_weights"),
    "MEAN": ("weighted_mean", "weight_sum"),
    "SUM_OVER_BATCH_SIZE": ("weighted_sum_over_batch_size", "elements"),
}


def _v1(name: str, family: str, inputs: str, targets: str, params: dict) -> list[Api]:
    out = []
    for variant, (value, mean) in _V1_MEANS.items():
        out.append(V1(name=name, variant=variant, family=family, inputs=inputs, targets=targets, params=params,
                      reductions=("none", "sum", "mean") if not variant else ("mean",),
                      reduction_values={"none": "none", "sum": "weighted_sum", "mean": value},
                      conventions={"mean": mean}))
    return out


def _sampled_values(x: np.ndarray, t: np.ndarray, params) -> dict:
    """num_sampled / num_classes / num_true and the fixed sampled_values triple of a case."""
    s = np.asarray(params["sampled"], dtype=np.int64)
    return {"num_sampled": int(s.shape[0]), "num_classes": int(np.shape(params["output_weights"])[0]),
            "num_true": int(t.shape[-1]),
            "sampled_values": (s, np.asarray(params["true_expected_count"]),
                               np.asarray(params["sampled_expected_count"]))}


SAMPLED = partial(API, inputs="inputs", targets="labels", derive=_sampled_values,
                  params={"output_weights": "weights", "output_biases": "biases", "sampled": None,
                          "true_expected_count": None, "sampled_expected_count": None,
                          "remove_accidental_hits": "remove_accidental_hits"},
                  defaults={"remove_accidental_hits": False})  # the reference's default, passed explicitly


def _setup():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def _to_native(a: np.ndarray):
    import tensorflow as tf

    return tf.constant(a)


def _to_numpy(t) -> np.ndarray:
    return np.asarray(t.numpy())


def device_check(dev: str) -> str | None:
    import tensorflow as tf

    return None if tf.config.list_physical_devices("GPU") else "tensorflow sees no GPU (a tensorflow-cpu build?)"


FRAMEWORK = Framework(
    name="tensorflow",
    device_check=device_check,
    package="tensorflow-cpu",
    aliases={"tf": "tensorflow"},
    setup=_setup,
    to_native=_to_native,
    to_numpy=_to_numpy,
    repro_imports="import numpy as np, tensorflow as tf",
    repro_array="tf.constant({values}, dtype=tf.{dtype})",
    repro_value="tf.cast({expr}, tf.float64).numpy().tolist()",
    env={"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "OMP_NUM_THREADS": "1"},
    vjp=tf_vjp,
    repro_vjp=TF_REPRO,
)

APIS = [
    API(name="tf.nn.sigmoid_cross_entropy_with_logits", family="sigmoid", inputs="logits", targets="labels"),
    API(name="tf.nn.weighted_cross_entropy_with_logits", family="sigmoid", inputs="logits", targets="labels",
        params={"pos_weight": "pos_weight"}, defaults={"pos_weight": 1.0}),
    API(name="tf.nn.softmax_cross_entropy_with_logits", family="softmax", inputs="logits", targets="labels",
        params={"axis": "axis"}),
    API(name="tf.nn.sparse_softmax_cross_entropy_with_logits", family="sparse_softmax", inputs="logits",
        targets="labels"),
    API(name="tf.compat.v1.nn.softmax_cross_entropy_with_logits", family="softmax", inputs="logits",
        targets="labels", params={"axis": "dim"}),  # v1 spells it dim (axis too, but not both)
    # fixed sampled values, so the sampled objective is deterministic (subtract_log_q is always on)
    SAMPLED(name="tf.nn.sampled_softmax_loss", family="sampled_softmax"),
    SAMPLED(name="tf.nn.nce_loss", family="nce"),
    *_v1("tf.compat.v1.losses.sigmoid_cross_entropy", "sigmoid", "logits", "multi_class_labels",
         {"weight": "weights", "label_smoothing": "label_smoothing"}),
    *_v1("tf.compat.v1.losses.softmax_cross_entropy", "softmax", "logits", "onehot_labels",
         {"sample_weight": "weights", "label_smoothing": "label_smoothing"}),
    *_v1("tf.compat.v1.losses.sparse_softmax_cross_entropy", "sparse_softmax", "logits", "labels",
         {"sample_weight": "weights"}),
    KERAS(name="tf.keras.losses.binary_crossentropy", family="binary", params=SMOOTH, conventions=_BIN),
    KERAS(name="tf.keras.losses.binary_crossentropy", variant="from_logits", family="sigmoid", params=SMOOTH,
          conventions=_BIN, fixed={"from_logits": True}),
    KERAS(name="tf.keras.losses.categorical_crossentropy", family="categorical", params=SMOOTH),
    KERAS(name="tf.keras.losses.categorical_crossentropy", variant="from_logits", family="softmax", params=SMOOTH,
          fixed={"from_logits": True}),
    KERAS(name="tf.keras.losses.sparse_categorical_crossentropy", family="sparse_categorical",
          params={"ignore_index": "ignore_class"}),
    KERAS(name="tf.keras.losses.sparse_categorical_crossentropy", variant="from_logits", family="sparse_softmax",
          params={"ignore_index": "ignore_class"}, fixed={"from_logits": True}),
]
