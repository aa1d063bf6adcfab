"""A test-only framework, "missing", that is not installed: its setup() imports a module that
does not exist, as a framework absent from the machine would. Every row of it must be
`unsupported` with the reason, and the other frameworks of the run must go on
(tests/test_faults.py). Registered with tests/faulty_adapter.py's ENV."""
from __future__ import annotations

import importlib

import numpy as np

from adapters import Framework
from harness.spec import Api

NAME = "missing"
MISSING_MODULE = "xentc_no_such_framework_module"


def _setup():
    return importlib.import_module(MISSING_MODULE)


FRAMEWORK = Framework(
    name=NAME,
    package="numpy",
    aliases={},
    setup=_setup,
    to_native=lambda a: np.asarray(a),
    to_numpy=lambda t: np.asarray(t),
    repro_imports=f"import numpy as np, {MISSING_MODULE}",
    repro_array="np.asarray({values}, dtype=np.{dtype})",
)

APIS = [
    Api(name=f"{MISSING_MODULE}.sigmoid_cross_entropy", family="sigmoid", inputs="logits", targets="labels",
        dtypes=("float32", "float64"), framework=NAME),
]
