"""A test-only framework, "faulty": elementwise sigmoid cross-entropy with logits in numpy
float64, which injects a fault when a logit takes one of the magic values below. It lets the
tests crash, hang and slow down a worker on purpose (tests/test_faults.py, tests/test_resume.py).

Registered through the out-of-tree adapter variable (adapters.ENV_EXTRA):

    XENTC_ADAPTERS="faulty=faulty_adapter,missing=faulty_adapter_missing"

with this directory on PYTHONPATH (the workers are spawned: they import it by name).
`missing` (tests/faulty_adapter_missing.py) is a framework that is not installed.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from adapters import Framework
from harness.spec import Api

NAME = "faulty"
HERE = os.path.dirname(os.path.abspath(__file__))
#: the environment that registers the two test frameworks (merge it into os.environ / a subprocess env)
ENV = {"XENTC_ADAPTERS": "faulty=faulty_adapter,missing=faulty_adapter_missing"}

#: logit values that trigger a fault (all exact in float32 and float64)
ABORT = 1234.5  # os.abort(): the worker dies of SIGABRT
SEGFAULT = 2345.5  # a read of address 0: SIGSEGV
HANG = 3456.5  # sleeps for an hour: the call times out
RAISE = 4567.5  # raises RuntimeError: a `raised` row
SLOW = 5678.5  # sleeps SLOW_S, then computes normally
SLOW_S = 0.05
MAGIC = (ABORT, SEGFAULT, HANG, RAISE, SLOW)


def env(base: dict | None = None) -> dict:
    """`base` (default os.environ) with the test frameworks registered and this directory on
    PYTHONPATH, for a subprocess (`xentc run`) or for spawned workers."""
    e = dict(os.environ if base is None else base)
    e.update(ENV)
    paths = [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p]
    if HERE not in paths:
        e["PYTHONPATH"] = os.pathsep.join([HERE, *paths])
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return e


def sigmoid_loss(logits, labels):
    """max(x, 0) - x*z + log1p(exp(-|x|)) in float64, returned in the logits' dtype; the faults
    above first."""
    x = np.asarray(logits)
    z = np.asarray(labels)
    if np.any(x == ABORT):
        os.abort()
    if np.any(x == SEGFAULT):
        import ctypes

        ctypes.string_at(0)  # SIGSEGV
    if np.any(x == HANG):
        time.sleep(3600)
    if np.any(x == RAISE):
        raise RuntimeError("injected fault: logit 4567.5")
    if np.any(x == SLOW):
        time.sleep(SLOW_S)
    xf = x.astype(np.float64)
    zf = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.maximum(xf, 0.0) - xf * zf + np.log1p(np.exp(-np.abs(xf)))
    return out.astype(x.dtype)


def _setup():
    # nothing heavy: the module itself is the framework
    return sys.modules[__name__]


FRAMEWORK = Framework(
    name=NAME,
    package="numpy",  # the version the worker reports
    aliases={},
    setup=_setup,
    to_native=lambda a: np.asarray(a),
    to_numpy=lambda t: np.asarray(t),
    repro_imports="import numpy as np, faulty_adapter",
    repro_array="np.asarray({values}, dtype=np.{dtype})",
    vjp=None,  # no autodiff: gradient rows are `unsupported`
)

API_ID = "faulty_adapter.sigmoid_loss"
APIS = [
    Api(name=API_ID, family="sigmoid", inputs="logits", targets="labels", reductions=("none",),
        dtypes=("float32", "float64"), framework=NAME),
]
