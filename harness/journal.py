"""The run journal: every finished call's rows, appended as they come, so that a run killed at
any point (SIGKILL included) loses at most the calls in flight and `xentc run --resume`
completes it with the rows an uninterrupted run would have written.

Format: JSON Lines in DIR/journal.jsonl.
  line 1:  {"journal": 1, "fingerprint": "<sha256 of the plan>"}
  then:    {"versions": {framework: version}}      when a worker reports its version
           {"task": idx, "rows": [row, ...]}       every row of one call (loss and gradients)
One line per call, written whole and flushed: a line cut by a kill is the last line and is
dropped on reading, so a call is in the journal with all its rows or not at all. Flushing hands
the line to the operating system, which keeps it when the process is killed; surviving a power
cut would need an fsync per line (about a millisecond each), which this does not pay.
Rows are plain JSON (nan and inf as JSON's NaN/Infinity extensions); floats round-trip exactly.
The journal is removed once results.parquet, results.csv, run.json and report.md are written.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

import numpy as np

NAME = "journal.jsonl"
VERSION = 1


class ResumeError(Exception):
    """The journal cannot be resumed (another plan, other framework versions): one line."""


def fingerprint(cases, apis, dtypes) -> str:
    """sha256 of everything that decides a run's rows: the cases (ids, families, arrays,
    parameters, dtypes), the API ids and the dtypes."""
    h = hashlib.sha256()

    def put(*parts: Any) -> None:
        for p in parts:
            if isinstance(p, np.ndarray):
                h.update(f"{p.dtype.str}{p.shape}".encode())
                h.update(np.ascontiguousarray(p).tobytes())
            else:
                h.update(repr(p).encode())
            h.update(b"\0")

    for c in cases:
        put(c.id, c.family, c.inputs, c.targets, c.dtypes, getattr(c, "invalid", None))
        for k in sorted(c.params):
            v = c.params[k]
            put(k, v if isinstance(v, np.ndarray) else repr(v))
    put(*[f"{a.framework}:{a.id}" for a in apis])
    put(*dtypes)
    return h.hexdigest()


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


class Journal:
    """Append-only record of finished calls (see the module docstring)."""

    def __init__(self, directory: str, fp: str, resume: bool) -> None:
        self.path = os.path.join(directory, NAME)
        self.done: dict[int, list[dict]] = {}
        self.versions: dict[str, str] = {}
        good = self._read(fp) if resume and os.path.exists(self.path) else None
        if good is not None:
            os.truncate(self.path, good)  # drop the line a kill cut short: its call runs again
            self._f = open(self.path, "a", encoding="utf-8")
        else:
            self._f = open(self.path, "w", encoding="utf-8")
            self._write({"journal": VERSION, "fingerprint": fp})

    def _read(self, fp: str) -> int | None:
        """Load the finished calls; return the length in bytes of the whole lines (None: the
        kill came before the first line was whole, so there is nothing to resume)."""
        with open(self.path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n") + 1  # bytes after the last newline are a line cut short
        lines = data[:end].split(b"\n")[:-1]
        if not lines:
            return None
        try:
            head = json.loads(lines[0])
        except (ValueError, IndexError):
            head = {}
        if not isinstance(head, dict) or head.get("journal") != VERSION:
            raise ResumeError(f"{self.path}: not a journal this version of xentc can resume")
        if head.get("fingerprint") != fp:
            raise ResumeError(f"{self.path}: was written for other cases, APIs or dtypes; resume with the same "
                              "--cases/--seed/--frameworks/--apis/--dtypes, or run without --resume")
        for i, line in enumerate(lines[1:], 2):
            try:
                rec = json.loads(line)
            except ValueError:
                raise ResumeError(f"{self.path}: line {i} is damaged; run without --resume") from None
            if "task" in rec:
                self.done[int(rec["task"])] = rec["rows"]
            elif "versions" in rec:
                self.versions.update(rec["versions"])
        return end

    def _write(self, rec: dict) -> None:
        self._f.write(json.dumps(rec, default=_plain, separators=(",", ":")) + "\n")
        self._f.flush()

    def check_version(self, framework: str, version: str) -> None:
        """Record a worker's version; on resume it must be the version the journal's rows came from."""
        old = self.versions.get(framework)
        if old is not None and old != version:
            raise ResumeError(f"{self.path}: its {framework} rows were made with version {old}, "
                              f"this is {version}; run without --resume")
        if old is None:
            self.versions[framework] = version
            self._write({"versions": {framework: version}})

    def record(self, task_idx: int, rows: Iterable[dict]) -> None:
        self._write({"task": task_idx, "rows": list(rows)})

    def close(self) -> None:
        self._f.close()

    def remove(self) -> None:
        self.close()
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
