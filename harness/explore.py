"""`xentc explore`: search for the inputs that maximise an API's ULP error, shrink the worst to a
minimal case, and append it with its provenance to cases/found/ (the M1 case-file format), so
the next run and the conformance tests include it.

The search works in bit-pattern space: a value of the dtype is its ordered integer key
(`harness.ulp.ordered_key`), so a box of keys is a range of floats with as many values per
binade as the dtype has. Each round samples every active box, evaluates all samples in one
framework call, scores each box by the largest finite ULP error seen in it, keeps the best
boxes, halves them along every dimension, and adds a few boxes drawn afresh from the whole
range (so a lucky early box cannot hold the search). Dimensions:
  elementwise from logits:        x (every finite value);  targets 0, 1 or uniform
  elementwise from probabilities: p in [0, 1];              targets 0, 1 or uniform
  rows from logits:      offset m and spread s; a row of C logits m + s*g (g fixed normal draws)
  rows of probabilities: spread s; the row softmax(s*g), rounded
The error of a row is that of its output. Shrinking then simplifies the worst input while the
error stays at least as large: fewer classes (one at a time), then fewer significant bits.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from dataclasses import dataclass

import numpy as np

from harness import oracle
from harness.casefile import Case, dump_cases, load_cases
from harness.dtypes import UINT, finfo, np_dtype, reference_precision, to_dtype
from harness.spec import DTYPES, FAMILIES, SAMPLED_FAMILIES, Api
from harness.ulp import ulp_distance, value_class

SEARCH = "bit-pattern box refinement"
DEFAULT_BUDGET = 100_000  # inputs (elements or rows) evaluated per API
ROW_CLASSES = (2, 3, 5, 10, 100)
FOCAL_PARAMS = {"gamma": 2.0}


def _key_to_value(k: np.ndarray, dtype: str) -> np.ndarray:
    """Inverse of ordered_key: the float64 value of each ordered integer key."""
    nbits = 8 * np_dtype(dtype).itemsize
    k = np.asarray(k, np.int64)
    mag = np.abs(k).astype(np.uint64)
    bits = np.where(k < 0, mag | np.uint64(1 << (nbits - 1)), mag).astype(UINT[dtype])
    with np.errstate(invalid="ignore"):
        return bits.view(np_dtype(dtype)).astype(np.float64)


def _key(v: float, dtype: str) -> int:
    from harness.ulp import ordered_key

    return int(ordered_key(np.asarray([v]), dtype)[0])


def _round_bits(v: np.ndarray, bits: int) -> np.ndarray:
    """v rounded to `bits` significant bits (float64)."""
    m, e = np.frexp(np.asarray(v, np.float64))
    return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e)


# --- the framework side ----------------------------------------------------------------------------
class Evaluator:
    """One framework's worker (the runner's), called synchronously; the ULP error per output."""

    def __init__(self, framework: str) -> None:
        from harness import runner

        self._runner = runner
        self.handle = runner.WorkerHandle(framework, None)
        msg = self.handle.conn.recv()
        if msg[0] != "ready":
            self.handle.stop()
            raise RuntimeError(f"{framework} unavailable: {msg[1]}")
        self.version = msg[1]
        self._n = 0

    def errors(self, api: Api, case: Case, dtype: str) -> np.ndarray | None:
        """Finite ULP error of every output (-1 where either value is non-finite), or None when
        the API raised or cannot take the case."""
        if api.cannot_express(case.params, dtype, case.inputs.ndim):
            return None
        self._n += 1
        self.handle.send([self._runner.Task(self._n, case, api, dtype)])
        _, (reply,), _ = self.handle.conn.recv()  # harness.worker's protocol: one case per call
        if reply[0] != "ok" or reply[1]["loss"][0] != "ok":
            return None
        out = np.asarray(reply[1]["loss"][1])
        x, t, p = case.in_dtype(dtype)
        conv = {"mean": api.convention("mean"), "axis_mean": api.convention("axis_mean")}
        ref = oracle.loss(case.family, x, t, p, conv, reference_precision(dtype)[0])
        if out.shape != ref.shape:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            r = to_dtype(np.asarray(ref, np.float64), dtype)
            u = ulp_distance(out, r, dtype)
            both = (value_class(to_dtype(np.asarray(out, np.float64), dtype)) == 0) & (value_class(r) == 0)
        return np.where(both, u, -1.0)

    def close(self) -> None:
        self.handle.stop()


# --- the search space of a family ------------------------------------------------------------------
@dataclass
class Space:
    family: str
    dtype: str
    lo: np.ndarray  # per dimension, inclusive key bounds
    hi: np.ndarray

    @classmethod
    def of(cls, family: str, dtype: str) -> "Space":
        fam = FAMILIES[family]
        big = _key(float(finfo(dtype).max), dtype)
        if not fam.rowwise:
            lo, hi = ((_key(0.0, dtype), _key(1.0, dtype)) if fam.inputs == "probabilities" else (-big, big))
            return cls(family, dtype, np.array([lo]), np.array([hi]))
        tiny = _key(float(finfo(dtype).smallest_subnormal), dtype)
        if fam.inputs == "logits":  # offset anywhere finite, spread positive
            return cls(family, dtype, np.array([-big, tiny]), np.array([big, big]))
        return cls(family, dtype, np.array([tiny]), np.array([_key(1e4, dtype)]))

    def decode(self, keys: np.ndarray, rng: np.random.Generator, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of one candidate per row of keys (elementwise: shape (n, 1))."""
        fam = FAMILIES[self.family]
        n = keys.shape[0]
        if not fam.rowwise:
            x = _key_to_value(keys[:, 0], self.dtype)[:, None]
            z = np.where(rng.random(n) < 0.5, rng.integers(0, 2, n).astype(float), rng.random(n))[:, None]
            return x, z
        g = rng.normal(0.0, 1.0, (n, c))
        if fam.inputs == "logits":
            m = _key_to_value(keys[:, 0], self.dtype)[:, None]
            s = _key_to_value(keys[:, 1], self.dtype)[:, None]
            with np.errstate(over="ignore", invalid="ignore"):
                x = m + s * g
        else:
            s = _key_to_value(keys[:, 0], self.dtype)[:, None]
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.exp(s * g - np.max(s * g, axis=1, keepdims=True))
                x = e / np.sum(e, axis=1, keepdims=True)
        x = to_dtype(x, self.dtype).astype(np.float64)  # what the framework receives, as the case keeps it
        k = rng.integers(0, c, n)
        if fam.targets == "index":
            return x, k
        return x, np.eye(c)[k]


def _params(family: str) -> dict:
    return dict(FOCAL_PARAMS) if "focal" in family else {}


# --- search and shrink -----------------------------------------------------------------------------
@dataclass
class Found:
    err: float
    x: np.ndarray  # one element (1, 1) or one row (1, C)
    t: np.ndarray
    evaluated: int


def search(ev: Evaluator, api: Api, dtype: str, budget: int, seed: int, *, per_round: int = 2048,
           keep: int = 16, fresh: int = 8) -> Found | None:
    space = Space.of(api.family, dtype)
    rng = np.random.default_rng([seed, sum(map(ord, api.id)), DTYPES.index(dtype)])
    d = space.lo.size
    splits = 64 if d == 1 else 8

    def initial(n_boxes: int):
        edges = [np.linspace(space.lo[i], space.hi[i], splits + 1).astype(np.int64) for i in range(d)]
        idx = rng.integers(0, splits, (n_boxes, d))
        lo = np.stack([edges[i][idx[:, i]] for i in range(d)], 1)
        hi = np.stack([edges[i][idx[:, i] + 1] for i in range(d)], 1)
        return list(zip(lo, hi))

    boxes = initial(64)
    best: Found | None = None
    evaluated = 0
    while evaluated < budget:
        m = max(1, per_round // len(boxes))
        keys = np.concatenate([rng.integers(lo, np.maximum(hi, lo + 1), (m, d)) for lo, hi in boxes])
        c = int(rng.choice(ROW_CLASSES)) if FAMILIES[api.family].rowwise else 1
        x, t = space.decode(keys, rng, c)
        case = Case("explore", api.family, x, t, _params(api.family), (dtype,))
        err = ev.errors(api, case, dtype)
        evaluated += keys.shape[0]
        if err is None:
            boxes = initial(len(boxes))
            continue
        err = err.reshape(len(boxes), m)
        score = err.max(axis=1)
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        if best is None or err[i, j] > best.err:
            r = i * m + j
            best = Found(float(err[i, j]), x[r:r + 1], t[r:r + 1], evaluated)
        order = np.argsort(-score, kind="stable")[:keep]
        nxt = []
        for b in order:
            lo, hi = boxes[b]
            mid = (lo + hi) // 2
            for corner in range(2 ** d):  # halve along every dimension
                sel = np.array([(corner >> k) & 1 for k in range(d)], bool)
                nlo, nhi = np.where(sel, mid, lo), np.where(sel, hi, mid)
                if np.all(nhi >= nlo):
                    nxt.append((nlo, np.maximum(nhi, nlo)))
        boxes = nxt + initial(fresh)
    if best is not None:
        best.evaluated = evaluated
    return best if best is not None and best.err > 0 else best


def shrink(ev: Evaluator, api: Api, dtype: str, f: Found) -> Found:
    """Fewer classes, then fewer significant bits, while the error stays >= f.err."""
    fam = FAMILIES[api.family]
    x, t, target = f.x.copy(), f.t.copy(), f.err
    params = _params(api.family)

    def errs(xs, ts):
        e = ev.errors(api, Case("shrink", api.family, xs, ts, params, (dtype,)), dtype)
        return None if e is None else e.reshape(-1)

    if fam.rowwise:
        while x.shape[1] > 2:  # drop a class (never the target's)
            k = int(t[0]) if fam.targets == "index" else int(np.argmax(t[0]))
            drop = [j for j in range(x.shape[1]) if j != k]
            xs = np.stack([np.delete(x[0], j) for j in drop])
            if fam.targets == "index":
                ts = np.array([k - (j < k) for j in drop])
            else:
                ts = np.stack([np.delete(t[0], j) for j in drop])
            if fam.inputs == "probabilities":
                xs = xs / xs.sum(axis=1, keepdims=True)
            e = errs(xs, ts)
            ok = [] if e is None else np.flatnonzero(e >= target)
            if not len(ok):
                break
            j = int(ok[np.argmax(e[ok])])
            x, t, target = xs[j:j + 1], ts[j:j + 1], float(e[j])
    p = finfo(dtype).nmant + 1
    for _ in range(0 if fam.rowwise and fam.inputs == "probabilities" else 3):  # rows must stay normalised  # fewer significant bits in the inputs (then, elementwise, in the target)
        bits = list(range(1, p + 1))
        xs = np.concatenate([to_dtype(_round_bits(x, b), dtype).astype(np.float64) for b in bits])
        ts = np.concatenate([t] * len(bits))
        e = errs(xs, ts)
        if e is None:
            break
        per = e.reshape(len(bits), -1).min(axis=1) if fam.rowwise else e
        ok = np.flatnonzero(per >= target)
        if not len(ok) or bits[ok[0]] == p:
            break
        b = int(ok[0])
        x, target = xs[b * x.shape[0]:(b + 1) * x.shape[0]], float(per[b])
    if not fam.rowwise and 0 < t[0, 0] < 1:
        zs = np.concatenate([[[0.0]], [[1.0]], *[_round_bits(t, b) for b in range(1, 12)]])
        e = errs(np.repeat(x, zs.shape[0], axis=0), zs)
        if e is not None:
            ok = np.flatnonzero(e >= target)
            if len(ok):
                t, target = zs[ok[0]:ok[0] + 1], float(e[ok[0]])
    return Found(target, x, t, f.evaluated)


def corpus_worst(ev: Evaluator, api: Api, dtype: str, cases) -> tuple[float, str]:
    """The largest finite ULP error of the API over the hand-written corpus (unreduced cases of
    its family), and the case it is in."""
    worst, where = -1.0, ""
    for c in cases:
        if c.family != api.family or c.category in ("exhaustive", "found") or c.reduction != "none":
            continue
        if c.dtypes is not None and dtype not in c.dtypes:
            continue
        e = ev.errors(api, c, dtype)
        if e is not None and e.size and e.max() > worst:
            worst, where = float(e.max()), c.id
    return worst, where


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def append_found(case: Case, directory: str) -> str:
    """Append `case` to directory/<api>.json (created if absent); returns the file's path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, slug(case.provenance["api"]) + ".json")
    cases = load_cases(path) if os.path.exists(path) else []
    cases = [c for c in cases if c.id != case.id] + [case]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(dump_cases(cases) + "\n")
    os.replace(tmp, path)
    return path


def select(pattern: str, frameworks=None) -> list[Api]:
    """The APIs `xentc explore` can search: every family but the sampled ones (adapters.select)."""
    import adapters
    from harness.spec import FAMILIES

    return adapters.select(pattern, [f for f in FAMILIES if f not in SAMPLED_FAMILIES], frameworks)


def explore(pattern: str, dtype: str, budget: int = DEFAULT_BUDGET, seed: int = 0, *,
            out_dir: str | None = None, frameworks=None, corpus=None, echo=print) -> list[dict]:
    """Search each API matching `pattern`; append each worst input found (error > 0) to
    out_dir (default cases/found). Returns one summary dict per API."""
    from cases.generator import FOUND_DIR, build_corpus

    out_dir = FOUND_DIR if out_dir is None else out_dir
    apis = select(pattern, frameworks)
    corpus = build_corpus(0, exhaustive=False, found=False) if corpus is None else corpus
    summary = []
    by_fw: dict[str, list[Api]] = {}
    for a in apis:
        by_fw.setdefault(a.framework, []).append(a)
    for fw, fw_apis in by_fw.items():
        ev = Evaluator(fw)
        try:
            for api in fw_apis:
                t0 = time.perf_counter()
                if api.cannot_express({}, dtype, 2):
                    echo(f"{fw}:{api.id} {dtype}: skipped ({api.cannot_express({}, dtype, 2)})")
                    continue
                base, base_case = corpus_worst(ev, api, dtype, corpus)
                f = search(ev, api, dtype, budget, seed)
                rec = dict(framework=fw, api=api.id, dtype=dtype, corpus_ulp=base, corpus_case=base_case,
                           found_ulp=np.nan, case_id="", file="", seconds=0.0)
                if f is not None and f.err > 0:
                    f = shrink(ev, api, dtype, f)
                    cid = f"found/{api.family}/{slug(api.id)}-{fw.replace('[', '-').replace(']', '')}-{dtype}-s{seed}"
                    prov = {"api": api.id, "framework": fw, "framework_version": ev.version, "dtype": dtype,
                            "search": SEARCH, "seed": seed, "budget": budget, "evaluated": f.evaluated,
                            "max_ulp": f.err, "corpus_max_ulp": base,
                            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")}
                    case = Case(cid, api.family, np.asarray(f.x, np.float64), np.asarray(f.t), _params(api.family),
                                (dtype,), prov)
                    path = append_found(case, out_dir)
                    rec.update(found_ulp=f.err, case_id=cid, file=path, x=f.x.ravel().tolist(), t=np.asarray(f.t).ravel().tolist())
                rec["seconds"] = time.perf_counter() - t0
                summary.append(rec)
                worse = "worse than the corpus" if rec["found_ulp"] > base else "not worse than the corpus"
                echo(f"{fw}:{api.id} {dtype}: found {rec['found_ulp']:g} ulp ({worse}: {base:g} in {base_case or '-'})"
                     + (f" at x={np.asarray(f.x).ravel().tolist()} t={np.asarray(f.t).ravel().tolist()} -> {rec['file']}"
                        if rec["case_id"] else "") + f" [{rec['seconds']:.1f} s]")
        finally:
            ev.close()
    return summary


def add_parser(sub) -> None:
    e = sub.add_parser("explore", help="search for the inputs that maximise an API's ULP error; keep the worst as cases")
    e.add_argument("--api", required=True, metavar="PATTERN", help="glob over API ids (or framework:id)")
    e.add_argument("--dtype", required=True, help="one of " + ", ".join(DTYPES))
    e.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help=f"inputs evaluated per API (default {DEFAULT_BUDGET})")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", metavar="DIR", help="where found cases go (default cases/found)")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=cmd_explore)


def cmd_explore(args) -> int:
    from harness.cli import UsageError

    if args.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {args.dtype!r} (known: {', '.join(DTYPES)})")
    if args.budget < 1:
        raise UsageError(f"--budget must be positive, not {args.budget}")
    if not select(args.api):
        raise UsageError(f"no API matches {args.api!r} (sampled losses are not searched; see `xentc list`)")
    summary = explore(args.api, args.dtype, args.budget, args.seed, out_dir=args.out)
    if args.json:
        print(json.dumps(summary, default=float, indent=1))
    return 0
