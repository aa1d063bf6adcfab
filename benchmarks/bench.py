"""Harness against a direct loop, on the same cases (M7's benchmark).

    .venv/bin/python benchmarks/bench.py [--frameworks torch,tensorflow,jax] [--dtypes float32] [--limit N] [--repeat 3]

For each framework, on the default corpus (cases/generator.build_corpus(0)) restricted to the
dtypes given, the loss and its gradients as `xentc run` computes them (planned calls,
harness.runner.plan):
  direct   one process that sets the framework up, then calls each planned (case, API, dtype)
           once in a plain loop, as a user would: `adapters.call(..., compiled=False)`
           (conversion, the eager call and backward passes, back to numpy). For JAX also
           `direct jit`: the same loop with each call under jax.jit at its own shape.
  worker only  the harness's calls, batched as the harness batches them, through its worker
           process and pipe alone (warm caches): no reference, grading or repro. Beside the
           direct loop, what the process boundary costs; beside the harness, what its work on
           the answers costs.
  harness  `harness.runner.run` (worker process, batching, reference, grading, repro) in a
           process of its own, wall time minus the first worker's start-up (imports and
           Framework.setup, until it says it is ready: runner.run's stats), reported beside
           it. With fresh (cold) and then filled (warm) caches (XENTC_CACHE_DIR in a
           temporary directory): the reference cache (harness.refcache) and, for JAX, the
           compilation cache.
Each is run --repeat times, each time in a fresh process (and, for the harness, with a fresh
cache for the cold run), in rounds: the direct loop, then the harness right after it, so that a
round's runs see the machine at the same speed (this machine's speed drifts by a third over
minutes: the JAX direct loop took 38.5 s and 68.8 s on one day). Prints the median time and the
range, calls/second, the median (and range) of the rounds' ratios harness/direct, and the peak
resident memory (ru_maxrss) of the direct process, of the harness's parent and of its largest
worker. Set-up (imports: Framework.setup, in both) is not timed. Timings are wall-clock on this
machine; run nothing else meanwhile.

    --full    also the whole `make report` workload: every default framework, every dtype, the
              corpus, loss and gradients, in one `runner.run` (its own process, the JAX cache
              as it is on the machine unless --cold): wall time, and wall time less the
              slowest framework's start-up measured alone (the workers start side by side).
    --large   also the large case (cases.generator.large_cases: sparse softmax 4,096 x 131,072,
              float32) on each framework's canonical sparse-softmax API (LARGE_APIS), loss and
              gradient: wall time, and the peak resident memory of the runner and of each worker
              (runner.run's stats).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from statistics import median_high  # the median of an odd count, the upper one otherwise

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)


def _tasks(framework: str, dtypes: list[str], limit: int | None):
    import adapters
    from cases.generator import build_corpus
    from harness import runner

    cases = build_corpus(0)
    tasks, _ = runner.plan(cases, adapters.all_apis([framework]), dtypes)
    if limit:
        tasks = tasks[:limit]
    return cases, tasks


def _mib(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _direct(conn, framework: str, dtypes: list[str], limit: int | None, compiled: bool) -> None:
    os.environ["XENTC_CACHE_DIR"] = "off"  # as a user runs it: no persistent compilation cache
    import adapters

    fw = adapters.load(framework).framework
    os.environ.update(fw.env)
    fw.setup()
    _, tasks = _tasks(framework, dtypes, limit)
    data = [(t, *t.case.in_dtype(t.dtype)) for t in tasks]  # rounding is not the framework's time
    t0 = time.perf_counter()
    for t, x, y, p in data:
        try:
            adapters.call(fw, t.api, x, y, p, t.quantities, compiled=compiled)
        except Exception:  # noqa: BLE001 - a raise is a result, as in the harness
            pass
    conn.send((len(tasks), time.perf_counter() - t0, _mib(resource.RUSAGE_SELF)))


def _harness(conn, framework: str, dtypes: list[str], limit: int | None, cache: str) -> None:
    os.environ["XENTC_CACHE_DIR"] = cache  # the reference cache, and JAX's in the worker (adapters.jax)
    from harness import runner

    cases, tasks = _tasks(framework, dtypes, limit)
    chosen = {id(t.case) for t in tasks}
    stats: dict = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:  # where xentc run saves the repros' large arrays
        df, _ = runner.run([c for c in cases if id(c) in chosen], [framework], dtypes, stats=stats,
                           arrays_dir=os.path.join(out, "repro", "arrays"))
    start = stats["worker_s"][framework]["ready"]  # the first worker's start-up, as the run saw it
    conn.send((time.perf_counter() - t0 - start, start, len(df), _mib(resource.RUSAGE_SELF),
               _mib(resource.RUSAGE_CHILDREN)))


def _worker_only(conn, framework: str, dtypes: list[str], limit: int | None, cache: str) -> None:
    """The harness's calls (runner.batches, as runner.run plans them) through its worker alone:
    runner.WorkerHandle, PIPELINE_DEPTH calls in flight, each answer read and dropped. No
    reference, grading, repro or results table: what the harness costs before its own work on
    the answers. Inputs rounded to the dtype before the clock starts, as in _direct."""
    os.environ["XENTC_CACHE_DIR"] = cache
    import adapters
    from harness import runner

    _, tasks = _tasks(framework, dtypes, limit)
    calls = runner.framework_calls(tasks, adapters.load(framework).framework)
    data = {(id(t.case), t.dtype): t.case.in_dtype(t.dtype) for t in tasks}
    h = runner.WorkerHandle(framework, None)
    if h.conn.recv()[0] != "ready":
        raise SystemExit(f"bench: the {framework} worker did not start")
    t0 = time.perf_counter()
    sent = answered = 0
    while answered < len(calls):
        while sent < len(calls) and sent - answered < runner.PIPELINE_DEPTH:
            h.send(calls[sent], lambda case, dtype: data[(id(case), dtype)])
            sent += 1
        if isinstance(h.conn.recv()[0], str):  # "poisoned": not on a CPU
            raise SystemExit(f"bench: the {framework} worker stopped before its last call")
        answered += 1
    wall = time.perf_counter() - t0
    h.stop()
    conn.send((wall,))


def _full(conn, cache: str | None) -> None:
    if cache:
        os.environ["XENTC_CACHE_DIR"] = cache
    import adapters
    from cases.generator import build_corpus
    from harness import runner
    from harness.spec import DTYPES

    starts = {}
    for fw in adapters.DEFAULT_FRAMEWORKS:
        t0 = time.perf_counter()
        h = runner.WorkerHandle(fw, None)
        assert h.conn.recv()[0] in ("ready", "unavailable")
        starts[fw] = time.perf_counter() - t0
        h.stop()
    cases = build_corpus(0)
    stats: dict = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:  # where xentc run saves the repros' large arrays
        df, _ = runner.run(cases, list(adapters.DEFAULT_FRAMEWORKS), DTYPES, stats=stats,
                           arrays_dir=os.path.join(out, "repro", "arrays"))
    conn.send((time.perf_counter() - t0, starts, len(df), int((df.status != "unsupported").sum()),
               stats["peak_rss_mib"], stats["worker_s"]))


#: the API each framework's users reach for first, for the large case
LARGE_APIS = ("torch.nn.functional.cross_entropy[index]", "tf.nn.sparse_softmax_cross_entropy_with_logits",
              "optax.softmax_cross_entropy_with_integer_labels")


def _large(conn, frameworks: list[str]) -> None:
    import adapters
    from cases.generator import large_cases
    from harness import runner

    t0 = time.perf_counter()
    cases = large_cases(0)
    made = time.perf_counter() - t0
    apis = [a for a in adapters.all_apis(frameworks) if a.id in LARGE_APIS]
    stats: dict = {}
    t0 = time.perf_counter()
    df, _ = runner.run(cases, frameworks, ["float32"], apis=apis, stats=stats)
    rows = [(r.framework, r.api, r.quantity, r.status, r.max_ulp, r.seconds) for r in df.itertuples()]
    conn.send((made, time.perf_counter() - t0, rows, stats["peak_rss_mib"]))


def _in_process(target, *args):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=target, args=(child, *args))
    p.start()
    child.close()  # the child's end lives in the child only: its death ends recv with EOFError
    try:
        out = parent.recv()
    except EOFError:
        p.join()
        raise SystemExit(f"bench: the {target.__name__.strip('_')} process died (exit code {p.exitcode}) "
                         "before it answered; see the error above") from None
    p.join()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench")
    ap.add_argument("--frameworks", default="torch,tensorflow,jax")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--limit", type=int, help="the first N planned calls per framework only")
    ap.add_argument("--full", action="store_true", help="also the whole make-report workload (minutes)")
    ap.add_argument("--cold", action="store_true", help="--full with an empty JAX compilation cache")
    ap.add_argument("--large", action="store_true", help="also the 4,096 x 131,072 case (about 10 GiB)")
    ap.add_argument("--skip-direct", action="store_true", help="only --full / --large")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each direct loop and of each harness run (cold and warm), each in a process "
                         "of its own; the table gives their median (and range)")
    a = ap.parse_args(argv)
    dtypes = a.dtypes.split(",")
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, {platform.platform()}; "
          f"python {sys.version.split()[0]}; dtypes {','.join(dtypes)}; loss and gradients")
    print(f"median of {a.repeat} rounds (range), each round the direct loop and then the harness, one after the "
          "other; calls/s of the medians; harness/direct: the median (range) of the rounds' ratios")
    print("| framework | calls | direct s | direct calls/s | harness s | harness calls/s | harness/direct | "
          "start-up s | peak RSS MiB: direct / parent / worker |")
    print("|---|---|---|---|---|---|---|---|---|")
    def spread(xs):
        return f"{median_high(xs):.3g} ({min(xs):.3g}-{max(xs):.3g})" if len(xs) > 1 else f"{xs[0]:.3g}"

    for framework in [] if a.skip_direct else a.frameworks.split(","):
        direct, jit, alone = [], [], []
        runs = {"cold cache": [], "warm cache": []}
        for _ in range(a.repeat):  # one round: the direct loop, then the harness beside it in time
            direct.append(_in_process(_direct, framework, dtypes, a.limit, False))
            with tempfile.TemporaryDirectory() as cache:  # a fresh cache each round: one cold run, then one warm
                for label in runs:
                    runs[label].append(_in_process(_harness, framework, dtypes, a.limit, cache))
                alone.append(_in_process(_worker_only, framework, dtypes, a.limit, cache)[0])
            if framework == "jax":
                jit.append(_in_process(_direct, framework, dtypes, a.limit, True))
        n, direct_s, direct_rss = direct[0][0], median_high([d[1] for d in direct]), max(d[2] for d in direct)
        for label, rs in runs.items():
            harness_s, start = median_high([r[0] for r in rs]), median_high([r[1] for r in rs])
            rss, wrss = max(r[3] for r in rs), max(r[4] for r in rs)
            print(f"| {framework} ({label}) | {n} | {spread([d[1] for d in direct])} | {n / direct_s:.0f} | "
                  f"{spread([r[0] for r in rs])} | {n / harness_s:.0f} | "
                  f"{spread([r[0] / d[1] for r, d in zip(rs, direct)])} | {start:.1f} | "
                  f"{direct_rss:.0f} / {rss:.0f} / {wrss:.0f} |", flush=True)
        alone_s = median_high(alone)
        print(f"| {framework} (worker only, warm cache) | {n} | {spread([d[1] for d in direct])} | "
              f"{n / direct_s:.0f} | {spread(alone)} | {n / alone_s:.0f} | "
              f"{spread([w / d[1] for w, d in zip(alone, direct)])} | | |", flush=True)
        if jit:
            jit_s = median_high([j[1] for j in jit])
            print(f"| jax (direct loop under jax.jit, for comparison) | {n} | {spread([j[1] for j in jit])} | "
                  f"{n / jit_s:.0f} | | | | | {max(j[2] for j in jit):.0f} / | ", flush=True)
    if a.full:
        with tempfile.TemporaryDirectory() as empty:
            wall, starts, rows, computed, peaks, worker_s = _in_process(_full, empty if a.cold else None)
        slowest = max(starts, key=starts.get)
        print(f"\nfull make-report workload ({'cold' if a.cold else 'JAX cache as on this machine'}): {rows} rows "
              f"({computed} computed) in {wall:.1f} s; less the slowest start-up ({slowest} {starts[slowest]:.1f} s): "
              f"{wall - starts[slowest]:.1f} s")
        print("start-up s: " + ", ".join(f"{k} {v:.1f}" for k, v in starts.items()))
        print("peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items() if v is not None))
        print("per framework, its calls' own time / its last answer, from the start, s (workers, where more "
              "than one): " + ", ".join(
                  f"{k} {v['calls']:.1f} / {v['done'] if v['done'] is not None else float('nan'):.1f}"
                  + (f" ({v['workers']})" if v.get("workers", 1) > 1 else "") for k, v in worker_s.items()), flush=True)
    if a.large:
        made, wall, rows, peaks = _in_process(_large, a.frameworks.split(","))
        print(f"\nlarge case 4,096 x 131,072 float32 (generated in {made:.1f} s): {len(rows)} rows in {wall:.1f} s")
        print("| framework | API | quantity | status | max ulp | call s |\n|---|---|---|---|---|---|")
        for fw, api, q, st, u, sec in rows:
            print(f"| {fw} | {api} | {q} | {st} | {u:g} | {sec:.1f} |")
        print("peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items() if v is not None), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
