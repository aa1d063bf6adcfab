"""Cases and the JSON case-file format (README, "Case files").

    {"cases": [{"id": "my-case", "family": "sigmoid",
                "inputs": [[-20.0, "inf"]], "targets": [[0.0, 1.0]],
                "params": {"pos_weight": [1.0, 2.0], "reduction": "none"},
                "dtypes": ["float32"]}]}

Case files are data: parsed with `json`, never evaluated, imported or unpickled. Every
problem is reported as one `CaseFileError` line naming the file, the case id and the field.

An array is a nested list of numbers, or {"shape": [0, 5], "values": []} (values flat, in
row-major order): nested lists cannot carry a shape with an empty axis before the last
(an empty batch of 5 classes), so `Case.to_json` writes such arrays in that form.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from .dtypes import format_number, parse_number, to_dtype
from .spec import ARRAY_PARAMS, DTYPES, FAMILIES, INT_PARAMS, PARAM_KINDS, REDUCTIONS, SCALAR_PARAMS, category_of

MAX_FILE_BYTES = 256 * 1024 * 1024
#: numpy's broadcasting handles at most 32 dimensions (ndarray itself 64)
MAX_NDIM = 32
CASE_KEYS = {"id", "family", "inputs", "targets", "params", "dtypes", "provenance", "invalid"}


#: the parameters with one entry per row (of the inputs' leading axis) in a row-wise family
ROW_PARAMS = ("sample_weight", "where")


class CaseFileError(ValueError):
    """A malformed case file. str() is one line naming the problem."""


@dataclass(frozen=True, eq=False)
class Case:
    id: str
    family: str
    inputs: np.ndarray  # float64, exact values as written
    targets: np.ndarray  # float64, or int64 for index targets
    params: dict[str, Any] = field(default_factory=dict)  # arrays as float64, reduction as str
    dtypes: tuple[str, ...] | None = None  # None: every dtype an API supports
    provenance: dict[str, Any] | None = None  # where a found case came from (xentc explore)
    invalid: str | None = None  # the kind of invalid input it is (harness.badinput.KINDS); None: valid

    @property
    def category(self) -> str:
        return category_of(self.id)

    @property
    def reduction(self) -> str:
        return self.params.get("reduction", "none")

    def in_dtype(self, dtype: str, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Inputs, targets and array params rounded to `dtype`: exactly what a framework receives.
        rows: only those rows (leading axis) of the inputs, the targets and the per-row params
        (sample_weight, where), for a case taken a block of rows at a time (harness.chunked)."""
        inputs, targets, params = self.inputs, self.targets, dict(self.params)
        if rows is not None:
            n = inputs.shape[0]
            inputs, targets = inputs[rows], targets[rows]
            params.update({k: params[k][rows] for k in ROW_PARAMS
                           if k in params and np.ndim(params[k]) and np.shape(params[k])[0] == n})
        params = {k: (to_dtype(v, dtype) if k in ARRAY_PARAMS else v) for k, v in params.items()}
        x = to_dtype(inputs, dtype)
        if self.invalid == "int_inputs":  # the invalid kinds that are about the inputs' dtype
            x = inputs.astype(np.int32)
        elif self.invalid == "bool_inputs":
            x = inputs != 0
        return x, to_dtype(targets, dtype), params

    def to_json(self) -> dict[str, Any]:
        def arr(a: np.ndarray):
            a = np.asarray(a)
            if 0 in a.shape[:-1]:  # nested lists would lose the axes after the empty one
                return {"shape": list(a.shape), "values": []}
            if a.dtype.kind in "iub":
                return a.tolist()
            f = a.astype(np.float64)
            special = ~np.isfinite(f) | ((f == 0) & np.signbit(f))  # what format_number writes as text
            if not special.any():
                return f.tolist()
            out = f.astype(object)
            out[special] = [format_number(v) for v in f[special]]
            return out.tolist()

        d: dict[str, Any] = {"id": self.id, "family": self.family, "inputs": arr(self.inputs),
                             "targets": arr(self.targets)}
        if self.params:
            d["params"] = {k: (arr(v) if k in ARRAY_PARAMS
                               else arr(v) if PARAM_KINDS[k] in ("int_array", "bool_array")
                               else v if k in INT_PARAMS
                               else format_number(v) if k in SCALAR_PARAMS else v)
                           for k, v in self.params.items()}
        if self.dtypes is not None:
            d["dtypes"] = list(self.dtypes)
        if self.provenance is not None:
            d["provenance"] = dict(self.provenance)
        if self.invalid is not None:
            d["invalid"] = self.invalid
        return d


# --- parsing -------------------------------------------------------------------------
def _array(value: Any, where: str, *, integer: bool = False) -> np.ndarray:
    """A rectangular nested list of numbers, or {"shape": [...], "values": [flat list]},
    -> numpy array (float64, or int64 if integer)."""
    if isinstance(value, dict):
        return _shaped_array(value, where, integer=integer)
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > MAX_NDIM:
            raise CaseFileError(f"{where}: nested more than {MAX_NDIM} deep (at most {MAX_NDIM} dimensions)")
        probe = probe[0] if probe else None
    if not shape and not integer and not isinstance(value, (int, float, str, BareConstant)):
        raise CaseFileError(f"{where}: expected a number or nested list of numbers, got {type(value).__name__}")

    # flattened a level at a time (a case of 456,960 elements: 0.2 s, where a recursive walk took 1.5 s)
    ragged = f"{where}: ragged array (rows of different lengths or depths)"
    flat: list[Any] = [value]
    for n in shape:
        if any(not isinstance(v, list) or len(v) != n for v in flat):
            raise CaseFileError(ragged)
        flat = list(chain.from_iterable(flat))
    for v in flat:
        if isinstance(v, list):
            raise CaseFileError(ragged)
        if isinstance(v, BareConstant):
            raise CaseFileError(f"{where}: {v.message()}")
    if integer:
        out = []
        for v in flat:
            if isinstance(v, bool) or not isinstance(v, int):
                raise CaseFileError(f"{where}: class-index targets must be integers, got {v!r}")
            if not -(2**63) <= v < 2**63:
                raise CaseFileError(f"{where}: class-index target {v} does not fit in int64")
            out.append(v)
        return np.array(out, dtype=np.int64).reshape(shape)
    try:  # a finite JSON float is itself; parse_number checks everything else
        nums = [v if type(v) is float and v - v == 0 else parse_number(v) for v in flat]
    except ValueError as e:
        raise CaseFileError(f"{where}: {e}") from None
    return np.array(nums, dtype=np.float64).reshape(shape)


def _shaped_array(value: dict, where: str, *, integer: bool) -> np.ndarray:
    """{"shape": [d0, d1, ...], "values": [flat list, row-major]} -> numpy array."""
    if set(value) != {"shape", "values"}:
        raise CaseFileError(f"{where}: an array object must have exactly the keys 'shape' and 'values'")
    shape, values = value["shape"], value["values"]
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise CaseFileError(f"{where}: 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_NDIM:
        raise CaseFileError(f"{where}: 'shape' has {len(shape)} dimensions (at most {MAX_NDIM})")
    if not isinstance(values, list) or any(isinstance(v, list) for v in values):
        raise CaseFileError(f"{where}: 'values' must be a flat list of numbers")
    n = 1
    for d in shape:
        n *= d
    if len(values) != n:
        raise CaseFileError(f"{where}: 'values' has {len(values)} numbers, shape {tuple(shape)} needs {n}")
    return _array(values, where, integer=integer).reshape(shape)


def parse_case(obj: Any, where: str) -> Case:
    if not isinstance(obj, dict):
        raise CaseFileError(f"{where}: a case must be a JSON object")
    cid = obj.get("id")
    if not isinstance(cid, str) or not cid.strip():
        raise CaseFileError(f"{where}: field 'id' must be a non-empty string")
    try:
        cid.encode("utf-8")
    except UnicodeEncodeError:
        raise CaseFileError(f"{where}: field 'id' {cid!r} is not valid Unicode (a lone surrogate)") from None
    w = f"{where} (case {cid!r})"
    unknown = set(obj) - CASE_KEYS
    if unknown:
        raise CaseFileError(f"{w}: unknown field(s) {', '.join(sorted(map(repr, unknown)))}")
    fam_name = obj.get("family")
    if not isinstance(fam_name, str) or fam_name not in FAMILIES:
        raise CaseFileError(f"{w}: field 'family' must be one of {', '.join(FAMILIES)}, got {fam_name!r}")
    fam = FAMILIES[fam_name]
    declared = obj.get("invalid")
    if declared is not None and declared not in _invalid_kinds():
        raise CaseFileError(f"{w}: field 'invalid' must be one of {', '.join(_invalid_kinds())}, got {declared!r}")
    lax = declared is not None  # an invalid case: shapes and axis are what it says, checked below
    for k in ("inputs", "targets"):
        if k not in obj:
            raise CaseFileError(f"{w}: missing field '{k}'")
    x = _array(obj["inputs"], f"{w}: field 'inputs'")
    if x.ndim < 1 or (fam.rowwise and x.ndim < 2):
        raise CaseFileError(f"{w}: field 'inputs' must be {'at least 2-D (rows x classes)' if fam.rowwise else 'an array'}")
    raw = obj.get("params", {})
    if not isinstance(raw, dict):
        raise CaseFileError(f"{w}: field 'params' must be an object")
    axis = raw.get("axis", -1)
    if isinstance(axis, bool) or not isinstance(axis, int) or not (lax or -x.ndim <= axis < x.ndim):
        raise CaseFileError(f"{w}: field 'params.axis': expected an integer axis of the {x.ndim}-D inputs")
    ax = axis % x.ndim if -x.ndim <= axis < x.ndim else x.ndim - 1
    if fam.rowwise and fam.targets != "classes" and x.shape[ax] == 0 and not lax:
        raise CaseFileError(f"{w}: field 'inputs' has no classes (the class axis is empty)")
    per_sample = x.shape[:ax] + x.shape[ax + 1:]  # the inputs' shape without the class axis
    if fam.targets == "index":
        t = _array(obj["targets"], f"{w}: field 'targets'", integer=True)
        want = per_sample
    elif fam.targets == "classes":
        t = _array(obj["targets"], f"{w}: field 'targets'", integer=True)
        want = (x.shape[0], t.shape[-1] if t.ndim == 2 and t.shape[-1] >= 1 else "num_true >= 1")
        if x.ndim != 2:
            raise CaseFileError(f"{w}: field 'inputs' must be 2-D (batch x dim) for family {fam_name}")
    else:
        t = _array(obj["targets"], f"{w}: field 'targets'")
        want = x.shape
    if t.shape != want and not lax:
        raise CaseFileError(f"{w}: field 'targets' has shape {t.shape}, expected {want} for family {fam_name}")

    params: dict[str, Any] = {}
    for k, v in raw.items():
        pw = f"{w}: field 'params.{k}'"
        if k not in fam.params:
            raise CaseFileError(f"{pw}: not a parameter of family {fam_name} (has {', '.join(fam.params)})")
        kind = PARAM_KINDS[k]
        if kind == "reduction":
            if v not in REDUCTIONS:
                raise CaseFileError(f"{pw}: must be one of {', '.join(REDUCTIONS)}, got {v!r}")
            params[k] = v
            continue
        if kind == "int":
            if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
                raise CaseFileError(f"{pw}: expected an integer")
            params[k] = int(v)
            continue
        if kind == "bool":
            if not isinstance(v, bool):
                raise CaseFileError(f"{pw}: expected true or false")
            params[k] = v
            continue
        if kind == "number":
            if isinstance(v, (list, dict, bool)):
                raise CaseFileError(f"{pw}: expected a number")
            params[k] = float(_array(v, pw))
            continue
        if kind == "bool_array":
            a = _bool_array(v, pw)
        else:
            a = _array(v, pw, integer=kind == "int_array")
        need = param_shape_problem(k, a, x, t, per_sample, raw)
        if need and not lax:
            raise CaseFileError(f"{pw}: shape {a.shape} does not fit; expected {need}")
        params[k] = a
    if fam.targets == "classes":
        missing = [k for k in ("output_weights", "output_biases", "sampled", "true_expected_count",
                               "sampled_expected_count") if k not in params]
        if missing:
            raise CaseFileError(f"{w}: family {fam_name} needs params {', '.join(missing)}")

    dtypes = obj.get("dtypes")
    if dtypes is not None:
        if not isinstance(dtypes, list) or not dtypes or any(d not in DTYPES for d in dtypes):
            raise CaseFileError(f"{w}: field 'dtypes' must be a non-empty list drawn from {', '.join(DTYPES)}")
        dtypes = tuple(dtypes)
    prov = obj.get("provenance")
    if prov is not None and (not isinstance(prov, dict) or any(
            not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (str, int, float)) for k, v in prov.items())):
        raise CaseFileError(f"{w}: field 'provenance' must be an object of strings and numbers")
    case = Case(cid, fam_name, x, t, params, dtypes, prov, declared)
    _check_domain(case, w)
    return case


def _invalid_kinds() -> tuple[str, ...]:
    from .badinput import KINDS

    return tuple(KINDS)


def _check_domain(case: Case, w: str) -> None:
    """A valid case must be in the losses' domain; a declared invalid one must hold its kind."""
    from .badinput import violations

    found = violations(case.family, *case.in_dtype("float64"))
    if case.invalid is None and found:
        raise CaseFileError(f"{w}: invalid input ({', '.join(found)}) has no reference value; declare "
                            f"\"invalid\": \"{found[0]}\" to measure how the APIs treat it")
    if case.invalid is not None and case.invalid not in found:
        raise CaseFileError(f"{w}: declared \"invalid\": \"{case.invalid}\" but its data "
                            + (f"shows {', '.join(found)}" if found else "is valid"))


def param_shape_problem(k: str, a: np.ndarray, x: np.ndarray, t: np.ndarray, per_sample: tuple, raw: dict) -> str:
    """What shape parameter `k` must have, when `a` does not have it ("" when it fits)."""
    C = x.shape[-1] if "axis" not in raw else x.shape[raw["axis"] % x.ndim]
    if k == "pos_weight":
        ok = a.ndim == 0 or a.ndim == 1 and a.shape[0] in (1, x.shape[-1])
        return "" if ok else f"a number or a list of length {x.shape[-1]} (the last axis)"
    if k == "class_weight":
        return "" if a.shape == (C,) else f"a list of length {C} (one per class)"
    if k == "sample_weight":
        return "" if a.shape == per_sample else f"an array of shape {per_sample} (one per sample: the inputs' shape without the class axis)"
    if k == "where":
        return "" if a.shape in (x.shape, per_sample) else f"booleans of shape {x.shape} (per class) or {per_sample} (per row)"
    if k == "output_weights":
        return "" if a.ndim == 2 and a.shape[1] == x.shape[1] and a.shape[0] >= 1 else f"an array [num_classes, {x.shape[1]}]"
    n_classes = np.shape(raw.get("output_weights", [[]]))[0]
    if k == "output_biases":
        return "" if a.shape == (n_classes,) else f"an array of length {n_classes} (one per class of output_weights)"
    if k == "sampled":
        return "" if a.ndim == 1 else "a list of sampled class ids"
    if k == "true_expected_count":
        return "" if a.shape == t.shape else f"an array of the targets' shape {t.shape}"
    if k == "sampled_expected_count":
        n = len(raw.get("sampled", []))
        return "" if a.shape == (n,) else f"an array of length {n} (one per sampled class)"
    return "" if a.shape == x.shape else f"an array of the inputs' shape {x.shape}"  # weight


def _bool_array(value: Any, where: str) -> np.ndarray:
    """A nested list of true/false (or the shape/values form) -> bool array."""
    if isinstance(value, dict):
        if set(value) != {"shape", "values"} or not isinstance(value["values"], list):
            raise CaseFileError(f"{where}: an array object must have exactly the keys 'shape' and 'values'")
        flat = value["values"]
        shape = value["shape"]
    else:
        try:
            arr = np.array(value, dtype=object)
        except ValueError:
            arr = None
        if arr is None or any(isinstance(v, list) for v in arr.ravel()):
            raise CaseFileError(f"{where}: ragged array (rows of different lengths or depths)")
        flat, shape = arr.ravel().tolist(), list(arr.shape)
    if any(not isinstance(v, bool) for v in flat):
        raise CaseFileError(f"{where}: expected booleans (true/false)")
    try:
        return np.array(flat, dtype=bool).reshape(shape)
    except ValueError:
        raise CaseFileError(f"{where}: 'values' do not fill shape {shape}") from None


def parse_cases(doc: Any, source: str = "<cases>") -> list[Case]:
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise CaseFileError(f'{source}: expected an object {{"cases": [...]}}')
    extra = set(doc) - {"cases"}
    if extra:
        raise CaseFileError(f"{source}: unknown top-level field(s) {', '.join(sorted(map(repr, extra)))}")
    cases, seen = [], set()
    for i, obj in enumerate(doc["cases"]):
        c = parse_case(obj, f"{source}: cases[{i}]")
        if c.id in seen:
            raise CaseFileError(f"{source}: cases[{i}] (case {c.id!r}): duplicate id")
        seen.add(c.id)
        cases.append(c)
    if not cases:
        raise CaseFileError(f"{source}: the file holds no cases")
    return cases


def load_cases(path: str | os.PathLike) -> list[Case]:
    """Read and validate a case file. Raises CaseFileError with a one-line message."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise CaseFileError(f"{p}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):  # a directory, a FIFO, /dev/zero: never read
        raise CaseFileError(f"{p}: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise CaseFileError(f"{p}: file is {st.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise CaseFileError(f"{p}: cannot read ({e.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise CaseFileError(f"{p}: file is over the {MAX_FILE_BYTES}-byte limit")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CaseFileError(f"{p}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise CaseFileError(f"{p}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except CaseFileError as e:
        raise CaseFileError(f"{p}: {e}") from None
    except RecursionError:
        raise CaseFileError(f"{p}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer over Python's 4300-digit limit
        raise CaseFileError(f"{p}: invalid JSON: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return parse_cases(doc, p)


class BareConstant:
    """A bare NaN / Infinity / -Infinity read from a file: not JSON. Kept as a marker so the
    error is raised where it is used, naming the case and the field."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def message(self) -> str:
        return f'bare {self.name} is not JSON; write the string "{self.name.lower().replace("infinity", "inf")}"'


def _reject_constant(name: str) -> BareConstant:
    return BareConstant(name)


def dump_cases(cases: list[Case]) -> str:
    return json.dumps({"cases": [c.to_json() for c in cases]}, indent=1)
