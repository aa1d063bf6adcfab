"""Runnable three-line repro snippets: plain Python that calls the framework API on the
exact (dtype-rounded) inputs and prints the framework's value beside the reference's. A
gradient row's snippet differentiates the call with the framework's own autodiff (the
framework's `repro_vjp`) and prints that gradient beside the reference gradient.

The snippet is cut down to the worst element (elementwise families) or worst row (row-wise
families) when the loss is unreduced, so it stays small; otherwise it carries the whole case.
Where a run directory is given (`arrays`, as `xentc run` does), an array of more than
EXTERNAL_MIN elements is not written in the snippet but saved once, by content, as
DIR/repro/arrays/<sha256>.npy, and the snippet loads it (`np.load('repro/arrays/...')`: run it
from the run directory). Without, it is written in as hex (a reduced 32,768-class case: 4 MiB).
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from adapters import Framework, call_plan, gradient_args, split_init, target_transform
from harness import oracle, refcache
from harness.dtypes import reference_precision
from harness.spec import FAMILIES, Api

INLINE_MAX = 64  # arrays up to this many elements are written as literals, larger ones as hex
#: literals and references of inputs up to this size are memoised (1,024 entries each at most)
MEMO_MAX_BYTES = 16384
#: arrays of more than this many elements are saved under ARRAYS rather than written in (`arrays`)
EXTERNAL_MIN = 4096
#: where snippets load the saved arrays from, relative to the run directory
ARRAYS = "repro/arrays"


def arrays_dir(run_dir: str) -> str:
    """Where the run in run_dir keeps its snippets' saved arrays (ARRAYS)."""
    return os.path.join(run_dir, *ARRAYS.split("/"))


def _saved(a: np.ndarray, arrays: str) -> str:
    """np.load of a copy of `a` saved in the directory `arrays` under the SHA-256 of its dtype,
    shape and bytes (written once: the file of one content is the same in every run)."""
    name = refcache.content_hash(a).hex()[:32] + ".npy"
    path = os.path.join(arrays, name)
    if not os.path.exists(path):
        os.makedirs(arrays, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, a, allow_pickle=False)
        os.replace(tmp, path)  # never a half-written file under the final name
    return f"np.load({ARRAYS + '/' + name!r})"


def _exact(a: np.ndarray) -> np.ndarray:
    """a as the snippet holds it: int64, bool or float64 (exact for every dtype of the harness)."""
    return a.astype(np.int64 if a.dtype.kind in "iu" else bool if a.dtype.kind == "b" else np.float64)


def _literal(a: np.ndarray, arrays: str | None = None) -> str:
    """A numpy expression of exactly a's values (memoised: the APIs of a family share a case's
    arrays, so a run writes the same literal many times); a large one saved under `arrays`."""
    a = np.ascontiguousarray(a)
    if arrays is not None and a.size > EXTERNAL_MIN:
        return _saved(np.ascontiguousarray(_exact(a)), arrays)
    if a.nbytes > MEMO_MAX_BYTES:  # a whole large case: written once, never kept
        return _literal_of.__wrapped__(a.dtype, a.shape, a.tobytes())
    return _literal_of(a.dtype, a.shape, a.tobytes())


@lru_cache(maxsize=1024)
def _literal_of(dtype: np.dtype, shape: tuple[int, ...], data: bytes) -> str:
    a = np.frombuffer(data, dtype=dtype).reshape(shape)
    if a.dtype.kind in "iu":
        return f"np.array({a.astype(np.int64).tolist()!r}, dtype=np.int64)"
    if a.dtype.kind == "b":
        return f"np.array({a.tolist()!r}, dtype=bool)"
    f = a.astype(np.float64)
    if f.size <= INLINE_MAX:  # Python's repr of the nested lists, with nan and inf spelled as numpy's
        text = repr(f.tolist()).replace("nan", "np.nan").replace("inf", "np.inf")
        return f"np.array({text}, dtype=np.float64)"
    return f"np.frombuffer(bytes.fromhex({f.astype('<f8').tobytes().hex()!r}), '<f8').reshape({f.shape})"


def cut(params, x, worst_index) -> tuple[slice, ...] | None:
    """Where minimise cuts the inputs (and the output of the loss, and its gradients with respect
    to the inputs and targets): the worst output's index as slices, its axes kept; None where it
    keeps the whole case."""
    if params.get("reduction", "none") != "none" or not worst_index:
        return None
    if params.get("axis", -1) % np.ndim(x) != np.ndim(x) - 1:
        return None  # the output's index is not the inputs' leading index
    return tuple(slice(k, k + 1) for k in worst_index)


def minimise(api: Api, x, t, params, worst_index):
    """Inputs cut to the worst element/row when the result is unreduced (cut); else unchanged."""
    sl = cut(params, x, worst_index)
    if sl is None:
        return x, t, params
    fam = FAMILIES[api.family]
    p = dict(params)
    if fam.rowwise or api.convention("axis_mean"):  # one output per row: keep the row
        for k in ("sample_weight", "where", "true_expected_count"):
            if k in p:
                p[k] = p[k][sl]
        if "weight" in p and not fam.rowwise:  # an element weight: the row's weights
            p["weight"] = _cut(p["weight"], sl, np.ndim(x))
        return x[sl], t[sl], p
    if "sample_weight" in p:  # one per sample: the element's row
        p["sample_weight"] = p["sample_weight"][sl[:-1]]
    if "pos_weight" in p and np.ndim(p["pos_weight"]) == 1 and p["pos_weight"].shape[0] > 1:
        p["pos_weight"] = p["pos_weight"][sl[-1]]
    if "weight" in p:
        p["weight"] = _cut(p["weight"], sl, np.ndim(x))
    return x[sl], t[sl], p


#: the reference values snippets printed, by what they are of: the APIs of a family share them
_REFERENCES: dict[tuple, np.ndarray] = {}
_REFERENCES_MAX = 1024


def _key(v):
    """A hashable key of a value: an array by its dtype, shape and bytes."""
    if isinstance(v, np.ndarray):
        v = np.ascontiguousarray(v)
        return ("array", v.dtype, v.shape, v.tobytes())
    if isinstance(v, (tuple, list)):
        return tuple(_key(u) for u in v)
    return repr(v)


def _reference(family: str, x, t, params, conv, prec, quantity: str) -> np.ndarray:
    """The reference a snippet prints (the loss, or one gradient), in float64; memoised."""
    size = sum(np.asarray(v).nbytes for v in (x, t, *params.values()) if isinstance(v, np.ndarray))
    if size > MEMO_MAX_BYTES:
        key = None  # a whole large case: computed, never kept
    else:
        key = (family, quantity, _key(x), _key(t), tuple(sorted((k, _key(v)) for k, v in params.items())),
               tuple(sorted(conv.items())), np.dtype(prec).str)
    if key is None or key not in _REFERENCES:
        if len(_REFERENCES) >= _REFERENCES_MAX:
            _REFERENCES.clear()

        def compute() -> dict[str, np.ndarray]:
            if quantity == "loss":
                return {"ref": np.asarray(oracle.loss(family, x, t, params, conv, prec)).astype(np.float64)}
            with np.errstate(over="ignore"):  # printed as inf beyond float64's range
                return {"ref": np.asarray(oracle.grad(family, x, t, params, conv, prec)[quantity][0]).astype(np.float64)}

        # persistent across runs (harness.refcache), as the runner's references are
        ref = refcache.cached(("repro", family, quantity, conv, np.dtype(prec).str, x, t, params),
                              compute)["ref"]
        if key is None:
            return ref
        _REFERENCES[key] = ref
    return _REFERENCES[key]


def _cut(w, sl, ndim: int):
    """w (broadcastable to the inputs' ndim-D shape, aligned on the right) cut by the inputs' slice
    sl on the axes it does not broadcast."""
    w = np.asarray(w)
    lead = ndim - w.ndim
    return w[tuple(sl[lead + d] if d + lead < len(sl) and w.shape[d] > 1 else slice(None)
                   for d in range(w.ndim))]


def snippet(fw: Framework, api: Api, dtype: str, x, t, params, worst_index, quantity: str = "loss",
            invalid: str | None = None, arrays: str | None = None, reference: np.ndarray | None = None) -> str:
    """Three lines: imports; the inputs; print(framework value, reference value) (a gradient:
    one more, the backward pass). worst_index: the worst output, or None for the whole case.
    invalid: the kind of an invalid case, printed where the reference value would be. arrays:
    the run's DIR/repro/arrays, where large arrays are saved (module docstring), or None.
    reference: the reference of `quantity` on the whole case (the runner holds it), which is cut
    where the inputs are; None, or a weight's gradient where the case is cut (a sum over every
    output, not over the cut one): computed here on the inputs as cut. The two are the same
    values (the loss's outputs, and so the rows of its gradients with respect to the inputs and
    targets, are each of their own inputs: tests/test_repro_arrays.py checks it on the corpus)."""
    sl = cut(params, x, worst_index)
    x, t, params = minimise(api, x, t, params, worst_index)
    prec, _ = reference_precision(dtype)
    conv = {k: api.convention(k) for k in ("mean", "axis_mean")}
    if invalid:
        ref = None
    elif reference is not None and (sl is None or quantity != "grad_weights"):
        with np.errstate(over="ignore"):  # printed as inf beyond float64's range, as _reference does
            ref = np.asarray(reference if sl is None else np.asarray(reference)[sl]).astype(np.float64)
    else:
        ref = _reference(api.family, x, t, params, conv, prec, quantity)
    kwargs = call_plan(api, x, t, params)
    names = {id(v): n for n, v in (("x", x), ("t", t))}
    assigns, args = [], {}

    def array(k, v):
        var = names.get(id(v), k)
        dt = "int64" if v.dtype.kind in "iu" else "bool" if v.dtype.kind == "b" else dtype
        assigns.append(f"{var} = " + fw.repro_array.format(values=_literal(v, arrays), dtype=dt))
        return var

    tt = target_transform(api, params)
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray):
            expr = array(k, v)
            if k == api.inputs and api.prepare is not None:
                pname, pkw = api.prepare
                expr = f"{pname}({expr}{''.join(f', {a}={b!r}' for a, b in pkw.items())})"
            if k == api.targets and tt is not None:
                expr = f"{tt[0]}({expr}{''.join(f', {a}={b!r}' for a, b in tt[1].items())})"
            args[k] = expr
        elif isinstance(v, tuple):
            args[k] = "(" + ", ".join(array(f"{k}_{i}", u) for i, u in enumerate(v)) + ",)"
        else:
            args[k] = repr(v)
    init, rest = split_init(api, args)
    call = f"{api.name}({', '.join(f'{k}={v}' for k, v in rest.items())})"
    if init is not None:
        call = f"{api.name}({', '.join(f'{k}={v}' for k, v in init.items())})({', '.join(f'{k}={v}' for k, v in rest.items())})"
    if invalid:
        ref_txt = repr(f"invalid input ({invalid})")
    elif arrays is not None and ref.size > EXTERNAL_MIN:
        ref_txt = _saved(np.ascontiguousarray(ref, np.float64), arrays) + ".tolist()"
    else:
        ref_txt = repr(ref.tolist()).replace("nan", "float('nan')").replace("inf", "float('inf')")
    if quantity == "loss":
        return "\n".join([fw.repro_imports, "; ".join(assigns),
                          f"print({api.id!r}, {fw.repro_value.format(expr=call)}, 'reference:', {ref_txt})"]) + "\n"
    arg = gradient_args(api, params)[quantity]
    var = names.get(id(kwargs[arg]), arg)
    backward = fw.repro_vjp.format(var=var, expr=call, out="out", g="g")
    value = fw.repro_value.format(expr="g")
    return "\n".join([fw.repro_imports, "; ".join(assigns), backward,
                      f"print({api.id!r}, 'd/d{var}', None if g is None else {value}, 'reference:', {ref_txt})"]) + "\n"
