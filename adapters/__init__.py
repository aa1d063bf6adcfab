"""Adapters: each framework is one module holding a `FRAMEWORK` and a table `APIS` of
`harness.spec.Api` entries. Adding an API is adding an entry; the runner never changes.

Importing an adapter module imports no framework: `Framework.setup()` does that, inside the
worker process that owns it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from harness.spec import Api

#: framework name -> adapter module
MODULES: dict[str, str] = {
    "torch": "adapters.torch",
    "tensorflow": "adapters.tensorflow",
    "jax": "adapters.jax",
}


@dataclass(frozen=True)
class Framework:
    """How to start a framework and move numpy arrays in and out of it.

    name:      framework name used in results ("torch", "tensorflow", "jax").
    package:   the distribution whose version is reported.
    aliases:   first component of qualified names -> module ("tf" -> "tensorflow").
    env:       environment the worker sets before importing (threads, log level, backend).
    setup:     imports and configures the framework (called once per worker).
    to_native: (numpy array) -> framework tensor of the same dtype (bfloat16 via ml_dtypes).
    to_numpy:  framework tensor -> numpy array of the same dtype.
    repro_imports / repro_array / repro_value: code templates for repro snippets;
               repro_array is formatted with {values} (a numpy expression) and {dtype}.
    """

    name: str
    package: str
    aliases: Mapping[str, str]
    setup: Callable[[], Any]
    to_native: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    repro_imports: str
    repro_array: str
    repro_value: str = "np.asarray({expr}, dtype=np.float64).tolist()"
    env: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, qualname: str) -> Callable[..., Any]:
        """The callable a public qualified name denotes ("tf.nn.x" -> tensorflow.nn.x)."""
        head, _, rest = qualname.partition(".")
        obj: Any = importlib.import_module(self.aliases.get(head, head))
        for part in rest.split(".") if rest else ():
            obj = getattr(obj, part)
        return obj


def load(framework: str):
    """The adapter module of `framework` (no framework import happens here)."""
    try:
        mod = importlib.import_module(MODULES[framework])
    except KeyError:
        raise ValueError(f"unknown framework {framework!r} (known: {', '.join(MODULES)})") from None
    bad = [a.id for a in mod.APIS if a.framework != framework]
    if bad:
        raise ValueError(f"{MODULES[framework]}: entries not marked framework={framework!r}: {bad}")
    return mod


def all_apis(frameworks=None) -> list[Api]:
    out: list[Api] = []
    for fw in frameworks or MODULES:
        out.extend(load(fw).APIS)
    ids = [a.id for a in out]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"duplicate api ids: {sorted(dup)}")
    return out


def call_plan(api: Api, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for calling `api` on dtype-rounded numpy data (before conversion
    to framework tensors). The worker's call and the repro snippet both come from this."""
    kwargs: dict[str, Any] = {api.targets: t, api.inputs: x}
    given = {**api.defaults, **{k: v for k, v in params.items() if k != "reduction"}}
    for canonical, arg in api.params.items():
        if canonical in given:
            v = given[canonical]
            kwargs[arg] = np.asarray(v, dtype=x.dtype) if not isinstance(v, np.ndarray) else v
    if api.reduction_arg is not None:
        kwargs[api.reduction_arg] = params.get("reduction", "none")
    kwargs.update(api.fixed)
    return kwargs


def call(fw: Framework, api: Api, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Call `api` through framework `fw` (already set up) and return its output as numpy."""
    kwargs = call_plan(api, x, t, params)
    native = {k: (fw.to_native(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    if api.prepare is not None:
        pname, pkw = api.prepare
        native[api.inputs] = fw.resolve(pname)(native[api.inputs], **pkw)
    out = fw.resolve(api.name)(**native)
    return fw.to_numpy(out)
