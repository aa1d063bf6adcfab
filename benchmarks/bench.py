"""Harness against a direct loop, on the same cases (M7's benchmark; a first version).

    .venv/bin/python benchmarks/bench.py [--frameworks torch,tensorflow,jax] [--dtypes float32] [--limit N]

For each framework, on the default corpus (cases/generator.build_corpus(0)) restricted to the
dtypes given, the loss and its gradients as `xentc run` computes them:
  harness  `harness.runner.run` (worker process, reference, grading, repro), wall time minus the
           worker's start-up (imports), which is measured on its own and reported beside it;
  direct   one process that sets the framework up, then calls each planned (case, API, dtype)
           once through `adapters.call` in a plain loop: conversion, the call, back to numpy.
Prints calls/second of each, the ratio harness/direct, and the peak resident memory of the
parent and of the largest worker. Timings are wall-clock on this machine; run nothing else.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

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


def _direct(conn, framework: str, dtypes: list[str], limit: int | None) -> None:
    import adapters

    fw = adapters.load(framework).framework
    os.environ.update(fw.env)
    t0 = time.perf_counter()
    fw.setup()
    setup = time.perf_counter() - t0
    _, tasks = _tasks(framework, dtypes, limit)
    data = [(t, *t.case.in_dtype(t.dtype)) for t in tasks]  # rounding is not the framework's time
    t0 = time.perf_counter()
    for t, x, y, p in data:
        try:
            adapters.call(fw, t.api, x, y, p, t.quantities)
        except Exception:  # noqa: BLE001 - a raise is a result, as in the harness
            pass
    conn.send((len(tasks), time.perf_counter() - t0, setup,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _startup(framework: str) -> float:
    """Seconds from spawning a worker to its 'ready' (imports and set-up)."""
    from harness.runner import WorkerHandle

    t0 = time.perf_counter()
    h = WorkerHandle(framework, None)
    msg = h.conn.recv()
    dt = time.perf_counter() - t0
    h.stop()
    assert msg[0] == "ready", msg
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench")
    ap.add_argument("--frameworks", default="torch,tensorflow,jax")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--limit", type=int, help="the first N planned calls per framework only")
    a = ap.parse_args(argv)
    dtypes = a.dtypes.split(",")
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().machine}; python {sys.version.split()[0]}")
    print("| framework | calls | direct s | direct calls/s | harness s (after start-up) | harness calls/s | "
          "harness/direct | start-up s | peak RSS parent / direct MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    from harness import runner

    for framework in a.frameworks.split(","):
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_direct, args=(child, framework, dtypes, a.limit))
        p.start()
        n, direct_s, _, direct_rss = parent.recv()
        p.join()
        cases, tasks = _tasks(framework, dtypes, a.limit)
        chosen = {id(t.case) for t in tasks}
        start = _startup(framework)
        t0 = time.perf_counter()
        df, _ = runner.run([c for c in cases if id(c) in chosen], [framework], dtypes)
        harness_s = time.perf_counter() - t0 - start
        ran = int((df.status != "unsupported").sum())  # rows: one per call and quantity
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {framework} | {n} | {direct_s:.2f} | {n / direct_s:.0f} | {harness_s:.2f} | {n / harness_s:.0f} | "
              f"{harness_s / direct_s:.2f} | {start:.1f} | {rss:.0f} / {direct_rss:.0f} |", flush=True)
        print(f"  (harness rows computed: {ran})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
