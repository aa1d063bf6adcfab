"""Each framework's own reverse-mode autodiff behind one signature, for the gradient rows.

    vjp(forward, wrt) -> {name: gradient tensor, or None where the framework gives none}

`forward(values)` recomputes the output from {name: tensor} (the arguments differentiated);
the cotangent is ones of the output's shape, so the result is the gradient of the sum of the
outputs (harness.spec.GRADIENTS). Each function imports its framework when called (inside the
worker). The repro templates do the same in a snippet: {var} is the differentiated argument,
{expr} the call, {out} and {g} the names they bind.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping


def torch_vjp(forward: Callable[[dict], Any], wrt: Mapping[str, Any]) -> dict[str, Any]:
    """torch.autograd.grad with grad_outputs=ones; allow_unused, so an input the output does not
    reach (a detached target) gives None."""
    import torch

    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in wrt.items()}
    out = forward(leaves)
    if not out.requires_grad:  # nothing differentiable reaches the output
        return dict.fromkeys(wrt)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_outputs=torch.ones_like(out), allow_unused=True)
    return dict(zip(leaves, grads))


def torch_import_autograd() -> None:
    """What torch.autograd.grad imports on its first call with grad_outputs (torch.fx's
    symbolic shapes, and sympy: measured 0.27 s with torch 2.13), imported by one tiny call, so
    that the worker's set-up holds it as it holds `import torch`, and no row's seconds does."""
    import torch

    x = torch.zeros(1, requires_grad=True)
    torch.autograd.grad(x * 1, x, grad_outputs=torch.ones(1))


def tf_vjp(forward: Callable[[dict], Any], wrt: Mapping[str, Any]) -> dict[str, Any]:
    """tf.GradientTape with output_gradients=ones; an unconnected input gives None."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        for v in wrt.values():
            tape.watch(v)
        out = forward(dict(wrt))
    grads = tape.gradient(out, list(wrt.values()), output_gradients=tf.ones_like(out),
                          unconnected_gradients=tf.UnconnectedGradients.NONE)
    return {k: (None if g is None else tf.convert_to_tensor(g)) for k, g in zip(wrt, grads)}


def jax_vjp(forward: Callable[[dict], Any], wrt: Mapping[str, Any]) -> dict[str, Any]:
    """jax.vjp with a cotangent of ones. JAX always returns a gradient (zeros through
    stop_gradient), so it never gives None."""
    import jax
    import jax.numpy as jnp

    names = list(wrt)
    out, pullback = jax.vjp(lambda *vals: forward(dict(zip(names, vals))), *[wrt[k] for k in names])
    return dict(zip(names, pullback(jnp.ones_like(out))))


TORCH_REPRO = ("{var} = {var}.detach().requires_grad_(True); {out} = {expr}; "
               "{g}, = torch.autograd.grad({out}, {var}, torch.ones_like({out}), allow_unused=True)")
TF_REPRO = ("with tf.GradientTape() as tape: tape.watch({var}); {out} = {expr}\n"
            "{g} = tape.gradient({out}, {var}, output_gradients=tf.ones_like({out}))")
JAX_REPRO = "{out}, pullback = jax.vjp(lambda {var}: {expr}, {var}); {g}, = pullback(jnp.ones_like({out}))"
