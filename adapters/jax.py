"""JAX / optax cross-entropy APIs (CPU, jax_enable_x64 so float64 is float64).

optax losses return the unreduced loss (elementwise for sigmoid_binary_cross_entropy and
sigmoid_focal_loss, one value per row for the softmax ones) and take no weights or reductions.
softmax_cross_entropy(_with_integer_labels) and poly_loss_cross_entropy take `axis` and
`where` (optax >= 0.2.4: "elements to include in the computation").
"""
from __future__ import annotations

from functools import partial

import numpy as np

from adapters import Framework
from adapters.autodiff import JAX_REPRO, jax_vjp
from harness.spec import Api

API = partial(Api, framework="jax", inputs="logits", targets="labels")


def _setup():
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    import optax  # noqa: F401  (resolved by qualified name)

    return jax


def _to_native(a: np.ndarray):
    import jax.numpy as jnp

    return jnp.asarray(a)


def _to_numpy(t) -> np.ndarray:
    return np.asarray(t)


FRAMEWORK = Framework(
    name="jax",
    package="jax",
    aliases={},
    setup=_setup,
    to_native=_to_native,
    to_numpy=_to_numpy,
    repro_imports=('import numpy as np, jax, jax.numpy as jnp, optax; '
                   'jax.config.update("jax_enable_x64", True)'),
    repro_array="jnp.asarray({values}, dtype=jnp.{dtype})",
    repro_value="np.asarray({expr}, dtype=np.float64).tolist()",
    env={"JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1",
         "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"},
    vjp=jax_vjp,
    repro_vjp=JAX_REPRO,
)

AXIS_WHERE = {"axis": "axis", "where": "where"}
APIS = [
    API(name="optax.sigmoid_binary_cross_entropy", family="sigmoid"),
    API(name="optax.softmax_cross_entropy", family="softmax", params=AXIS_WHERE),
    API(name="optax.softmax_cross_entropy_with_integer_labels", family="sparse_softmax", params=AXIS_WHERE),
    API(name="optax.safe_softmax_cross_entropy", family="softmax"),
    API(name="optax.sigmoid_focal_loss", family="sigmoid_focal", params={"alpha": "alpha", "gamma": "gamma"}),
    # optax's default epsilon is 2.0: run only on cases that state their Poly-1 coefficient
    API(name="optax.losses.poly_loss_cross_entropy", family="softmax", params={"poly_epsilon": "epsilon", **AXIS_WHERE},
        required=("poly_epsilon",)),
    # label smoothing is a separate function in optax: smooth_labels(labels, alpha), then the loss
    API(name="optax.softmax_cross_entropy", variant="smooth_labels", family="softmax",
        params={"label_smoothing": None}, prepare_targets=("optax.smooth_labels", {"alpha": "label_smoothing"}),
        required=("label_smoothing",)),
]
