"""The `xentc` command line (also `python -m harness`)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from harness.spec import DEVICES, DTYPES

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input to the harness: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (an option's value, an unknown option) as one line too."""

    def error(self, message: str):
        print(f"xentc: error: {message} (`{self.prog} --help` lists the options)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _csv(value: str, known, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in known]
    if bad or not items:
        raise UsageError(f"unknown {what} {', '.join(bad) or repr(value)} (known: {', '.join(known)})")
    return items


def _writable_dir(path: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output directory {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {path} is not writable")
    return path


def cmd_run(args) -> int:
    import adapters
    from cases.generator import build_corpus
    from harness import report, repro, results, runner
    from harness.casefile import load_cases

    from harness.journal import NAME as JOURNAL, ResumeError

    if args.frameworks == "all":
        frameworks = list(adapters.DEFAULT_FRAMEWORKS)
    elif args.frameworks is not None:  # an empty list is an error, never "all"
        frameworks = _csv(args.frameworks, list(adapters.MODULES), "framework")
    else:
        frameworks = list(adapters.DEFAULT_FRAMEWORKS)
    dtypes = _csv(args.dtypes, DTYPES, "dtype") if args.dtypes is not None else list(DTYPES)
    adapters.all_apis(frameworks)  # a broken out-of-tree adapter fails here, before any output
    apis = None
    if args.apis is not None:
        apis = [a for pat in args.apis.split(",") if pat.strip() for a in adapters.select(pat.strip(), frameworks=frameworks)]
        apis = list({(a.framework, a.id): a for a in apis}.values())
        if not apis:
            raise UsageError(f"no API of {', '.join(frameworks)} matches --apis {args.apis!r} (`xentc list` lists them)")
        frameworks = [f for f in frameworks if any(a.framework == f for a in apis)]
    if args.cpus is not None and args.cpus < 1:
        raise UsageError(f"--cpus must be at least 1, got {args.cpus}")
    if args.call_timeout is not None and not args.call_timeout > 0:
        raise UsageError(f"--call-timeout must be a positive number of seconds, got {args.call_timeout}")
    shard = None
    if args.shard is not None:
        from harness import shard as shard_mod

        try:
            shard = shard_mod.parse(args.shard)
        except shard_mod.ShardError as e:
            raise UsageError(str(e)) from None
    cases = load_cases(args.cases) if args.cases else build_corpus(args.seed)
    if args.large:
        from cases.generator import large_cases

        cases = cases + large_cases(args.seed)
    out = _writable_dir(args.out)
    resume = args.resume and os.path.exists(os.path.join(out, JOURNAL))
    if args.resume and not resume and not args.quiet:
        print(f"xentc: nothing to resume in {out} (no {JOURNAL}); running from the start", file=sys.stderr)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    arrays = repro.arrays_dir(out)
    if not resume:  # a fresh run's repros load only arrays it saved itself
        _clear_arrays(arrays)
    t0 = time.perf_counter()
    stats: dict = {}
    try:
        df, versions = runner.run(cases, frameworks, dtypes, log_dir=os.path.join(out, "logs"), apis=apis,
                                  progress=sys.stderr.isatty() and not args.quiet, journal_dir=out, resume=resume,
                                  call_timeout=args.call_timeout or runner.CALL_TIMEOUT_S, batch=not args.no_batch,
                                  shard=shard, device=args.device, stats=stats, arrays_dir=arrays,
                                  cpus=args.cpus)
    except ResumeError as e:
        raise UsageError(f"cannot resume: {e}") from None
    elapsed = time.perf_counter() - t0
    meta = results.run_metadata(versions=versions, seed=args.seed, cases_source=args.cases or "built-in corpus",
                                frameworks=frameworks, dtypes=dtypes, elapsed_s=elapsed)
    meta["device"] = args.device
    meta["peak_rss_mib"] = stats.get("peak_rss_mib", {})
    meta["worker_s"] = stats.get("worker_s", {})
    if shard is not None:
        from harness.journal import fingerprint

        meta["shard"] = {"index": shard[0], "count": shard[1],
                         "plan": fingerprint(cases, apis or adapters.all_apis(frameworks), dtypes)}
    results.save(df, out)
    # this process's peak once the table is written (Parquet and CSV conversion is its largest moment)
    meta["peak_rss_mib"]["parent"] = runner.peak_rss_mib()
    results.save_metadata(meta, out)
    report.write(df, results.load_metadata(out), out)  # as saved, so a merge or re-render writes the same
    try:
        os.remove(os.path.join(out, JOURNAL))  # every row is in results.parquet now
    except FileNotFoundError:
        pass
    counts = df["status"].value_counts().to_dict()
    print(f"{len(df)} rows in {elapsed:.1f} s: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"\nwrote {out}/results.parquet, results.csv, run.json, report.md, repro/")
    return 0


def _clear_arrays(arrays: str) -> None:
    """Remove the arrays an earlier run saved in arrays (DIR/repro/arrays): its own .npy files only."""
    if os.path.isdir(arrays):
        for name in os.listdir(arrays):
            if name.endswith(".npy") or name.endswith(".tmp"):
                os.remove(os.path.join(arrays, name))


def cmd_merge(args) -> int:
    from harness import report, repro, results
    from harness.shard import ShardError, copy_arrays, merge

    dirs = [_run_dir(d) for d in args.run_dirs]
    try:
        df, meta = merge(dirs)
    except ShardError as e:
        raise UsageError(str(e)) from None
    out = _writable_dir(args.out)
    arrays = repro.arrays_dir(out)
    if not any(os.path.samefile(d, out) for d in dirs):
        _clear_arrays(arrays)
    copy_arrays(dirs, arrays)
    results.save(df, out)
    results.save_metadata(meta, out)
    report.write(df, meta, out)
    print(f"{len(df)} rows from {len(dirs)} shards\nwrote {out}/results.parquet, results.csv, run.json, report.md, repro/")
    return 0


def _run_dir(path: str) -> str:
    """A run directory holding results.parquet and run.json (as `xentc run` writes it)."""
    for name in ("results.parquet", "run.json"):
        if not os.path.isfile(os.path.join(path, name)):
            raise UsageError(f"{path}: not a run directory (no {name}; `xentc run --out {path}` writes one)")
    return path


def cmd_report(args) -> int:
    from harness import website

    run_dir = _run_dir(args.run_dir)
    out = args.out or os.path.join(run_dir, "site")
    _writable_dir(os.path.dirname(os.path.abspath(out)) or ".")
    against = _run_dir(args.against) if args.against else None
    versions = [_run_dir(d) for d in args.versions] if args.versions else None
    index = website.build(run_dir, out, with_plots=not args.no_plots, against=against, versions=versions)
    print(f"wrote {index}")
    return 0


def cmd_list(args) -> int:
    import adapters

    for api in adapters.all_apis():
        print(f"{api.framework:17} {api.family:18} {api.id}")
    return 0


def runner_timeout() -> str:
    from harness.runner import CALL_TIMEOUT_S

    return f"{CALL_TIMEOUT_S:g}"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="xentc", description="Cross-entropy conformance harness")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the cases on every API and write results and a report")
    r.add_argument("--frameworks", help="comma-separated subset of torch, tensorflow, jax, keras[tensorflow], "
                   "keras[jax], keras[torch], keras[numpy] (default: all)")
    r.add_argument("--dtypes", help="comma-separated subset of " + ",".join(DTYPES) + " (default: all)")
    r.add_argument("--cases", metavar="FILE", help="a JSON case file (default: the built-in corpus)")
    r.add_argument("--out", metavar="DIR", default="reports/latest", help="output directory (default: reports/latest)")
    r.add_argument("--seed", type=int, default=0, help="seed of the built-in corpus (default: 0)")
    r.add_argument("--apis", metavar="PATTERN",
                   help="only the APIs whose id (or framework:id) matches one of these comma-separated "
                        "patterns (fnmatch; brackets literal), e.g. 'torch.*,optax.*'")
    r.add_argument("--resume", action="store_true",
                   help="go on with the run in --out that was interrupted (DIR/journal.jsonl): the calls "
                        "already finished are kept, the rest run; the same options are required")
    r.add_argument("--call-timeout", type=float, metavar="S",
                   help=f"seconds one call may take before its worker is killed and the row is 'crashed' "
                        f"(default: {runner_timeout()})")
    r.add_argument("--shard", metavar="I/N",
                   help="run only the I-th of N interleaved parts of the plan (1 <= I <= N), e.g. one per CI job; "
                        "`xentc merge` puts the N output directories back together")
    r.add_argument("--no-batch", action="store_true",
                   help="one case per call, also where a framework batches (jax, keras[jax]; each case still padded to "
                        "its row bucket) or compiles calls together (jax): slower, the same values")
    r.add_argument("--large", action="store_true",
                   help="add the large case: sparse softmax, 4,096 rows x 131,072 classes, float32 "
                        "(its reference computed a block of rows at a time; measured peaks: runner 9 GiB, a "
                        "worker up to 15 GiB, benchmarks/RESULTS.md)")
    r.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where every API runs (default: cpu). cuda needs each framework's GPU build; a "
                        "framework that sees no GPU is 'unsupported' there. Compare with a CPU run: "
                        "xentc report GPU_RUN --against CPU_RUN")
    r.add_argument("--cpus", type=int, metavar="N",
                   help="while fewer workers than N run, the framework with the most work left gets another "
                        "(default: the CPUs this process may use; 1: one worker per framework)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)
    mg = sub.add_parser("merge", help="combine the output directories of `xentc run --shard I/N` into one run")
    mg.add_argument("run_dirs", metavar="DIR", nargs="+", help="the N shard directories, in any order")
    mg.add_argument("--out", metavar="DIR", default="reports/latest", help="output directory (default: reports/latest)")
    mg.set_defaults(func=cmd_merge)
    rp = sub.add_parser("report", help="render a run's results as a static HTML site")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `xentc run`")
    rp.add_argument("--out", metavar="SITE_DIR", help="site directory (default: RUN_DIR/site)")
    rp.add_argument("--no-plots", action="store_true", help="skip the matplotlib figures (faster)")
    rp.add_argument("--against", metavar="RUN_A", help="add a page of what changed since the run RUN_A (xentc diff)")
    rp.add_argument("--versions", metavar="RUN", nargs="+",
                    help="add the version matrix of these runs (oldest first; e.g. the tox version environments)")
    rp.set_defaults(func=cmd_report)
    ls = sub.add_parser("list", help="list the registered APIs")
    ls.set_defaults(func=cmd_list)
    from harness import diff, explore, scan

    explore.add_parser(sub)
    scan.add_parser(sub)
    diff.add_parsers(sub)
    return p


def main(argv=None) -> int:
    from harness.casefile import CaseFileError

    try:
        from adapters import AdapterConfigError
    except ValueError as e:  # XENTC_ADAPTERS malformed: raised while the registry is read
        print(f"xentc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, CaseFileError, AdapterConfigError) as e:
        print(f"xentc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xentc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
