"""TensorFlow (CPU) cross-entropy APIs, including tf.keras.losses (Keras 3 on the
TensorFlow backend, which is what `tf.keras` is in TF >= 2.16).

Conventions:
* tf.nn.*_with_logits return the unreduced loss (elementwise, or one value per row).
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
from harness.spec import Api

API = partial(Api, framework="tensorflow")
KERAS = partial(API, inputs="y_pred", targets="y_true", conventions={"axis_mean": True})
SMOOTH = {"label_smoothing": "label_smoothing"}


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


FRAMEWORK = Framework(
    name="tensorflow",
    package="tensorflow-cpu",
    aliases={"tf": "tensorflow"},
    setup=_setup,
    to_native=_to_native,
    to_numpy=_to_numpy,
    repro_imports="import numpy as np, tensorflow as tf",
    repro_array="tf.constant({values}, dtype=tf.{dtype})",
    repro_value="tf.cast({expr}, tf.float64).numpy().tolist()",
    env={"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "OMP_NUM_THREADS": "1"},
)

APIS = [
    API(name="tf.nn.sigmoid_cross_entropy_with_logits", family="sigmoid", inputs="logits", targets="labels"),
    API(name="tf.nn.weighted_cross_entropy_with_logits", family="sigmoid", inputs="logits", targets="labels",
        params={"pos_weight": "pos_weight"}, defaults={"pos_weight": 1.0}),
    API(name="tf.nn.softmax_cross_entropy_with_logits", family="softmax", inputs="logits", targets="labels"),
    API(name="tf.nn.sparse_softmax_cross_entropy_with_logits", family="sparse_softmax", inputs="logits",
        targets="labels"),
    KERAS(name="tf.keras.losses.binary_crossentropy", family="binary", params=SMOOTH),
    KERAS(name="tf.keras.losses.binary_crossentropy", variant="from_logits", family="sigmoid", params=SMOOTH,
          fixed={"from_logits": True}),
    KERAS(name="tf.keras.losses.categorical_crossentropy", family="categorical", params=SMOOTH, conventions={}),
    KERAS(name="tf.keras.losses.categorical_crossentropy", variant="from_logits", family="softmax", params=SMOOTH,
          conventions={}, fixed={"from_logits": True}),
    KERAS(name="tf.keras.losses.sparse_categorical_crossentropy", family="sparse_categorical", conventions={},
          params={"ignore_index": "ignore_class"}),
    KERAS(name="tf.keras.losses.sparse_categorical_crossentropy", variant="from_logits", family="sparse_softmax",
          conventions={}, params={"ignore_index": "ignore_class"}, fixed={"from_logits": True}),
]
