"""The runner: cases x APIs x dtypes -> one results table, one row per quantity (the loss and
its gradients, harness.spec.QUANTITIES).

Each framework runs in its own worker process (spawned, so this process imports no
framework). A worker computes its calls one at a time, in the order sent, so when it dies or
hangs the runner knows which call did it (the oldest unanswered): that row becomes `crashed`
(with the signal, or `timeout`), a call sent behind it is sent again, the worker is
restarted, and the run goes on. An exception inside a call is a `raised` row. The reference
(persistent across runs: harness.refcache) and the grading run here, in the parent, while the
workers compute: a worker is sent its next call before the results of its last one are
graded: up to PIPELINE_DEPTH calls go to a worker ahead (it reads its pipe in a thread of its
own, harness.worker, so neither side's write can wait on the other's). When a CPU is free (fewer workers
than CPUs: the other frameworks have finished), the framework with the most work left gets a
second worker, which takes calls from the other end of its queue (run's spare).

Where a framework batches (adapters.Framework.batch_rows), the cases of one batch key
(adapters.batch_key: API, row shape, dtype, scalar parameters) go to its worker as one call of
at most MAX_BATCH_ROWS rows. Where it compiles (adapters.Framework.compile), consecutive calls go
as one Bundle, compiled as one program (bundles). A batch or bundle that crashes or times out is
sent again one case per call, so that the row that is `crashed` is the case that did it.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
from statistics import median_high
from typing import Iterable

import numpy as np
import pandas as pd

import adapters
from harness import badinput, chunked, condition, oracle, profile, refcache, repro, worker
from harness.casefile import Case
from harness.compare import Grade, grade, grade_many
from harness.dtypes import reference_precision
from harness.spec import DTYPES, FAMILIES, QUANTITIES, RESULT_COLUMNS, SAMPLED_FAMILIES, Api
from harness.tolerance import terms_per_output, tolerance_ulp

CALL_TIMEOUT_S = 300.0  # one call (first calls compile: optax at a new shape takes ~0.5 s)
START_TIMEOUT_S = 300.0
#: a case of at most this many input elements keeps its arrays in each dtype while the run
#: needs them (Reference.data); a larger one is rounded again where it is read
DATA_KEEP_ELEMENTS = 1 << 16
#: the most rows (and cases) one batched call stacks
MAX_BATCH_ROWS = 4096
MAX_BATCH_CASES = 256
#: cases that are not stacked go to a worker in groups of one API (each case still called on its
#: own, at its own shape: adapters.call_each) of at most this many cases and input elements: a
#: message and a wake-up per group, not per case (measured, torch float32: 700 calls of 0.2 ms)
MAX_GROUP_CASES = 16
MAX_GROUP_ELEMENTS = 1 << 16
#: a framework that compiles gets its calls in bundles of at most this many functions (a batch is
#: one; a group, one per case) and input elements, compiled as one program (measured, JAX float32
#: corpus cold: one process, 8.3-9.0 s a program per call, 5.7-6.4 s at 4 to 16; runner.run with
#: its spare, 4.9-5.2 s at 8, 4.5-4.7 s at 16, 4.9-5.1 s at 24. XLA:CPU compiling N softmax
#: losses and gradients as one program: 46-52 ms each at N = 4-8, 55-60 at 16, 90-114 at 32.
#: Since invalid cases, loss only, are bundled too: 24, faster than 16 in 9 of 11 alternated
#: pairs of runs, medians 4.46 s and 4.90 s in the first 6)
MAX_BUNDLE_PROGRAMS = 24
MAX_BUNDLE_ELEMENTS = 1 << 20
#: a call with more input elements than this is in flight on one worker at a time
LARGE_CALL_ELEMENTS = 1 << 24
#: the calls a worker is sent ahead (it reads them in a thread of its own, harness.worker): the
#: parent's grading and the worker's calls vary in time, call by call (measured, torch float32:
#: the worker waited 0.31 s for calls at two deep, small calls only; 0.23 s at eight, any size)
PIPELINE_DEPTH = 8
#: ... but a framework that compiles is sent at most this many (each a compilation, of a second
#: or so for a bundle): the others stay queued, for whichever worker is free first (a spare's,
#: run's spare), so that its workers end together (measured, JAX float32 cold: with up to 8
#: calls sent ahead, the spare ran out of calls at 3.8 s while the first worker had 3 left
#: and ended at 4.8 s)
COMPILING_AHEAD = 2
#: while it waits, the parent computes the references of this many calls ahead per framework
PREFETCH_CALLS = 256
#: ... and pickles their messages to the workers, up to this many bytes in all, of calls of at
#: most PREPARED_CALL_BYTES each
PREPARED_BYTES = 64 << 20
PREPARED_CALL_BYTES = 1 << 20
#: ... for this long at a time, between looks at the workers
PREFETCH_SLICE_S = 0.002
#: a framework gets another worker on a free CPU only when its queued calls would take each of
#: its workers longer than this, and longer than SPLIT_STARTUPS of its workers' start-ups (0.5-4 s
#: of CPU): a spare that starts in S seconds turns L seconds left into about (L + S) / 2
MIN_SPLIT_S = 2.0
SPLIT_STARTUPS = 2.0
#: ... estimated from this many of its calls at least
SPLIT_AFTER = 5
#: a framework that compiles gets a spare at once while it has this many calls queued
SPARE_AT_ONCE_CALLS = 2 * COMPILING_AHEAD


def keep_heap(limit: int = 64 << 20) -> None:
    """glibc: serve allocations up to `limit` bytes from the heap and keep freed memory there,
    rather than a fresh mmap for each (the default above 128 KiB-32 MiB). Grading a 65,536-element
    gradient makes some twenty temporaries of 512 KiB: as fresh mmaps, each one's pages were
    faulted in again (measured: compare.grade 7.4 ms -> 4.2 ms). Elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, limit)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2 * limit)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Task:
    idx: int
    case: Case
    api: Api
    dtype: str
    quantities: tuple[str, ...] = ("loss",)


def _order(idx: int, quantity: str) -> int:
    """Row order: by task, then quantity."""
    return idx * len(QUANTITIES) + QUANTITIES.index(quantity)


def plan(cases: Iterable[Case], apis: Iterable[Api], dtypes: Iterable[str]) -> tuple[list[Task], list[dict]]:
    """Every (case, api, dtype) to run with the quantities it has (the loss, and the gradients
    of adapters.gradient_args), and the rows decided without running (unsupported)."""
    dtypes = [d for d in DTYPES if d in set(dtypes)]
    tasks: list[Task] = []
    skipped: list[dict] = []
    idx = 0
    for api in apis:
        autodiff = adapters.load(api.framework).framework.vjp is not None
        for case in cases:
            if case.family != api.family:
                continue
            # an invalid case measures what the API does with bad input: its loss only
            grads = () if case.invalid else tuple(adapters.gradient_args(api, case.params))
            for d in dtypes:
                if case.dtypes is not None and d not in case.dtypes:
                    continue
                why = api.cannot_express(case.params, d, case.inputs.ndim)
                if why:
                    skipped += [_row(case, api, d, quantity=q, status="unsupported", detail=why, _idx=_order(idx, q))
                                for q in ("loss", *grads)]
                elif autodiff:
                    tasks.append(Task(idx, case, api, d, ("loss", *grads)))
                else:
                    tasks.append(Task(idx, case, api, d))
                    skipped += [_row(case, api, d, quantity=q, status="unsupported", _idx=_order(idx, q),
                                     detail=f"{api.framework} has no automatic differentiation") for q in grads]
                idx += 1
    return tasks, skipped


class Call(list):
    """The tasks of one call to a worker: a batch (adapters.call_batch) of one or more tasks of
    one batch key, or a group of one or more tasks of one API and quantities, each run on its own
    (adapters.call_each)."""

    batched = False

    def alone(self, task: Task) -> "Call":
        """A call of `task` alone, run as this one runs it (batched: padded to its bucket)."""
        c = Call([task])
        c.batched = self.batched
        return c

    def parts(self) -> list["Call"]:
        """The calls this one sends (a Bundle: several)."""
        return [self]


class Bundle(Call):
    """Calls of a compiling framework sent as one (adapters.call_bundle: one compiled program):
    their tasks in order. A task alone runs as its own call ran it."""

    def __init__(self, calls: list[Call]) -> None:
        super().__init__(t for c in calls for t in c)
        self.calls = calls

    def alone(self, task: Task) -> Call:
        return next(c for c in self.calls if any(t is task for t in c)).alone(task)

    def parts(self) -> list[Call]:
        return self.calls


def batches(tasks: list[Task], batch_rows: bool, stack: bool = True) -> list[Call]:
    """The calls that run `tasks` (one framework's, in plan order), each placed where its first
    task is: where the framework batches, the tasks of one batch key together, at most
    MAX_BATCH_ROWS rows (elements, for a flat key) and MAX_BATCH_CASES cases per call; any other
    task in a group of tasks of its API and quantities (MAX_GROUP_CASES, MAX_GROUP_ELEMENTS).
    stack=False: one task per call (a batched one padded to the same bucket shape, hence the same
    values)."""
    calls: list[Call] = []
    open_: dict[object, tuple[Call, int]] = {}
    for t in tasks:
        key = (adapters.batch_key(t.api, t.case.inputs, t.case.targets, t.case.params, t.quantities, t.case.invalid)
               if batch_rows else None)
        if key is None:  # a group: input elements counted
            k, n, most, size = ("group", t.api.id, t.quantities), t.case.inputs.size, MAX_GROUP_CASES, MAX_GROUP_ELEMENTS
        else:  # a batch: rows (elements, for a flat key) counted
            k, most, size = (key, t.dtype), MAX_BATCH_CASES, MAX_BATCH_ROWS
            n = t.case.inputs.size if "flat" in key else len(t.case.inputs)
        if stack and k in open_ and len(open_[k][0]) < most and open_[k][1] + n <= size:
            open_[k] = (open_[k][0], open_[k][1] + n)
            open_[k][0].append(t)
        else:
            c = Call([t])
            c.batched = key is not None
            calls.append(c)
            open_[k] = (c, n)
    return calls


def bundles(calls: list[Call]) -> list[Call]:
    """Calls joined into Bundles of at most MAX_BUNDLE_PROGRAMS functions and MAX_BUNDLE_ELEMENTS
    input elements, for a framework that compiles (adapters.Framework.compile): the compiler then
    sees one program per bundle. A batch is one function; a group's cases are one each, and go
    into bundles one by one (a group only spares messages). A bundle is placed where its last
    call was. An invalid case is a part like any other: one that raises as the program is traced
    is left out of it and runs on its own (adapters.call_bundle). A call of more elements runs on
    its own."""
    out: list[Call] = []
    run: list[Call] = []
    size = 0

    def close() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else Bundle(list(run)))
            run.clear()

    for c in calls:
        n = sum(t.case.inputs.size for t in c)
        if n > MAX_BUNDLE_ELEMENTS:
            out.append(c)
            continue
        for part in [c] if c.batched else [c.alone(t) for t in c]:
            k = sum(t.case.inputs.size for t in part)
            if len(run) == MAX_BUNDLE_PROGRAMS or size + k > MAX_BUNDLE_ELEMENTS:
                close()
                size = 0
            run.append(part)
            size += k
    close()
    return out


def framework_calls(tasks: list[Task], fw: "adapters.Framework", stack: bool = True) -> list[Call]:
    """The calls that run one framework's tasks: batches, joined into bundles where it compiles
    (both only with stack)."""
    calls = batches(tasks, fw.batch_rows, stack=stack)
    return bundles(calls) if stack and fw.compile is not None else calls


def _terms(task: Task) -> int:
    """The terms behind each output of the task's loss (harness.tolerance.terms_per_output)."""
    shape = task.case.inputs.shape
    if "axis" in task.case.params and shape:  # the class (or mean) axis counted as the last one
        ax = task.case.params["axis"] % len(shape)
        shape = shape[:ax] + shape[ax + 1:] + (shape[ax],)
    elif FAMILIES[task.case.family].targets == "classes":  # a row's logits: T + S dot products
        shape = (shape[0], (task.case.targets.shape[-1] + len(task.case.params["sampled"])) * shape[1])
    return terms_per_output(FAMILIES[task.case.family].rowwise, shape, task.case.reduction,
                            bool(task.api.convention("axis_mean")))


def _row(case: Case, api: Api, dtype: str, **kw) -> dict:
    row = dict.fromkeys(RESULT_COLUMNS)
    row.update(invalid=case.invalid or "", case_id=case.id, category=case.category, family=case.family, api=api.id,
               framework=api.framework, dtype=dtype, device="cpu", quantity="loss",
               max_ulp=np.nan, tol_ulp=np.nan, max_abs_err=np.nan, max_rel_err=np.nan,
               expected=np.nan, actual=np.nan, n_elements=0, seconds=np.nan,
               worst_index="", worst_input="", detail="", actual_dtype="", reference="", repro="",
               max_ulp_finite=np.nan, worst_input_finite="", cond=np.nan, cond_ulp=np.nan, ulp_profile="")
    row.update(kw)
    return row


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view of a (what Reference.data keeps is shared by every reader)."""
    v = a.view()
    v.setflags(write=False)
    return v


@lru_cache(maxsize=None)
def _dtype_name(dt: np.dtype) -> str:
    """dt.name, which numpy forms anew on every read (some 5 us: a row reads it twice)."""
    return dt.name


def _conventions(api: Api) -> tuple:
    """The conventions a reference depends on (harness.oracle): the API's mean and axis_mean."""
    return api.convention("mean"), api.convention("axis_mean")


class Reference:
    """Reference values, computed once per (case, dtype, conventions): the loss, and its
    gradients with the bound on their own error (None for the loss, whose terms never cancel).
    A case taken in blocks of rows (harness.chunked) has its loss computed a block at a time
    and its gradients never held whole: only for the rows asked for, uncached. `forget` drops
    a (case, dtype)'s values once no call needs them any more."""

    def __init__(self) -> None:
        self._cache: dict[tuple, dict[str, tuple[np.ndarray, np.ndarray | None]]] = {}
        self._keys: dict[tuple[str, str], list[tuple]] = {}
        self._data: dict[tuple[str, str], tuple] = {}  # (case id, dtype) -> (x, t, p, their content hash)

    def data(self, case: Case, dtype: str, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
        """case.in_dtype(dtype, rows): the case as the framework receives it, which its call, its
        reference, its rows' worst inputs and repros all read. The whole case (rows None) is
        rounded once per (case, dtype) and kept, read-only, until forget, for a case of at most
        DATA_KEEP_ELEMENTS inputs; a block of rows is rounded at each read."""
        return self._data_of(case, dtype)[:3] if rows is None else case.in_dtype(dtype, rows)

    def _data_of(self, case: Case, dtype: str) -> tuple:
        got = self._data.get((case.id, dtype))
        if got is not None:
            return got
        x, t, p = case.in_dtype(dtype)
        if case.inputs.size > DATA_KEEP_ELEMENTS:
            return x, t, p, None
        x, t = _frozen(x), _frozen(t)
        p = {k: _frozen(v) if isinstance(v, np.ndarray) else v for k, v in p.items()}
        got = self._data[(case.id, dtype)] = (x, t, p, refcache.Hashed(refcache.content_hash(x, t, p)))
        return got

    def _keyed(self, case: Case, dtype: str) -> tuple:
        """What the persistent cache keys a reference of the whole case by: its arrays in the
        dtype, or, where data keeps them, their content hash, taken once per run (a key of its
        own: refcache.Hashed)."""
        x, t, p, h = self._data_of(case, dtype)
        return (x, t, p) if h is None else (h,)

    def _put(self, key: tuple, value: dict) -> None:
        self._cache[key] = value
        self._keys.setdefault(key[:2], []).append(key)

    def holds(self, case: Case, api: Api, dtype: str, quantity: str = "loss") -> bool:
        """Whether the reference of `quantity` is in memory (__call__ would compute nothing)."""
        conv = _conventions(api)
        return (case.id, dtype, conv, quantity == "loss") in self._cache

    def forget(self, case_id: str, dtype: str) -> None:
        for key in self._keys.pop((case_id, dtype), ()):
            self._cache.pop(key, None)
        self._data.pop((case_id, dtype), None)

    def __call__(self, case: Case, api: Api, dtype: str, quantity: str = "loss",
                 rows: slice | None = None) -> tuple[np.ndarray, str, np.ndarray | None]:
        conv = _conventions(api)
        prec, label = reference_precision(dtype)
        per_block = chunked.rows_per_block(case)
        if per_block and quantity != "loss":
            if rows is None:
                raise ValueError(f"{case.id}: a gradient of a case taken in blocks is computed for some rows only")
            ref, err = self._compute(case, dtype, conv, quantity, rows)[quantity]
            return ref, label, err
        key = (case.id, dtype, conv, quantity == "loss")
        if key not in self._cache:
            if per_block:  # the loss of every row, a block at a time
                parts = [self._compute(case, dtype, conv, "loss", b)["loss"][0]
                         for b in chunked.blocks(case.inputs.shape[0], per_block)]
                self._put(key, {"loss": (np.concatenate(parts), None)})
            else:
                self._put(key, self._compute(case, dtype, conv, quantity))
        ref, err = self._cache[key][quantity]
        return (ref, label, err) if rows is None else (ref[rows], label, None if err is None else err[rows])

    def _compute(self, case: Case, dtype: str, conv: tuple, quantity: str, rows: slice | None = None) -> dict:
        """The loss, or every gradient with its error bound; from the persistent cache
        (harness.refcache) when computed before, except for a block of a large case's rows."""
        prec, _ = reference_precision(dtype)
        x, t, p = self.data(case, dtype, rows)
        c = {"mean": conv[0], "axis_mean": conv[1]}

        def compute() -> dict[str, np.ndarray]:
            if quantity == "loss":
                return {"loss": np.asarray(oracle.loss(case.family, x, t, p, c, prec))}
            u = float(np.finfo(prec).eps) / 2
            out = {}
            with np.errstate(over="ignore"):  # a bound beyond float64's range widens nothing (compare.grade)
                for q, (v, s) in oracle.grad(case.family, x, t, p, c, prec).items():
                    out[q] = np.asarray(v)
                    out[q + ".err"] = (oracle.GRAD_ERROR_BOUND_UREF * u) * np.asarray(s, np.float64)
            return out

        if rows is None:
            flat = refcache.cached(("reference", case.family, c, np.dtype(prec).str, quantity == "loss",
                                    *self._keyed(case, dtype)), compute)
        else:
            flat = compute()
        return {q: (v, flat.get(q + ".err")) for q, v in flat.items() if not q.endswith(".err")}

    def condition(self, case: Case, api: Api, dtype: str, rows: slice | None = None,
                  compute: bool = True) -> np.ndarray | None:
        """The loss's condition number per output (harness.condition), from the reference loss
        and gradients; for a case taken in blocks, of the block `rows` only (uncached).
        compute=False: only if at hand (in memory, or in the persistent cache), else None."""
        conv = _conventions(api)
        key = (case.id, dtype, conv, "cond")
        if key in self._cache:
            return self._cache[key]["cond"][0]
        per_block = chunked.rows_per_block(case)
        if per_block and not compute:
            return None
        rows = rows if per_block else None
        c = {"mean": conv[0], "axis_mean": conv[1]}
        prec = reference_precision(dtype)[0]

        def computed() -> dict[str, np.ndarray]:
            x, t, p = self.data(case, dtype, rows)
            y = self(case, api, dtype, "loss", rows)[0]
            try:
                grads = None
                if case.family not in SAMPLED_FAMILIES:
                    if per_block:
                        grads = {q: v for q, (v, _) in self._compute(case, dtype, conv, "grad_logits", rows).items()}
                    else:
                        self(case, api, dtype, "grad_logits")
                        grads = {q: v for q, (v, _) in self._cache[key[:3] + (False,)].items()}
                cond = condition.condition(case.family, x, t, p, c, prec, y, grads)
            except Exception:  # noqa: BLE001 - auxiliary: a condition number it cannot form is nan, never a lost row
                cond = np.full(np.shape(y), np.nan)
            return {"cond": np.asarray(cond)}

        if per_block:
            return computed()["cond"]
        parts = ("condition", case.family, c, np.dtype(prec).str, *self._keyed(case, dtype))
        got = refcache.cached(parts, computed) if compute else refcache.peek(parts)
        if got is None:
            return None
        self._put(key, {"cond": (got["cond"], None)})
        return got["cond"]


REPRO_FAILED = "# repro failed: "
#: the rows that carry an ULP profile against x (harness.profile): the exhaustive domains
PROFILED_CATEGORY = "exhaustive"
#: a failed (raised, crashed) row's repro holds the whole case up to this many input elements;
#: a larger unreduced case is cut to its first output
REPRO_FULL_MAX = 4096


def _snippet(fw, task: Task, idx, data, quantity: str = "loss", arrays: str | None = None,
             reference: np.ndarray | None = None) -> str:
    """The repro of a row (data: the case in the row's dtype; arrays: where large arrays are
    saved; reference: the quantity's on the whole case, if at hand: repro.snippet); a harness
    bug here is recorded in the row, never loses the run."""
    x, t, p = data
    try:
        return repro.snippet(fw, task.api, task.dtype, x, t, p, idx, quantity, invalid=task.case.invalid,
                             arrays=arrays, reference=reference)
    except Exception as e:  # noqa: BLE001 - reported in the row and failed by the test suite
        return f"{REPRO_FAILED}{type(e).__name__}: {e}\n"


def _first(ref) -> float:
    """The first element of an array (a reference, or what an API returned) as a float64 (inf
    beyond its range), nan when empty."""
    with np.errstate(over="ignore"):
        return float(np.asarray(ref, np.float64).ravel()[0]) if np.size(ref) else np.nan


def _fmt(v: float) -> str:
    return f"{float(v):.9g}"


def output_index(case: Case, api: Api, quantity: str, idx: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The loss output a gradient element belongs to (rows: the row of an input element); None
    when it has none (a weight shared by every output, or a sampled loss's output weights)."""
    if quantity == "loss" or idx is None:
        return idx
    if quantity == "grad_weights":
        return None
    fam = FAMILIES[case.family]
    if "axis" in case.params and (fam.rowwise or api.convention("axis_mean")):
        return None
    return idx[:-1] if fam.rowwise or api.convention("axis_mean") else idx


def worst_input(case: Case, api: Api, data, idx: tuple[int, ...] | None, quantity: str = "loss") -> str:
    """The inputs behind the worst output element, as short text (data: the case in the row's dtype)."""
    if quantity != "loss":
        where = "" if idx is None else f"d/d{ {'grad_logits': 'inputs', 'grad_targets': 'targets'}.get(quantity, 'weights')}[{','.join(map(str, idx))}] at "
        out = output_index(case, api, quantity, idx)
        return where + (worst_input(case, api, data, out) if out is not None
                        else f"whole case (reduction={case.reduction}, inputs shape {np.shape(data[0])})")
    x, t, p = data
    if case.reduction != "none" or idx is None or idx == ():
        return f"whole case (reduction={case.reduction}, inputs shape {x.shape})"
    fam = FAMILIES[case.family]
    if "axis" in p and (fam.rowwise or api.convention("axis_mean")):  # rows along the class axis
        x = np.moveaxis(x, p["axis"], -1)
        t = np.moveaxis(t, p["axis"], -1) if fam.targets == "dense" else t
    if fam.rowwise or api.convention("axis_mean"):
        row = x[idx].astype(np.float64)
        tr = t[idx]
        head = ", ".join(_fmt(v) for v in row[:6]) + (f", ... ({row.size} values)" if row.size > 6 else "")
        tt = (str(int(tr)) if np.ndim(tr) == 0 else
              ", ".join(_fmt(v) for v in np.asarray(tr, np.float64)[:6]) + (", ..." if np.size(tr) > 6 else ""))
        return f"row {idx[0]}: x=[{head}] target={'[' + tt + ']' if np.ndim(tr) else tt}"
    s = f"x={_fmt(x[idx])} z={_fmt(t[idx])}"
    if "pos_weight" in p:
        pw = np.asarray(p["pos_weight"])
        s += f" pos_weight={_fmt(pw if pw.ndim == 0 else pw[idx[-1] if pw.shape[0] > 1 else 0])}"
    if "weight" in p:
        s += f" weight={_fmt(p['weight'][idx])}"
    return s


def peak_rss_mib(pid: int | None = None) -> float | None:
    """The peak resident memory (VmHWM) of process `pid` (default: this one) in MiB; None where
    the system does not say (no /proc)."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class WorkerHandle:
    """One framework's worker process, restartable. peak_mib: the largest peak resident memory
    of its processes so far (sampled before each one ends)."""

    def __init__(self, framework: str, log_dir: str | None, call_timeout: float = CALL_TIMEOUT_S,
                 device: str = "cpu") -> None:
        self.framework = framework
        self.call_timeout = call_timeout
        self.device = device
        self.log_path = os.path.join(log_dir, f"{framework}.log") if log_dir else None
        self.version: str | None = None
        self.unavailable: str | None = None
        self.inflight: deque[list[Task]] = deque()  # the calls sent and not answered, oldest first
        self.deadline = 0.0
        self.peak_mib: float | None = None
        self.from_back = False  # takes its calls from the back of its framework's queue (run's spare)
        self.first_start = True  # starting for the first time (a restart does not hold back a spare)
        self.start()

    def sample_peak(self) -> None:
        m = peak_rss_mib(self.proc.pid) if self.proc.is_alive() else None
        if m is not None:
            self.peak_mib = max(self.peak_mib or 0.0, m)

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker.main, args=(child, self.framework, self.log_path, self.device),
                                daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.unsent = False  # the worker died before its oldest call in flight reached it
        self.started = time.monotonic()
        self.deadline = self.started + START_TIMEOUT_S

    @staticmethod
    def message(tasks: list[Task], data=None) -> bytes:
        """The call's message to the worker (harness.worker), pickled as Connection.send pickles."""
        data = data or Case.in_dtype
        parts = tasks.parts() if isinstance(tasks, Call) else [tasks]
        return ForkingPickler.dumps((tasks[0].idx, [(c[0].api.id, [data(t.case, t.dtype) for t in c], c[0].quantities,
                                                     getattr(c, "batched", False)) for c in parts]))

    def send(self, tasks: list[Task], data=None, message: bytes | None = None) -> None:
        """One call: a task, or a batch (runner.Call) of tasks of one batch key; data(case, dtype):
        its cases' arrays (default Case.in_dtype); message: the call's message (self.message),
        if already pickled. The deadline is the oldest call's: it runs now."""
        if not self.inflight:
            self.deadline = time.monotonic() + self.call_timeout
        self.inflight.append(tasks)
        try:
            self.conn.send_bytes(self.message(tasks, data) if message is None else message)
        except OSError:  # the worker is dead: its death is read next (lost)
            self.unsent = self.unsent or len(self.inflight) == 1  # then no call it was sent ran

    def kill(self) -> None:
        self.sample_peak()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self, wait: bool = True) -> list:
        """Ask the worker to end, and wait for it (wait=False: see joined); the messages it sent
        and were not read (a "poisoned" after its last call)."""
        self.sample_peak()
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        return self.joined() if wait else []

    def joined(self) -> list:
        """Wait for a worker asked to end (stop); the messages it sent and were not read."""
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        left = []
        try:
            while self.conn.poll():
                left.append(self.conn.recv())
        except (EOFError, OSError):
            pass
        return left


def _death(proc) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            return f"worker killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with status {code}"


def run(cases: list[Case], frameworks: list[str], dtypes: Iterable[str], *, log_dir: str | None = None,
        progress: bool = False, apis: list[Api] | None = None, journal_dir: str | None = None,
        resume: bool = False, call_timeout: float = CALL_TIMEOUT_S, batch: bool = True,
        shard: tuple[int, int] | None = None, device: str = "cpu",
        stats: dict | None = None, arrays_dir: str | None = None,
        cpus: int | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run every case on every API of `frameworks` (or on `apis`, entries of those frameworks).
    Returns (results, {framework: version}).

    journal_dir: append each finished call's rows to journal_dir/journal.jsonl as it comes
    (harness.journal); with resume, the calls already there are not run again. call_timeout:
    seconds one call may take before its worker is killed and the row is `crashed`. batch: False
    runs every case in a call of its own, padded to its bucket all the same where the framework
    batches, and compiled on its own where it bundles (the same values: tests/test_batching.py).
    shard (I, N):
    only the planned (case, API, dtype) whose plan index is I-1 modulo N (harness.shard). device:
    where the workers run the APIs ("cpu", or "cuda": adapters.DEVICES); a framework that cannot
    run there is `unsupported`, never run elsewhere. stats: a dict this fills with the peak
    resident memory in MiB of this process ("parent") and of each framework's workers
    ("peak_rss_mib"), and per framework the seconds its calls took in its worker, when, from
    the workers' start, its first worker was ready and its last call was answered, how many
    worker processes ran them (spares included, restarts not), and how many times one was
    replaced because a case left it unable to compute (adapters.poisoned)
    ("worker_s": {"calls", "ready", "done", "workers", "poisoned"}).
    arrays_dir: the run's DIR/repro/arrays, where the repro snippets' large arrays are saved
    (harness.repro; `xentc run` gives it); None writes them into the snippets. cpus: while fewer
    workers than this run (default: usable_cpus), the framework with the most work left gets
    another worker (spare, below); 1 never starts one. Which worker runs a call changes no value.

    A call whose cases hold more than LARGE_CALL_ELEMENTS input elements is in flight on one
    worker at a time, so that the frameworks' copies of a large case are not held at once."""
    keep_heap()
    dtypes = list(dtypes)
    apis = adapters.all_apis(frameworks) if apis is None else apis
    tasks, rows = plan(cases, apis, dtypes)
    if shard is not None:
        i, n = shard
        tasks = [t for t in tasks if t.idx % n == i - 1]
        rows = [r for r in rows if r["_idx"] // len(QUANTITIES) % n == i - 1]
    jnl = None
    if journal_dir is not None:
        from harness.journal import Journal, fingerprint

        jnl = Journal(journal_dir, fingerprint(cases, apis, dtypes) + (f" shard {shard[0]}/{shard[1]}" if shard else ""),
                      resume)
        for t in [t for t in tasks if t.idx in jnl.done]:
            rows.extend(jnl.done[t.idx])
        tasks = [t for t in tasks if t.idx not in jnl.done]
    pending: dict[int, list[dict]] = {}
    fws = {fw: adapters.load(fw).framework for fw in frameworks}
    queues: dict[str, deque[list[Task]]] = {
        fw: deque(framework_calls([t for t in tasks if t.api.framework == fw], fws[fw], stack=batch)) for fw in frameworks}
    reference = Reference()
    versions: dict[str, str] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="call", desc="xentc run", dynamic_ncols=True)

    # the calls still to finish per (case, dtype): the reference of one is dropped after its last
    users: dict[tuple[str, str], int] = {}
    for t in tasks:
        users[(t.case.id, t.dtype)] = users.get((t.case.id, t.dtype), 0) + 1
    rows_in: dict[int, int] = {}

    def finish(task: Task, quantity: str = "loss", **kw) -> None:
        kw.setdefault("framework_version", versions.get(task.api.framework, ""))
        row = _row(task.case, task.api, task.dtype, quantity=quantity, _idx=_order(task.idx, quantity), **kw)
        rows.append(row)
        rows_in[task.idx] = rows_in.get(task.idx, 0) + 1
        if rows_in[task.idx] == len(task.quantities):
            del rows_in[task.idx]
            users[(task.case.id, task.dtype)] -= 1
            if not users[(task.case.id, task.dtype)]:
                reference.forget(task.case.id, task.dtype)
        if jnl is not None:  # a call is journaled once all its rows are in
            done = pending.setdefault(task.idx, [])
            done.append(row)
            if len(done) == len(task.quantities):
                jnl.record(task.idx, pending.pop(task.idx))
        if bar is not None and quantity == "loss":
            bar.update(1)

    def finish_all(task: Task, **kw) -> None:
        for q in task.quantities:
            finish(task, q, **kw)

    def pregrade(results: list[tuple[Task, tuple]]) -> dict[tuple[int, str], Grade]:
        """The Grades of the rows graded() will grade among these results of one call, graded at
        once (compare.grade_many: the same Grades as one by one)."""
        keys, items = [], []
        for task, (kind, payload) in results:
            if kind != "ok" or task.case.invalid or chunked.rows_per_block(task.case):
                continue
            tol = tolerance_ulp(task.dtype, _terms(task))
            for q in task.quantities:
                if payload[q][0] == "ok":
                    ref, _, ref_err = reference(task.case, task.api, task.dtype, q)
                    keys.append((task.idx, q))
                    items.append((np.asarray(payload[q][1]), ref, task.dtype, tol, ref_err))
        return dict(zip(keys, grade_many(items)))

    def graded(task: Task, quantity: str, out: np.ndarray, seconds: float, g: Grade | None = None) -> None:
        """The row of a quantity computed, graded (g: its Grade, from pregrade) against the reference."""
        per_block = chunked.rows_per_block(task.case)
        if not per_block:
            ref, label, ref_err = reference(task.case, task.api, task.dtype, quantity)
        n = _terms(task)
        tol = tolerance_ulp(task.dtype, n)
        if per_block:  # the reference a block of rows at a time (harness.chunked)
            label = reference_precision(task.dtype)[1]
            g = chunked.grade_blocks(out, lambda rows: reference(task.case, task.api, task.dtype, quantity, rows)[::2],
                                     chunked.shape_of(task.case, quantity), task.dtype, tol, per_block)
        elif g is None:
            g = grade(out, ref, task.dtype, tol, ref_err)
        idx = g.worst_index
        detail = g.detail
        out_dtype = _dtype_name(out.dtype)
        if out_dtype != task.dtype:
            detail = (detail + "; " if detail else "") + f"returned {out_dtype} for {task.dtype} inputs"
        row = dict(status=g.status, max_ulp=g.max_ulp, tol_ulp=tol, max_abs_err=g.max_abs_err,
                   max_rel_err=g.max_rel_err, worst_index=",".join(map(str, idx)) if idx else "",
                   expected=g.expected, actual=g.actual, n_elements=int(out.size), actual_dtype=out_dtype,
                   reference=label, detail=detail, seconds=seconds)
        fidx = g.worst_finite_index
        row["max_ulp_finite"] = g.max_ulp_finite
        if fidx is not None and fidx != idx:
            row["worst_input_finite"] = worst_input(task.case, task.api, reference.data(task.case, task.dtype), fidx,
                                                    quantity)
        if quantity == "loss" and fidx is not None and g.max_ulp_finite > 0:
            at, rows = fidx, None
            if per_block:  # the block of the worst row only
                rows = slice(fidx[0], fidx[0] + 1)
                at = (0,) + tuple(fidx[1:])
            kappa = reference.condition(task.case, task.api, task.dtype, rows)
            if kappa.size:
                k = float(kappa[at] if kappa.ndim else kappa)
                row["cond"] = k
                y = reference(task.case, task.api, task.dtype, "loss")[0]
                with np.errstate(over="ignore"):
                    y = float(np.asarray(y, np.float64)[fidx] if np.ndim(y) else y)
                row["cond_ulp"] = condition.cond_ulp(k, y, task.dtype, n)
        if task.case.category == PROFILED_CATEGORY:
            row["ulp_profile"] = profile.build(reference.data(task.case, task.dtype)[0], g.ulps_certain, task.dtype)
        if g.status != "match":
            data = reference.data(task.case, task.dtype)
            row["worst_input"] = worst_input(task.case, task.api, data, idx, quantity)
            row["repro"] = _snippet(fws[task.api.framework], task, output_index(task.case, task.api, quantity, idx),
                                    data, quantity, arrays_dir, None if per_block else ref)
        finish(task, quantity, **row)

    def bad_input(task: Task, out: np.ndarray, seconds: float) -> None:
        """An invalid case that returned: silent_nan or silent_value, with what it most likely means."""
        status = badinput.classify(out)
        detail = badinput.describe(out)
        data = reference.data(task.case, task.dtype)
        if status == "silent_value":
            conv = {k: task.api.convention(k) for k in ("mean", "axis_mean")}
            x, t, p = data
            p = {**task.api.defaults, **p}  # what the API applied (adapters.call_plan)
            meaning = badinput.reading(task.case.invalid, task.case.family, x, t, p, out, conv)
            detail += f"; likely {meaning}" if meaning else "; matches none of the readings tried"
        finish(task, "loss", status=status, detail=detail, seconds=seconds, reference="invalid input",
               actual=_first(out) if out.dtype.kind in "fiub" else np.nan, n_elements=int(out.size), actual_dtype=out.dtype.name,
               worst_input=badinput.KINDS[task.case.invalid].description, repro=snippet_of(task, "loss"))

    def failed_row(task: Task, status: str, detail: str, seconds: float = np.nan, quantity: str = "loss") -> None:
        if task.case.invalid:  # no reference value: a raise is the API rejecting the input
            finish(task, quantity, status="rejected" if status == "raised" else status, detail=detail,
                   seconds=seconds, reference="invalid input", worst_input=badinput.KINDS[task.case.invalid].description,
                   repro=snippet_of(task, quantity))
            return
        # the first row only, of a case taken in blocks (harness.chunked)
        first = slice(0, 1) if chunked.rows_per_block(task.case) else None
        ref, label, _ = reference(task.case, task.api, task.dtype, quantity, first)
        idx = None  # the whole case, or its first output where the case is large and unreduced
        if task.case.inputs.size > REPRO_FULL_MAX and task.case.reduction == "none":
            idx = (0,) * np.ndim(reference(task.case, task.api, task.dtype, "loss")[0]) or None
        finish(task, quantity, status=status, detail=detail, seconds=seconds, reference=label,
               expected=_first(ref),
               repro=_snippet(fws[task.api.framework], task, idx, reference.data(task.case, task.dtype), quantity,
                              arrays_dir, None if first is not None else ref))

    def failed_all(task: Task, status: str, detail: str, seconds: float = np.nan) -> None:
        for q in task.quantities:
            failed_row(task, status, detail, seconds, q)

    def received(task: Task, results: dict, seconds: float, grades: dict) -> None:
        for q in task.quantities:
            kind, payload = results[q]
            if kind == "ok" and task.case.invalid:
                bad_input(task, np.asarray(payload), seconds)
            elif kind == "ok":
                graded(task, q, np.asarray(payload), seconds, grades.get((task.idx, q)))
            elif kind == "none":
                failed_row(task, "no_gradient", f"{task.api.framework} returned no gradient (None)", seconds, q)
            else:
                failed_row(task, "raised", payload, seconds, q)

    def lost(h: WorkerHandle, why: str) -> None:
        """The call running crashed or hung: a batch or group is sent again one case per call; a
        call sent behind it, which never ran, is sent again as it was."""
        calls, later = h.inflight[0], list(h.inflight)[1:]
        if h.unsent:  # the worker was dead before it was sent: it never ran
            restart(h, [calls, *later])
        elif len(calls) > 1:
            restart(h, [*(calls.alone(t) for t in calls), *later])
        else:
            failed_all(calls[0], "crashed", why)
            restart(h, later)

    def restart(h: WorkerHandle, back: list) -> None:
        """A new process for h; `back`, calls it was sent and did not run, go to the front of
        its framework's queue, in order."""
        h.inflight.clear()
        queues[h.framework].extendleft(reversed(back))
        h.kill()
        h.start()

    handles = [WorkerHandle(fw, log_dir, call_timeout, device) for fw in frameworks if queues[fw]]
    every_handle = list(handles)
    stopping: list[WorkerHandle] = []  # asked to end, not yet joined
    t_start = time.monotonic()
    busy_s = {h.framework: 0.0 for h in handles}  # per framework: its calls' own time
    # per framework: its latest calls' times (the median, robust to a first call's warm-up)
    recent = {fw: deque(maxlen=32) for fw in busy_s}
    done_s: dict[str, float] = {}  # per framework: when its last call was answered, from the start
    ready_s: dict[str, float] = {}  # per framework: when its first worker was ready, from the start
    cpus = usable_cpus() if cpus is None else cpus
    no_spare: set[str] = set()  # frameworks a worker of which failed to start: no spare for them
    poisoned = {fw: 0 for fw in busy_s}  # per framework: workers replaced after a poisoning case
    answered = {fw: 0 for fw in busy_s}  # per framework: calls answered
    starts = {fw: deque(maxlen=32) for fw in busy_s}  # per framework: its workers' latest start-up times

    def large(call) -> bool:
        return any(t.case.inputs.size > LARGE_CALL_ELEMENTS for t in call)

    def next_call(h: WorkerHandle):
        q = queues[h.framework]
        return q[-1] if h.from_back else q[0]

    def send_next(h: WorkerHandle) -> None:
        """Send h its next calls, up to PIPELINE_DEPTH in flight (COMPILING_AHEAD where its
        framework compiles), unless the next is large and another large call is in flight."""
        q = queues[h.framework]
        depth = PIPELINE_DEPTH if fws[h.framework].compile is None else COMPILING_AHEAD
        while q and len(h.inflight) < depth:
            if large(next_call(h)) and any(large(o) for w in handles for o in w.inflight):
                return
            call = q.pop() if h.from_back else q.popleft()
            ready = messages.pop(id(call), None)
            if ready is not None:
                held[0] -= len(ready[1])
                if ready[0] != tuple(t.idx for t in call):  # another call, since gone, had that id
                    ready = None
            h.send(call, reference.data, None if ready is None else ready[1])

    def retire(h: WorkerHandle) -> None:
        handles.remove(h)
        if not any(w.framework == h.framework for w in handles):
            done_s[h.framework] = time.monotonic() - t_start

    def cannot_start(h: WorkerHandle, status: str, detail: str) -> None:
        """h did not start: its framework's queued calls cannot run, unless another of its
        workers runs them."""
        h.kill()
        retire(h)
        no_spare.add(h.framework)
        if not any(w.framework == h.framework and w.ready for w in handles):
            for t in (t for call in queues[h.framework] for t in call):
                finish_all(t, status=status, detail=detail)
            queues[h.framework].clear()

    def upcoming_calls():
        """The calls queued next (PREFETCH_CALLS per framework, from the ends the workers take
        them), whose work prefetch does while the workers compute (pieces)."""
        for fw, q in queues.items():
            n = min(len(q), PREFETCH_CALLS)
            for i in range(n):
                yield fw, q[i]
            if any(h.from_back for h in handles if h.framework == fw):
                for i in range(max(n, len(q) - PREFETCH_CALLS), len(q)):
                    yield fw, q[i]

    # what prefetch has seen to: tasks, and calls (by id: one reused by a later call only skips
    # work that is then done on demand), for the references and for the rest
    ahead: set[int] = set()
    readied: set[int] = set()
    calls_ahead: set[int] = set()
    calls_readied: set[int] = set()
    pickled: set[int] = set()  # calls whose message prefetch has pickled (or found too large)
    # id(call) -> (its tasks' idx, its message pickled while idle), until sent (send_next)
    messages: dict[int, tuple[tuple[int, ...], bytes]] = {}
    held = [0]  # the bytes of messages
    snippets: dict[tuple[int, str], str] = {}  # (task idx, quantity) -> an invalid case's repro

    def pieces():
        """Each piece of the queued calls' work that does not depend on their answers, done one
        at a time (prefetch). First the references (computed, or read from the persistent
        cache); then, call by call, its message to the worker pickled (up to PREPARED_BYTES in
        all), the condition numbers of its valid cases' losses (which a row reads when its loss
        is not exact: computed ahead only while fewer workers run than CPUs, else only read from
        the persistent cache) and its invalid cases' repros (every row of one has it, whatever the API
        does). Values are those computed on demand."""
        for _, call in upcoming_calls():
            if id(call) in calls_ahead:
                continue
            for t in call:
                if t.idx in ahead:
                    continue
                if not chunked.rows_per_block(t.case) and not t.case.invalid:
                    for q in t.quantities[:2]:  # the loss; one gradient brings every gradient
                        if not reference.holds(t.case, t.api, t.dtype, q):
                            reference(t.case, t.api, t.dtype, q)
                            yield
                ahead.add(t.idx)
            calls_ahead.add(id(call))
        for _, call in upcoming_calls():
            if id(call) in calls_readied:
                continue
            if id(call) not in pickled and held[0] < PREPARED_BYTES:
                pickled.add(id(call))
                msg = WorkerHandle.message(call, reference.data)
                if len(msg) <= PREPARED_CALL_BYTES:
                    messages[id(call)] = (tuple(t.idx for t in call), msg)
                    held[0] += len(msg)
                yield
            for t in call:
                if t.idx in readied:
                    continue
                if t.case.invalid:
                    for q in t.quantities:
                        snippets[(t.idx, q)] = invalid_snippet(t, q)
                elif not chunked.rows_per_block(t.case):  # a row may not need it: computed only on a free CPU
                    reference.condition(t.case, t.api, t.dtype, compute=len(handles) < cpus)
                readied.add(t.idx)
                yield
            calls_readied.add(id(call))

    def prefetch() -> bool:
        """Do pieces() for PREFETCH_SLICE_S, while the parent has nothing else to do (at the
        start, every worker's first calls, JAX's compilations); False when none is left."""
        end = time.perf_counter() + PREFETCH_SLICE_S
        did = False
        for _ in pieces():
            did = True
            if time.perf_counter() > end:
                break
        return did

    def invalid_snippet(task: Task, quantity: str) -> str:
        """The repro of an invalid case's row: the whole case."""
        return _snippet(fws[task.api.framework], task, None, reference.data(task.case, task.dtype), quantity,
                        arrays_dir)

    def snippet_of(task: Task, quantity: str) -> str:
        """invalid_snippet, which prefetch may have written already."""
        got = snippets.pop((task.idx, quantity), None)
        return invalid_snippet(task, quantity) if got is None else got

    def spare() -> None:
        """While fewer workers than CPUs run, and none is starting for the first time, start one
        more for the framework whose queued calls would take its workers the longest, if more
        than MIN_SPLIT_S and SPLIT_STARTUPS times its workers' median start-up. A call counts the
        smaller of two estimates of its framework's calls (SPLIT_AFTER answered at least): the
        median of the latest, which a slow first call does not move, and the mean of all so far,
        which a stretch of slow calls of one API does not move (both measured: a first call of
        0.3 s; TF's median of 32 calls at 14 ms where its 665 calls averaged 3 ms), plus, where
        cases have poisoned its workers, the share of a worker's start-up that each call has
        cost so far: a framework that must restart often (torch on a GPU after device-side
        asserts) gets workers that restart side by side. On the CPU, a framework that compiles
        (adapters.Framework.compile) gets its first spare at once, even while its first worker
        starts, when SPARE_AT_ONCE_CALLS calls are queued: each is a compilation, CPU-bound, a
        second or so (measured, JAX float32 cold alone: 6.6-6.9 s on one worker, 5.5-6.0 s with a
        spare from the first answer); any further one as above. (On a GPU, a second process
        would share its memory: spares there come from the estimate alone, as before.) A spare
        takes its calls from the back of the queue, the other workers from the front, so that
        each sees APIs and shapes of its own."""
        if len(handles) >= cpus:
            return
        starting = any(h.first_start and not h.ready for h in handles)
        most, best = 0.0, None
        for fw, q in queues.items():
            n = sum(h.framework == fw for h in handles)
            if not q or not 0 < n < cpus or fw in no_spare:
                continue
            if fws[fw].compile is not None and n == 1 and len(q) >= SPARE_AT_ONCE_CALLS and device == "cpu":
                most, best = float("inf"), fw
            elif not starting and len(recent[fw]) >= SPLIT_AFTER:
                per_call = min(median_high(recent[fw]), busy_s[fw] / answered[fw])
                if poisoned[fw] and starts[fw]:
                    per_call += poisoned[fw] / max(answered[fw], 1) * median_high(starts[fw])
                left = len(q) * per_call / n
                if left > max(most, MIN_SPLIT_S, SPLIT_STARTUPS * median_high(starts[fw] or [0.0])):
                    most, best = left, fw
        if best is not None:
            h = WorkerHandle(best, log_dir, call_timeout, device)
            h.from_back = True
            handles.append(h)
            every_handle.append(h)

    try:
        while handles:
            for h in list(handles):
                if h.ready and len(h.inflight) < PIPELINE_DEPTH:
                    if queues[h.framework]:
                        send_next(h)
                    elif not h.inflight:  # joined at the end: its exit takes 15-20 ms (torch)
                        h.stop(wait=False)
                        stopping.append(h)
                        retire(h)
            if not handles:
                break
            spare()
            waitables = {}
            for h in handles:
                waitables[h.conn] = h
                waitables[h.proc.sentinel] = h
            now = time.monotonic()
            busy = [h.deadline for h in handles if h.inflight or not h.ready]
            timeout = max(0.0, min(busy) - now) if busy else 1.0  # an idle worker waits for a large call
            ready = wait(list(waitables), timeout=0)
            while not ready and prefetch():  # idle: a reference the next calls will need
                ready = wait(list(waitables), timeout=0)
            if not ready:
                ready = wait(list(waitables), timeout=min(timeout, 1.0))
            seen = set()
            for obj in ready:
                h = waitables[obj]
                if id(h) in seen:
                    continue
                seen.add(id(h))
                try:
                    if not h.conn.poll():
                        raise EOFError
                    msg = h.conn.recv()
                except (EOFError, OSError):
                    h.proc.join(5)
                    why = _death(h.proc)
                    if h.inflight:
                        lost(h, why)
                    elif not h.ready:  # died while starting: its calls cannot run
                        cannot_start(h, "crashed", f"worker failed to start: {why}")
                    continue
                if msg[0] == "ready":
                    h.ready, h.version, h.first_start = True, msg[1], False
                    starts[h.framework].append(time.monotonic() - h.started)
                    ready_s.setdefault(h.framework, time.monotonic() - t_start)
                    versions[h.framework] = msg[1]
                    if jnl is not None:
                        jnl.check_version(h.framework, msg[1])
                elif msg[0] == "unavailable":
                    cannot_start(h, "unsupported", f"framework {h.framework} unavailable: {msg[1]}")
                elif msg[0] == "poisoned":  # it computes no more and ends: what it did not run goes to a new one
                    poisoned[h.framework] += 1
                    restart(h, list(h.inflight))
                else:
                    call_id, results, seconds = msg  # seconds: per case
                    busy_s[h.framework] += sum(seconds)
                    answered[h.framework] += 1
                    recent[h.framework].append(sum(seconds))
                    calls = h.inflight.popleft()
                    assert calls[0].idx == call_id and len(results) == len(calls)
                    if h.inflight:  # the worker started the call behind it now
                        h.deadline = time.monotonic() + h.call_timeout
                    send_next(h)  # the worker computes the next call while this one is graded
                    unrun = []  # after a poisoning case: a new worker runs each, in order
                    grades = pregrade(list(zip(calls, results)))
                    for task, (kind, payload), s in zip(calls, results, seconds):
                        if kind == "ok":
                            received(task, payload, s, grades)
                        elif kind == adapters.UNRUN:
                            unrun.append(calls.alone(task))
                        else:
                            failed_all(task, "raised", payload, s)
                    queues[h.framework].extendleft(reversed(unrun))
            now = time.monotonic()
            for h in list(handles):
                if now > h.deadline and (h.inflight or not h.ready):
                    if h.inflight:
                        lost(h, f"timeout after {h.call_timeout:g} s")
                    else:
                        cannot_start(h, "crashed", f"worker did not start in {START_TIMEOUT_S:.0f} s")
    finally:
        refcache.flush()
        for h in handles:
            h.kill()
        if bar is not None:
            bar.close()
        if jnl is not None:
            jnl.close()
    if jnl is not None:
        versions = {**jnl.versions, **versions}

    for r in rows:
        if not r.get("framework_version"):
            r["framework_version"] = versions.get(r["framework"], "")
    df = pd.DataFrame(rows).sort_values("_idx", kind="stable").drop(columns="_idx").reset_index(drop=True)
    df["device"] = device
    for h in stopping:  # its last call poisoned it: counted, though nothing was left to move
        poisoned[h.framework] += sum(m[0] == "poisoned" for m in h.joined())
    if stats is not None:
        peaks = {"parent": peak_rss_mib()}
        for h in every_handle:  # a framework's largest, of all its workers
            if h.framework not in peaks or (h.peak_mib or 0.0) > (peaks[h.framework] or 0.0):
                peaks[h.framework] = h.peak_mib
        stats["peak_rss_mib"] = peaks
        stats["worker_s"] = {fw: {"calls": round(busy_s[fw], 2), "done": round(done_s[fw], 2) if fw in done_s else None,
                                  "ready": round(ready_s[fw], 3) if fw in ready_s else None,
                                  "workers": sum(h.framework == fw for h in every_handle),
                                  "poisoned": poisoned[fw]}
                             for fw in busy_s}
    return df[[*RESULT_COLUMNS, "repro"]], versions
