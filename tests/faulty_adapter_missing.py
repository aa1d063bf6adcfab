"""Test-only frameworks that never get as far as a call (registered with tests/faulty_adapter.py's
ENV; one module serving several frameworks, as adapters/keras.py does):

  missing  not installed: its setup() imports a module that does not exist. Every row of it
           must be `unsupported` with the reason, and the other frameworks of the run go on.
  broken   its setup() aborts the worker (a framework that crashes on import): `crashed` rows.
  stuck    its setup() never returns (a framework that hangs on import): `crashed` rows once
           the runner's start timeout passes.
"""
from __future__ import annotations

import importlib
import os
import time

import numpy as np

from adapters import Framework
from harness.spec import Api

GENERIC_NAME = "setup_faults"
MISSING_MODULE = "xentc_no_such_framework_module"


def _missing():
    return importlib.import_module(MISSING_MODULE)


def _broken():
    os.abort()


def _stuck():
    time.sleep(3600)


def _vjp(forward, wrt):  # never reached: these frameworks never start
    raise AssertionError("unreachable")


def _framework(name: str, setup) -> Framework:
    # with a vjp, as a real framework has: its gradient rows too wait for the worker to start
    return Framework(name=name, package="numpy", aliases={}, setup=setup, to_native=lambda a: np.asarray(a),
                     to_numpy=lambda t: np.asarray(t), repro_imports=f"import numpy as np, {MISSING_MODULE}",
                     repro_array="np.asarray({values}, dtype=np.{dtype})", vjp=_vjp)


FRAMEWORKS = {"missing": _framework("missing", _missing), "broken": _framework("broken", _broken),
              "stuck": _framework("stuck", _stuck)}

APIS = [
    Api(name=f"{MISSING_MODULE}.sigmoid_cross_entropy", family="sigmoid", inputs="logits", targets="labels",
        dtypes=("float32", "float64"), framework=GENERIC_NAME),
]
