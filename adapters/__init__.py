"""Adapters: each framework is one module holding a `FRAMEWORK` and a table `APIS` of
`harness.spec.Api` entries. Adding an API is adding an entry; the runner never changes.

A module may serve several frameworks (Keras 3 on each backend): it then holds
`FRAMEWORKS` (name -> Framework) instead, and its entries are marked with the module's
generic name; `load` gives each framework its own copy of the table.

Importing an adapter module imports no framework: `Framework.setup()` does that, inside the
worker process that owns it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from harness.spec import DEVICES, INT_PARAMS, PARAM_KINDS, SCALAR_PARAMS, Api  # noqa: F401 (DEVICES re-exported)

#: framework name -> adapter module
MODULES: dict[str, str] = {
    "torch": "adapters.torch",
    "tensorflow": "adapters.tensorflow",
    "jax": "adapters.jax",
    "keras[tensorflow]": "adapters.keras",
    "keras[jax]": "adapters.keras",
    "keras[torch]": "adapters.keras",
    "keras[numpy]": "adapters.keras",
}
#: what `xentc run` and the test suite run unless told otherwise: every registered framework.
DEFAULT_FRAMEWORKS: tuple[str, ...] = tuple(MODULES)
#: Out-of-tree adapters: XENTC_ADAPTERS="name=module,..." registers more frameworks (an
#: environment variable, so the spawned workers see them too). They run when named in
#: --frameworks, never by default. The test suite's fault-injecting adapter comes in this way.
ENV_EXTRA = "XENTC_ADAPTERS"


#: where `xentc run --device` runs the APIs. The worker sets XENTC_DEVICE, the environment of
#: DEVICE_ENV and the framework's own device_env before the framework starts, then asks the
#: framework (device_check) whether it sees the device: a framework that does not is
#: `unsupported` there, never run somewhere else under the device's name. On "cpu" every GPU is
#: hidden (CUDA_VISIBLE_DEVICES=-1), so a CPU run stays one on a machine that has a GPU.
DEVICE_ENV: dict[str, dict[str, str]] = {"cpu": {"CUDA_VISIBLE_DEVICES": "-1"}, "cuda": {}}


def device() -> str:
    """The device this worker runs on (adapters.DEVICES)."""
    return os.environ.get("XENTC_DEVICE", "cpu")


class AdapterConfigError(ValueError):
    """A malformed XENTC_ADAPTERS: one line."""


def _extra_modules(spec: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, module = item.partition("=")
        if not sep or not name.strip() or not module.strip():
            raise AdapterConfigError(f"{ENV_EXTRA}: expected name=module, got {item!r}")
        if name.strip() in MODULES:
            raise AdapterConfigError(f"{ENV_EXTRA}: {name.strip()!r} is a built-in framework; give the adapter another name")
        out[name.strip()] = module.strip()
    return out


MODULES.update(_extra_modules(os.environ.get(ENV_EXTRA, "")))


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
    vjp:       the framework's reverse-mode autodiff (adapters.autodiff), or None when it has
               none (Keras' numpy backend): its gradient rows are then `unsupported`.
    repro_vjp: the snippet template of the same (adapters.autodiff.*_REPRO); repro_imports
               must import what it uses.
    compile:   the framework's compiler (jax.jit), or None: then each call is compiled once per
               (API, static arguments, array shapes) and reused, the loss and its gradients in one
               compiled function, as a training step runs them; repro snippets do the same
               (harness.repro). Without it every call runs eagerly.
    batch_rows: cases of one API with the same row shape, dtype and scalar parameters run as one
               call on their rows stacked (and padded to a power-of-two bucket, so a compiler sees
               few shapes), where each output row depends on its input row only (batch_key).
    device_env: device -> environment set before setup on that device (JAX_PLATFORMS=cuda).
    device_check: (device) -> why the framework cannot run there, or None when it can (called
               after setup for a device other than "cpu"); None: it runs on the CPU only.
    poisoned:  () -> why this process can compute nothing more, or None; asked after a case that
               raised. A CUDA context that met a device-side assert (torch, on an out-of-range
               class index) fails every later call: the worker answers the cases it ran, marks the
               rest `unrun` and ends, and the runner sends those to a new worker (harness.worker).
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
    vjp: Callable[[Callable[[dict], Any], Mapping[str, Any]], dict[str, Any]] | None = None
    repro_vjp: str = ""
    compile: Callable[[Callable], Callable] | None = None
    batch_rows: bool = False
    device_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    device_check: Callable[[str], str | None] | None = None
    poisoned: Callable[[], str | None] | None = None

    def resolve(self, qualname: str) -> Callable[..., Any]:
        """The callable a public qualified name denotes ("tf.nn.x" -> tensorflow.nn.x)."""
        head, _, rest = qualname.partition(".")
        obj: Any = importlib.import_module(self.aliases.get(head, head))
        for part in rest.split(".") if rest else ():
            obj = getattr(obj, part)
        return obj


@dataclass(frozen=True)
class Adapter:
    """One framework's table: how to run it, and its API entries."""

    framework: Framework
    apis: list[Api]


def load(framework: str) -> Adapter:
    """The adapter of `framework` (no framework import happens here)."""
    if framework not in MODULES:
        raise ValueError(f"unknown framework {framework!r} (known: {', '.join(MODULES)})")
    try:
        mod = importlib.import_module(MODULES[framework])
    except Exception as e:  # noqa: BLE001 - an out-of-tree module that is missing or broken
        raise AdapterConfigError(f"framework {framework!r}: cannot import its adapter module {MODULES[framework]!r} "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not (hasattr(mod, "FRAMEWORKS") or hasattr(mod, "FRAMEWORK")) or not hasattr(mod, "APIS"):
        raise AdapterConfigError(f"framework {framework!r}: {MODULES[framework]!r} is not an adapter module "
                                 "(it defines no FRAMEWORK and APIS)")
    fws = getattr(mod, "FRAMEWORKS", None) or {mod.FRAMEWORK.name: mod.FRAMEWORK}
    generic = getattr(mod, "GENERIC_NAME", framework)
    bad = [a.id for a in mod.APIS if a.framework not in (framework, generic)]
    if bad:
        raise AdapterConfigError(f"{MODULES[framework]}: entries not marked framework={generic!r}: {bad}")
    apis = [a if a.framework == framework else dataclasses.replace(a, framework=framework) for a in mod.APIS]
    return Adapter(fws[framework], apis)


def all_apis(frameworks=None) -> list[Api]:
    """Every entry of `frameworks` (default: every registered framework)."""
    out: list[Api] = []
    for fw in frameworks or MODULES:
        out.extend(load(fw).apis)
    keys = [(a.framework, a.id) for a in out]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ValueError(f"duplicate api ids: {sorted(dup)}")
    return out


def select(pattern: str, families=None, frameworks=None) -> list[Api]:
    """The entries (of `families`, default all) whose id or 'framework:id' matches `pattern`
    (fnmatch; square brackets also match literally, as in 'keras[jax]:keras.losses.*[from_logits]')."""
    import fnmatch
    import re

    literal = re.sub(r"[\[\]]", lambda m: f"[{m.group(0)}]", pattern)
    return [a for a in all_apis(frameworks)
            if (families is None or a.family in families)
            and any(fnmatch.fnmatchcase(s, pattern) or fnmatch.fnmatchcase(s, literal)
                    for s in (a.id, f"{a.framework}:{a.id}"))]


def call_plan(api: Api, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for calling `api` on dtype-rounded numpy data (before conversion
    to framework tensors). The worker's call and the repro snippet both come from this."""
    kwargs: dict[str, Any] = {api.targets: t, api.inputs: x}
    given = {**api.defaults, **{k: v for k, v in params.items() if k != "reduction"}}
    for canonical, arg in api.params.items():
        if canonical not in given or arg is None:  # absent, or consumed by prepare_targets / derive
            continue
        v = given[canonical]
        kind = PARAM_KINDS[canonical]
        if canonical in INT_PARAMS:
            kwargs[arg] = int(v)
        elif canonical in SCALAR_PARAMS:
            kwargs[arg] = float(v)  # a Python number, as users pass it
        elif kind == "bool":
            kwargs[arg] = bool(v)
        elif kind in ("int_array", "bool_array"):
            kwargs[arg] = np.asarray(v, dtype=np.int64 if kind == "int_array" else bool)
        else:
            kwargs[arg] = v if isinstance(v, np.ndarray) else np.asarray(v, dtype=x.dtype)
    if api.derive is not None:
        kwargs.update(api.derive(x, t, given))
    if api.reduction_arg is not None:
        r = params.get("reduction", "none")
        kwargs[api.reduction_arg] = api.reduction_values.get(r, r)
    kwargs.update(api.fixed)
    return kwargs


def target_transform(api: Api, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(qualified name, keyword arguments) of the function applied to the targets first, or None."""
    if api.prepare_targets is None:
        return None
    name, mapping = api.prepare_targets
    return name, {kw: float(params[canonical]) for kw, canonical in mapping.items()}


def split_init(api: Api, kwargs: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(constructor kwargs, call kwargs); constructor kwargs are None for a plain function."""
    if api.init_args is None:
        return None, kwargs
    init = {k: v for k, v in kwargs.items() if k in api.init_args}
    return init, {k: v for k, v in kwargs.items() if k not in api.init_args}


def gradient_args(api: Api, params: Mapping[str, Any]) -> dict[str, str]:
    """{gradient quantity: the keyword argument it differentiates} for this API and case."""
    from harness.oracle import weight_param
    from harness.spec import FAMILIES

    out = {"grad_logits": api.inputs}
    if FAMILIES[api.family].targets == "dense":
        out["grad_targets"] = api.targets
    wp = weight_param(params)
    if wp is not None and api.params.get(wp):
        out["grad_weights"] = api.params[wp]
    return out


def error_line(e: BaseException) -> str:
    """An exception as one line for a results row: "ExcType: first line of the message"."""
    msg = str(e).strip()
    return f"{type(e).__name__}: {(msg.splitlines()[0] if msg else '')[:300]}"


def _forward(fw: Framework, api: Api, params: Mapping[str, Any], fixed: Mapping[str, Any]):
    """forward(arrays) -> the API's output, from {keyword: native array}; `fixed` holds the
    non-array keyword arguments."""
    tt = target_transform(api, params)
    fn = fw.resolve(api.name)

    def forward(arrays: Mapping[str, Any]):
        k = {**fixed, **arrays}
        if api.prepare is not None:
            pname, pkw = api.prepare
            k[api.inputs] = fw.resolve(pname)(k[api.inputs], **pkw)
        if tt is not None:
            k[api.targets] = fw.resolve(tt[0])(k[api.targets], **tt[1])
        init, rest = split_init(api, k)
        return fn(**rest) if init is None else fn(**init)(**rest)

    return forward


#: this worker's functions of {keyword: array} -> {quantity: output}, as written (_computed) and
#: framework-compiled (_compiled): (framework, API, quantities, static arguments) -> function
_COMPUTE: dict[tuple, Callable] = {}
_COMPILED: dict[tuple, Callable] = {}


def _key(fw: Framework, api: Api, params: Mapping[str, Any], fixed: Mapping[str, Any],
         quantities: tuple[str, ...]) -> tuple:
    return fw.name, api.id, quantities, repr(sorted(fixed.items())), repr(target_transform(api, params))


def _computed(fw: Framework, api: Api, params: Mapping[str, Any], fixed: Mapping[str, Any],
              quantities: tuple[str, ...]) -> Callable:
    """The function of {keyword: array} -> {quantity: output} that the framework compiles: the loss,
    and the gradients by the framework's own autodiff, in one backward pass over every argument
    differentiated (as a training step takes them: the compiler sees one forward and one
    backward; measured, JAX float32 corpus in one process, 3 runs alternated: tracing 0.86-0.90 s
    against 0.95-0.96 s with a pass per gradient, the same values on the whole corpus). When it
    raises, call compiles each quantity on its own; cached per _key."""
    key = _key(fw, api, params, fixed, quantities)
    if key not in _COMPUTE:
        forward = _forward(fw, api, params, fixed)
        args = gradient_args(api, params)
        wrt = [args[q] for q in quantities if q != "loss"]

        def compute(arrays):
            out = {}
            if "loss" in quantities:
                out["loss"] = forward(arrays)
            if wrt:
                grads = fw.vjp(lambda over: forward({**arrays, **over}), {a: arrays[a] for a in wrt})
                out.update((q, grads[args[q]]) for q in quantities if q != "loss")
            return out

        _COMPUTE[key] = compute
    return _COMPUTE[key]


def _compiled(fw: Framework, api: Api, params: Mapping[str, Any], fixed: Mapping[str, Any],
              quantities: tuple[str, ...]) -> Callable:
    """The framework-compiled _computed; cached, so that the compiler sees each (API, static
    arguments) once and each array shape once (its own cache)."""
    key = _key(fw, api, params, fixed, quantities)
    if key not in _COMPILED:
        _COMPILED[key] = fw.compile(_computed(fw, api, params, fixed, quantities))
    return _COMPILED[key]


def _native_plan(fw: Framework, api: Api, x: np.ndarray, t: np.ndarray,
                 params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The compiled call's arguments: (its arrays as the framework's, its static arguments), or
    None where it runs eagerly (a static argument that is a tuple of arrays)."""
    kwargs = call_plan(api, x, t, params)
    fixed = {k: v for k, v in kwargs.items() if not isinstance(v, np.ndarray)}
    if any(isinstance(v, tuple) for v in fixed.values()):
        return None
    return {k: fw.to_native(v) for k, v in kwargs.items() if isinstance(v, np.ndarray)}, fixed


def call(fw: Framework, api: Api, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any],
         quantities: tuple[str, ...] = ("loss",), compiled: bool = True) -> dict[str, tuple[str, Any]]:
    """Call `api` through framework `fw` (already set up): {quantity: (kind, payload)} with kind
    "ok" (a numpy array), "none" (the framework returned no gradient) or "raised" (the first
    line of the exception). An exception in the loss itself propagates (every quantity of the
    call failed). Eagerly, the loss is one call and each gradient its own forward and backward
    pass, so one that raises (a derivative not implemented) loses no other. With the framework's
    compiler (compiled, and fw.compile), the loss and gradients are one compiled function; when
    it raises, each quantity is compiled on its own, so again a failing one loses no other."""
    planned = _native_plan(fw, api, x, t, params) if compiled and fw.compile is not None else None
    if planned is not None:
        arrays, fixed = planned
        try:
            res = _compiled(fw, api, params, fixed, tuple(quantities))(arrays)
            return {q: ("ok", fw.to_numpy(v)) for q, v in res.items()}
        except Exception:  # noqa: BLE001 - which quantity failed: each on its own below
            if len(quantities) == 1:
                raise
        out = {}
        if "loss" in quantities:  # raises when the loss fails
            out["loss"] = ("ok", fw.to_numpy(_compiled(fw, api, params, fixed, ("loss",))(arrays)["loss"]))
        for q in quantities:
            if q != "loss":
                try:
                    out[q] = ("ok", fw.to_numpy(_compiled(fw, api, params, fixed, (q,))(arrays)[q]))
                except Exception as e:  # noqa: BLE001 - a backward that raises is that row's result
                    out[q] = ("raised", error_line(e))
        return {q: out[q] for q in quantities}
    return _call_eager(fw, api, x, t, params, quantities)


#: the widest row (elements) that batch_key stacks with others
BATCH_MAX_ROW = 4096


def batch_key(api: Api, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any], quantities: tuple[str, ...],
              invalid: str | None = None) -> tuple | None:
    """What cases must share to run as one call on their stacked rows, or None when this one runs
    alone. Batched: a valid case of 2-D inputs (rows x classes, class axis last) with at least one
    row, unreduced, whose parameters are all scalars (a weight array may be per row or shared:
    it runs alone), with no gradient of a weight (shared by the rows). Each output row then
    depends on its own input row only, for every family but the sampled ones; in an elementwise
    family each output element depends on its own input element only, so its cases are stacked
    as one column of elements ("flat"), whatever their number of columns, unless the API averages
    each row's elements (convention axis_mean): then its rows are stacked. Rows of more than
    BATCH_MAX_ROW elements run alone, at their own shape: the compiler may reduce a wide row in
    another order at another number of rows (measured: keras[jax], 2 x 32,768 classes against
    the 8-row bucket, 2 of 19,236 rows changed), and padding them buys little."""
    from harness.spec import SAMPLED_FAMILIES

    if (invalid or api.family in SAMPLED_FAMILIES or np.ndim(x) != 2 or x.shape[0] == 0
            or params.get("reduction", "none") != "none" or "axis" in params or "grad_weights" in quantities
            or any(isinstance(v, np.ndarray) and v.ndim > 0 for v in params.values())):
        return None
    scalars = tuple(sorted((k, repr(v.item() if isinstance(v, np.ndarray) else v))
                           for k, v in params.items() if k != "reduction"))
    flat = _flat(api, [(x, t)])
    if not flat and x.shape[1] > BATCH_MAX_ROW:
        return None
    rows = ("flat",) if flat else (x.shape[1:], np.shape(t)[1:])
    return (api.id, *rows, scalars, tuple(quantities))


def _flat(api: Api, pairs: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether cases of `api` stack as one column of elements: an elementwise family, targets
    shaped as the inputs, and no mean over each row's elements (convention axis_mean)."""
    from harness.spec import FAMILIES

    return (not FAMILIES[api.family].rowwise and not api.convention("axis_mean")
            and all(np.shape(t) == np.shape(x) for x, t in pairs))


def _bucket(n: int) -> int:
    """Rows padded to the next power of two (at least 8): few shapes, at most twice the work."""
    return max(8, 1 << (n - 1).bit_length())


def _stacked(api: Api, items: list[tuple[np.ndarray, np.ndarray, Mapping[str, Any]]]):
    """The cases of one batch_key stacked (an elementwise family's elements as one column) and
    padded to _bucket rows with copies of the last row: (x, t, each case's rows, flat)."""
    flat = _flat(api, [(x, t) for x, t, _ in items])
    xs = [x.reshape(-1, 1) if flat else x for x, _, _ in items]
    ts = [t.reshape(-1, 1) if flat else t for _, t, _ in items]
    rows = [len(x) for x in xs]
    n = sum(rows)
    pad = _bucket(n) - n
    x = np.concatenate([*xs, np.repeat(xs[-1][-1:], pad, axis=0)])
    t = np.concatenate([*ts, np.repeat(ts[-1][-1:], pad, axis=0)])
    return x, t, rows, flat


def _unstacked(out: dict[str, tuple[str, Any]], items, rows: list[int], flat: bool) -> list[tuple[str, Any]] | None:
    """Each case's rows cut out of every output of a stacked call (_stacked), as call_batch
    returns them; None where an output is not one row per stacked row."""
    n = _bucket(sum(rows))
    if not all(k == "ok" and np.ndim(v) >= 1 and np.shape(v)[0] == n and (not flat or np.shape(v) == (n, 1))
               for k, v in out.values()):
        return None
    edges = np.cumsum([0, *rows])
    return [("ok", {q: ("ok", v[a:b].reshape(np.shape(it[0])) if flat else v[a:b]) for q, (_, v) in out.items()})
            for a, b, it in zip(edges, edges[1:], items)]


def call_batch(fw: Framework, api: Api, items: list[tuple[np.ndarray, np.ndarray, Mapping[str, Any]]],
               quantities: tuple[str, ...] = ("loss",)) -> list[tuple[str, Any]]:
    """Cases of one batch_key as one call: their rows stacked (an elementwise family's elements as
    one column), padded to _bucket rows with copies of the last row, then each case's rows cut
    out of every output. One case alone is padded too, so that the cases of one API and row
    shape share the compiled function of a few bucket shapes. Returns, per case,
    ("ok", {quantity: (kind, payload)}) or ("raised", message). When the stacked call raises,
    or returns outputs that are not one row per input row, each case is called on its own
    (call_each); when it leaves the process unable to compute (poisoned), every case is UNRUN."""
    x, t, rows, flat = _stacked(api, items)
    try:
        got = _unstacked(call(fw, api, x, t, items[0][2], quantities), items, rows, flat)
    except Exception as e:  # noqa: BLE001 - one of the cases raises: find which, one at a time
        why = poisoned(fw, [("raised", error_line(e))])
        if why:  # none can run here now: each goes to a new worker, on its own
            return [(UNRUN, why)] * len(items)
        got = None
    return call_each(fw, api, items, quantities) if got is None else got


#: this worker's compiled bundles: the functions side by side (by identity) -> the program
_BUNDLES: dict[tuple, Callable] = {}


def _traced(f: Callable, arrays: Any) -> Any:
    """f(arrays) as a bundle's program is traced, or None where it raises there (invalid input:
    measured, 25 of the 57 invalid cases of JAX's float32 corpus raise while traced, on a shape or
    a dtype): the program is built without it, and call_bundle runs that part on its own."""
    try:
        return f(arrays)
    except Exception:  # noqa: BLE001 - the part's own call raises it again, as alone
        return None


def call_bundle(fw: Framework, parts: list[tuple[Api, list, tuple[str, ...], bool]],
                log_errors: bool = False) -> list[tuple[str, Any]]:
    """Several calls of a compiling framework (fw.compile) as one compiled program. Each part
    (api, items, quantities, batched) is a call as call_batch (batched: its cases' rows stacked)
    or call_each (each case at its own shape) would make it; their functions (_computed) go side
    by side into one program, compiled once: a compilation has a cost of its own beside its
    functions' (measured, XLA:CPU, a softmax loss and its gradients: 77 ms alone, 46-52 ms each
    among 4 to 8 in one program; runner.MAX_BUNDLE_PROGRAMS). Each function's values are those it
    computes alone (tests/test_batching.py). Returns
    every part's results in order, as call_batch and call_each return them. A part that runs
    eagerly (_native_plan), or whose function raises while the program is traced (invalid
    input: a shape or dtype the API rejects; _traced leaves it out of the program), runs on its
    own as before, and so raises as it does alone; so does every part when the program cannot be
    built or run, and a batch whose outputs are not one row per row. After a part that left the
    process unable to compute (poisoned), the rest are UNRUN."""
    fns, args, where = [], [], []  # where: per part, its functions' positions (and its stacking)
    for api, items, quantities, batched in parts:
        cases = items
        stack = None
        if batched:
            x, t, rows, flat = _stacked(api, items)
            cases, stack = [(x, t, items[0][2])], (rows, flat)
        try:
            planned = [_native_plan(fw, api, x, t, p) for x, t, p in cases] if fw.compile is not None else [None]
        except Exception:  # noqa: BLE001 - bad input the plan rejects: raised by the part's own call
            planned = [None]
        if any(p is None for p in planned):
            where.append(None)
            continue
        where.append((list(range(len(fns), len(fns) + len(cases))), stack))
        for (_, _, p), (arrays, fixed) in zip(cases, planned):
            fns.append(_computed(fw, api, p, fixed, tuple(quantities)))
            args.append(arrays)
    outs = None
    if fns:
        key = tuple(map(id, fns))
        if key not in _BUNDLES:
            _BUNDLES[key] = fw.compile(lambda arrays, fns=tuple(fns): [_traced(f, a) for f, a in zip(fns, arrays)])
        try:
            outs = [None if o is None else {q: ("ok", fw.to_numpy(v)) for q, v in o.items()}
                    for o in _BUNDLES[key](args)]
        except Exception:  # noqa: BLE001 - which case raised: each part on its own below
            outs = None
    results: list[tuple[str, Any]] = []
    for (api, items, quantities, batched), w in zip(parts, where):
        why = poisoned(fw, results)
        if why:  # a part before left the process unable to compute: the rest go to a new worker
            results.extend([(UNRUN, why)] * len(items))
            continue
        got = None
        if w is not None and outs is not None:
            pos, stack = w
            if all(outs[i] is not None for i in pos):
                got = _unstacked(outs[pos[0]], items, *stack) if stack else [("ok", outs[i]) for i in pos]
        if got is None:
            got = (call_batch(fw, api, items, quantities) if batched
                   else call_each(fw, api, items, quantities, log_errors=log_errors))
        results.extend(got)
    return results


def call_each(fw: Framework, api: Api, items: list[tuple[np.ndarray, np.ndarray, Mapping[str, Any]]],
              quantities: tuple[str, ...] = ("loss",), log_errors: bool = False,
              times: list[float] | None = None) -> list[tuple[str, Any]]:
    """Each case in a call of its own: per case ("ok", {quantity: (kind, payload)}) or
    ("raised", message) when its loss raised (log_errors: its traceback to stderr, the worker's log),
    or (UNRUN, why) for the cases after one that left the process unable to compute (poisoned).
    times: a list this appends each case's seconds to (0 for a case not run)."""
    res: list[tuple[str, Any]] = []
    for i, (x, t, p) in enumerate(items):
        t0 = time.perf_counter()
        try:
            res.append(("ok", call(fw, api, x, t, p, quantities)))
        except Exception as e:  # noqa: BLE001 - any framework error becomes a row
            if log_errors:
                import traceback

                traceback.print_exc()
            res.append(("raised", error_line(e)))
        if times is not None:
            times.append(time.perf_counter() - t0)
        why = poisoned(fw, res[-1:])
        if why:  # the process can compute no more: the cases after this one are not run here
            if times is not None:
                times.extend([0.0] * (len(items) - i - 1))
            return res + [(UNRUN, why)] * (len(items) - i - 1)
    return res


#: the result of a case a worker did not run: an earlier case left its process unable to
#: compute (Framework.poisoned); the runner sends it to a new worker
UNRUN = "unrun"


def poisoned(fw: Framework, results: list[tuple[str, Any]]) -> str | None:
    """Why fw's process can compute no more after these results (Framework.poisoned), or None;
    asked only when one of them raised, in its loss or in a gradient, or was not run."""
    def raised(r):
        return r[0] in ("raised", UNRUN) or (r[0] == "ok" and any(k == "raised" for k, _ in r[1].values()))

    if fw.poisoned is None or not any(raised(r) for r in results):
        return None
    return fw.poisoned()


def _call_eager(fw: Framework, api: Api, x: np.ndarray, t: np.ndarray, params: Mapping[str, Any],
                quantities: tuple[str, ...] = ("loss",)) -> dict[str, tuple[str, Any]]:
    """call, op by op: the loss in one call, each gradient its own forward and backward pass."""
    kwargs = call_plan(api, x, t, params)

    def native(v):
        if isinstance(v, np.ndarray):
            return fw.to_native(v)
        if isinstance(v, tuple):
            return tuple(native(u) for u in v)
        return v

    kw = {k: native(v) for k, v in kwargs.items()}
    forward = _forward(fw, api, params, kw)
    out: dict[str, tuple[str, Any]] = {}
    if "loss" in quantities:
        out["loss"] = ("ok", fw.to_numpy(forward({})))
    args = gradient_args(api, params)
    for q in quantities:
        if q == "loss":
            continue
        arg = args[q]
        try:
            g = fw.vjp(forward, {arg: kw[arg]})[arg]
            out[q] = ("none", "") if g is None else ("ok", fw.to_numpy(g))
        except Exception as e:  # noqa: BLE001 - a backward that raises is that row's result
            out[q] = ("raised", error_line(e))
    return out
