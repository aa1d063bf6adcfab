"""Splitting a run across processes, CI jobs or machines, and putting it back together.

`xentc run --shard I/N` runs the planned (case, API, dtype) calls whose plan index is I-1
modulo N (harness.runner.run), and records in run.json {"shard": {"index": I, "count": N,
"plan": <fingerprint of cases, APIs and dtypes>}}. `xentc merge DIR...` checks that the
directories are the N shards of one plan, each once, with the same framework versions, then
interleaves their rows back into plan order: the merged results.parquet/csv, report.md and
repro/ (with the repros' saved arrays, copied from the shards: copy_arrays) are those of the unsharded run (the `seconds` column aside, which is timing).
run.json: the first shard's, with the largest elapsed_s (the shards' wall time when they run
side by side), the latest date, and each shard's directory and elapsed_s under "shards".
"""
from __future__ import annotations

import os
import re
import shutil

import pandas as pd

#: the columns that name one planned call; its rows (loss, gradients) are consecutive
CALL_KEY = ["case_id", "api", "framework", "dtype"]


class ShardError(ValueError):
    """Bad --shard value, or directories that are not the shards of one run: one line."""


def parse(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 1 <= I <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ShardError(f"--shard expects I/N with 1 <= I <= N (e.g. 1/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _load(d: str) -> tuple[pd.DataFrame, dict]:
    from harness import results

    return results.load(d), results.load_metadata(d)


def merge(dirs: list[str]) -> tuple[pd.DataFrame, dict]:
    """The results and run metadata of the unsharded run, from the directories of its shards."""
    loaded = [(d, *_load(d)) for d in dirs]
    info = []
    for d, _, meta in loaded:
        s = meta.get("shard")
        if not isinstance(s, dict):
            raise ShardError(f"{d}: not a shard (its run.json has no 'shard'; `xentc run --shard I/N` writes one)")
        info.append((s["index"], s["count"], s["plan"]))
    counts = {c for _, c, _ in info}
    plans = {p for _, _, p in info}
    if len(counts) > 1 or len(plans) > 1:
        raise ShardError("the directories are shards of different runs (other shard counts, cases, APIs or dtypes)")
    n = counts.pop()
    have = sorted(i for i, _, _ in info)
    if have != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(have))
        dup = sorted({i for i in have if have.count(i) > 1})
        raise ShardError(f"need each of the {n} shards once: " + "; ".join(
            ([f"missing {', '.join(f'{i}/{n}' for i in missing)}"] if missing else [])
            + ([f"repeated {', '.join(f'{i}/{n}' for i in dup)}"] if dup else [])))
    versions: dict[str, str] = {}
    for d, _, meta in loaded:
        for k, v in meta.get("versions", {}).items():
            if versions.setdefault(k, v) != v:
                raise ShardError(f"{d}: {k} {v}, another shard ran {versions[k]}; merge runs of one environment")
    by_index = {i: df for (i, _, _), (_, df, _) in zip(info, loaded)}
    groups = {}
    for i, df in by_index.items():  # each shard's calls, in plan order
        key = df[CALL_KEY].astype(str).agg("\x00".join, axis=1)
        starts = (key != key.shift()).to_numpy().nonzero()[0].tolist() + [len(df)]
        groups[i] = [(a, b) for a, b in zip(starts, starts[1:])]
    parts = []
    total = sum(len(g) for g in groups.values())
    pos = dict.fromkeys(by_index, 0)
    for idx in range(total):  # plan index idx is in shard idx % n + 1
        i = idx % n + 1
        if pos[i] >= len(groups[i]):
            raise ShardError(f"shard {i}/{n} holds fewer calls than its plan: was it cut short?")
        a, b = groups[i][pos[i]]
        parts.append(by_index[i].iloc[a:b])
        pos[i] += 1
    df = pd.concat(parts, ignore_index=True) if parts else next(iter(by_index.values())).iloc[:0]
    metas = sorted((m for _, _, m in loaded), key=lambda m: m["shard"]["index"])
    meta = {k: v for k, v in metas[0].items() if k != "shard"}
    meta["versions"] = versions
    meta["elapsed_s"] = max(m.get("elapsed_s", 0) for m in metas)
    devices = sorted({m.get("device", "cpu") for m in metas})
    if len(devices) > 1:
        raise ShardError(f"the shards ran on different devices ({', '.join(devices)}): compare them with "
                         "`xentc diff`, do not merge them")
    peaks: dict = {}  # per process: the largest over the shards
    for m in metas:
        for k, v in (m.get("peak_rss_mib") or {}).items():
            if v is not None:
                peaks[k] = max(peaks.get(k, 0.0), v)
    meta["peak_rss_mib"] = peaks
    # per framework: its calls' time and its workers summed over the shards, the latest
    # readiness and answer (each from its own shard's start)
    worker_s: dict = {}
    for m in metas:
        for k, v in (m.get("worker_s") or {}).items():
            w = worker_s.setdefault(k, {"calls": 0.0, "ready": None, "done": None, "workers": 0, "poisoned": 0})
            w["calls"] = round(w["calls"] + (v.get("calls") or 0.0), 2)
            w["workers"] += v.get("workers") or 1
            w["poisoned"] += v.get("poisoned") or 0
            for when in ("ready", "done"):
                if v.get(when) is not None:
                    w[when] = max(w[when] or 0.0, v[when])
    meta["worker_s"] = worker_s
    meta["date"] = max(m.get("date", "") for m in metas)
    meta["shards"] = [{"dir": d, "index": m["shard"]["index"], "elapsed_s": m.get("elapsed_s")}
                      for d, _, m in sorted(loaded, key=lambda x: x[2]["shard"]["index"])]
    return df, meta


def copy_arrays(dirs: list[str], arrays: str) -> None:
    """The repro snippets' saved arrays (DIR/repro/arrays/*.npy, harness.repro) of every shard,
    into `arrays`: named by their content, so a file two shards saved is the same file."""
    from harness.repro import arrays_dir

    for d in dirs:
        src = arrays_dir(d)
        if not os.path.isdir(src) or (os.path.isdir(arrays) and os.path.samefile(src, arrays)):
            continue
        os.makedirs(arrays, exist_ok=True)
        for name in sorted(os.listdir(src)):
            if name.endswith(".npy") and not os.path.exists(os.path.join(arrays, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(arrays, name))
