"""JAX / optax cross-entropy APIs (CPU, jax_enable_x64 so float64 is float64).

optax losses return the unreduced loss (elementwise for sigmoid_binary_cross_entropy and
sigmoid_focal_loss, one value per row for the softmax ones) and take no weights or reductions.
softmax_cross_entropy(_with_integer_labels) and poly_loss_cross_entropy take `axis` and
`where` (optax >= 0.2.4: "elements to include in the computation").
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np

from adapters import Framework
from adapters.autodiff import JAX_REPRO, jax_vjp
from harness.spec import Api

API = partial(Api, framework="jax", inputs="logits", targets="labels")


def _setup():
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", os.environ.get("JAX_PLATFORMS", "cpu"))
    import optax  # noqa: F401  (resolved by qualified name)

    return jax


def _cache_env() -> dict[str, str]:
    """JAX's persistent compilation cache (every compiled function, however quick to compile),
    so that a second run on this machine compiles nothing: XENTC_CACHE_DIR, default
    $XDG_CACHE_HOME/xentc (~/.cache/xentc); XENTC_CACHE_DIR=off disables it. JAX keys its entries
    by the program, the jax/jaxlib version and the compiler options."""
    from harness.refcache import cache_root

    root = cache_root()
    if root is None:
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": os.path.join(root, "jax"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _jit(fn):
    import jax

    return jax.jit(fn)


def _to_native(a: np.ndarray):
    """The array on JAX's default device, its dtype kept. jax.device_put, not jnp.asarray: in
    jax 0.10 jnp.asarray compiles a staging function for every new shape (measured: 6-12 ms
    each, half the compilations of a cold float32 run)."""
    import jax

    return jax.device_put(a)


def _to_numpy(t) -> np.ndarray:
    return np.asarray(t)


def device_check(dev: str) -> str | None:
    import jax

    platforms = {d.platform for d in jax.devices()}
    return None if "gpu" in platforms else f"jax sees no GPU (devices: {', '.join(sorted(platforms))}; jax[cuda12] installed?)"


FRAMEWORK = Framework(
    name="jax",
    device_env={"cuda": {"JAX_PLATFORMS": "cuda"}},
    device_check=device_check,
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
         "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", **_cache_env()},
    vjp=jax_vjp,
    repro_vjp=JAX_REPRO,
    # as a training step runs them: under jax.jit, compiled once per shape; rows of cases stacked
    # into power-of-two buckets, so that the compiler sees few shapes (adapters.call_batch)
    compile=_jit,
    batch_rows=True,
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
