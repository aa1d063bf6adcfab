"""Known discrepancies: one file (cases/expectations.toml), read by the conformance tests and
by the report alike.

Each entry names the rows it covers with globs ('*' and '?' only; brackets are literal) (api, case, dtype, quantity), the
statuses it expects, a reason, and a public reference where one exists:

    [[known]]
    api = "torch.nn.functional.binary_cross_entropy"
    case = "extreme/binary/*"
    framework = "torch"            # optional, default "*"
    status = ["nonfinite_mismatch"]
    kind = "by-design"
    reason = "BCELoss clamps log outputs to >= -100, so -log(0) is 100, not inf"
    ref = "https://pytorch.org/docs/stable/generated/torch.nn.BCELoss.html"

A failing row is *known* when an entry covers it with the row's status (an expected
failure). A gradient row also inherits the entry of its own call's loss row: when the loss is
known to fail with the same status (or raised, so nothing could be differentiated), the
backward pass of that computation is expected to fail with it. Entries with quantity "grad_*"
(or one gradient) describe failures of the backward pass where the loss itself is right. A failing row no entry covers, or covered with another status, is *unknown* (a
test failure). An entry that covers no failing row is *stale* (also a test failure), so the
file cannot rot.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping

from harness.spec import FAILING

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cases", "expectations.toml")
KINDS = ("bug", "by-design", "convention", "precision")
_KEYS = {"api", "case", "dtype", "quantity", "status", "kind", "reason", "ref", "framework"}


class ExpectationsError(ValueError):
    pass


@lru_cache(maxsize=None)
def _glob(pattern: str) -> re.Pattern:
    """Only '*' and '?' are wildcards: API ids contain literal brackets ("...[from_logits]")."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z")


def _any(patterns: tuple[str, ...], value: str) -> bool:
    return any(_glob(p).match(value) for p in patterns)


@dataclass(frozen=True)
class Known:
    """api, case and dtype are tuples of globs (a TOML string or list of strings)."""

    api: tuple[str, ...]
    case: tuple[str, ...]
    status: tuple[str, ...]
    reason: str
    kind: str
    dtype: tuple[str, ...] = ("*",)
    quantity: str = "loss"
    ref: str = ""
    framework: tuple[str, ...] = ("*",)

    def covers(self, api: str, case: str, dtype: str, quantity: str, framework: str = "") -> bool:
        return (_any(self.api, api) and _any(self.case, case) and _any(self.dtype, dtype)
                and _any((self.quantity,), quantity) and (not framework or _any(self.framework, framework)))

    def label(self) -> str:
        return f"{'|'.join(self.api)} / {'|'.join(self.case)} / {'|'.join(self.dtype)} / {','.join(self.status)}"


def load(path: str = DEFAULT_PATH) -> list[Known]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ExpectationsError(f"{path}: {e}") from None
    out = []
    for i, e in enumerate(doc.get("known", [])):
        where = f"{path}: known[{i}]"
        extra = set(e) - _KEYS
        if extra:
            raise ExpectationsError(f"{where}: unknown key(s) {sorted(extra)}")
        for k in ("api", "case", "status", "reason", "kind"):
            if not e.get(k):
                raise ExpectationsError(f"{where}: missing '{k}'")
        tup = {k: ((e[k],) if isinstance(e[k], str) else tuple(e[k]))
               for k in ("api", "case", "status", "dtype", "framework") if k in e}
        status = tup["status"]
        if set(status) - set(FAILING):
            raise ExpectationsError(f"{where}: status must be among {FAILING}, got {status}")
        if e["kind"] not in KINDS:
            raise ExpectationsError(f"{where}: kind must be one of {KINDS}")
        out.append(Known(api=tup["api"], case=tup["case"], status=status, reason=" ".join(e["reason"].split()),
                         kind=e["kind"], dtype=tup.get("dtype", ("*",)), quantity=e.get("quantity", "loss"),
                         ref=e.get("ref", ""), framework=tup.get("framework", ("*",))))
    return out


def match(known: Iterable[Known], row: Mapping, loss_row: Mapping | None = None) -> Known | None:
    """The entry that expects this failing row, or None (unknown failure / not failing).
    loss_row: for a gradient row, the loss row of the same call, whose entry it inherits when
    the loss fails with the same status or raised."""
    if row["status"] not in FAILING:
        return None
    if loss_row is not None and row["quantity"] != "loss" and (
            loss_row["status"] == row["status"] or loss_row["status"] in ("raised", "crashed")):
        inherited = match(known, loss_row)
        if inherited is not None:  # the loss's own mechanism comes first
            return inherited
    for k in known:
        if row["status"] in k.status and k.covers(row["api"], row["case_id"], row["dtype"], row["quantity"],
                                                  row.get("framework", "")):
            return k
    return None


def loss_rows(rows: Iterable[Mapping]) -> dict[tuple, Mapping]:
    """{(framework, api, case_id, dtype): loss row}, to pass each gradient row its loss row."""
    return {(r["framework"], r["api"], r["case_id"], r["dtype"]): r for r in rows if r["quantity"] == "loss"}


def loss_row_of(index: Mapping[tuple, Mapping], row: Mapping) -> Mapping | None:
    return index.get((row["framework"], row["api"], row["case_id"], row["dtype"]))


def stale(known: Iterable[Known], rows: Iterable[Mapping], apis_run: Iterable[tuple[str, str]]) -> list[tuple[Known, str]]:
    """(entry, api pattern) pairs whose pattern names an API that ran (a (framework, api) pair
    the entry covers) yet covers no failing row with the entry's status: each API named in an
    entry must still show the behaviour on each framework the entry names."""
    rows = [r for r in rows if r["status"] in FAILING]
    apis_run = list(apis_run)
    out = []
    for k in known:
        for pat in k.api:
            if not any(_any((pat,), a) and _any(k.framework, fw) for fw, a in apis_run):
                continue
            if not any(r["status"] in k.status and _any((pat,), r["api"])
                       and k.covers(r["api"], r["case_id"], r["dtype"], r["quantity"], r["framework"]) for r in rows):
                out.append((k, pat))
    return out


def annotate(df, known: list[Known]):
    """Add columns `known` (bool), `known_reason` and `known_entry` (index into `known`, -1 if
    none) to a results DataFrame."""
    index = {id(k): i for i, k in enumerate(known)}
    records = df.to_dict("records")
    losses = loss_rows(records)
    entries = [match(known, r, loss_row_of(losses, r)) for r in records]
    df = df.copy()
    df["known_entry"] = [-1 if k is None else index[id(k)] for k in entries]
    df["known_reason"] = ["" if k is None else f"{k.kind}: " + (
        "" if k.covers(r["api"], r["case_id"], r["dtype"], r["quantity"], r["framework"]) else "(the loss's entry) ")
        + k.reason for k, r in zip(entries, records)]
    df["known"] = df["known_entry"] >= 0
    return df
