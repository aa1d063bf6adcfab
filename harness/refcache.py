"""A persistent cache of reference values: a second run on a machine computes no reference it
computed before (the reference of a case does not change when a framework does).

An entry is a dict of arrays (a loss, gradients and their error bounds, condition numbers),
keyed by the SHA-256 of
  VERSION: the source of the modules that compute references (oracle, condition, dtypes, spec),
           numpy's version and the machine's long double format, so that any change to how a
           reference is computed starts a new cache; and
  the inputs as the reference sees them: what is computed, the family, the conventions, the
           precision, and every array's dtype, shape and bytes (cases rounded to the dtype).
Values are stored bit for bit, so a run with the cache writes the same results table as a run
without (tests/test_refcache.py). SQLite, so that processes of one machine share it (shards,
pytest-xdist workers): $XENTC_CACHE_DIR/reference.sqlite, default ~/.cache/xentc (as JAX's
compilation cache, adapters.jax); XENTC_CACHE_DIR=off disables it. A cache that cannot be
opened, read or written is left alone for the rest of the process, after one warning line: a
cache never costs a run. Entries over MAX_ENTRY_BYTES are not kept.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import platform
import sqlite3
import sys

import numpy as np

#: entries larger than this are computed again rather than kept
MAX_ENTRY_BYTES = 8 << 20
FILE = "reference.sqlite"


def cache_root() -> str | None:
    """The directory of the harness's persistent caches: XENTC_CACHE_DIR, default
    $XDG_CACHE_HOME/xentc (~/.cache/xentc); None when XENTC_CACHE_DIR=off."""
    root = os.environ.get("XENTC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "xentc")
    return None if root == "off" else root


def _version() -> bytes:
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("oracle.py", "condition.py", "dtypes.py", "spec.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    h.update(f"numpy {np.__version__}; {platform.machine()}; {np.finfo(np.longdouble)!r}".encode())
    return h.digest()


VERSION = _version()


def _contiguous(a: np.ndarray) -> np.ndarray:
    """a in C order, with its shape (np.ascontiguousarray makes a 0-d array 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


class Hashed(bytes):
    """Parts already hashed (content_hash's digest of them): fed as that digest, so that parts
    read many times are hashed once. A key made with it is not the key of the parts themselves."""


def _feed(h, v) -> None:
    if isinstance(v, Hashed):
        h.update(b"h")
        h.update(v)
    elif isinstance(v, np.ndarray):
        v = _contiguous(v)
        h.update(f"a{v.dtype.str}{v.shape}".encode())
        h.update(v.reshape(-1).view(np.uint8))
    elif isinstance(v, dict):
        h.update(b"d%d" % len(v))
        for k in sorted(v):
            _feed(h, k)
            _feed(h, v[k])
    elif isinstance(v, (tuple, list)):
        h.update(b"t%d" % len(v))
        for u in v:
            _feed(h, u)
    else:
        h.update(f"v{type(v).__name__}:{v!r};".encode())


def content_hash(*parts, version: bytes = b"") -> bytes:
    """SHA-256 of these parts (arrays by dtype, shape and bytes; dicts by sorted key)."""
    h = hashlib.sha256(version)
    for p in parts:
        _feed(h, p)
    return h.digest()


def key(*parts) -> bytes:
    """The entry of these parts: their content_hash under this cache's VERSION."""
    return content_hash(*parts, version=VERSION)


def _encode(value: dict[str, np.ndarray]) -> bytes | None:
    arrays = {k: _contiguous(np.asarray(v)) for k, v in value.items()}
    if sum(a.nbytes for a in arrays.values()) > MAX_ENTRY_BYTES or any(a.dtype.hasobject for a in arrays.values()):
        return None
    head = json.dumps([[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]).encode()
    return b"".join([len(head).to_bytes(4, "little"), head, *(a.tobytes() for a in arrays.values())])


def _decode(blob: bytes) -> dict[str, np.ndarray]:
    n = int.from_bytes(blob[:4], "little")
    out, pos = {}, 4 + n
    for k, dt, shape in json.loads(blob[4:4 + n]):
        dt = np.dtype(dt)
        size = dt.itemsize * int(np.prod(shape, dtype=np.int64))
        out[k] = np.frombuffer(blob, dt, count=size // dt.itemsize, offset=pos).reshape(tuple(shape)).copy()
        pos += size
    return out


class _Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # each put its own transaction (WAL, no fsync per commit: ~50 us), so that no process
        # holds the write lock between puts while another waits for it
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS ref (k BLOB PRIMARY KEY, v BLOB NOT NULL)")

    def get(self, k: bytes):
        row = self.db.execute("SELECT v FROM ref WHERE k = ?", (k,)).fetchone()
        return None if row is None else _decode(row[0])

    def put(self, k: bytes, blob: bytes) -> None:
        self.db.execute("INSERT OR IGNORE INTO ref (k, v) VALUES (?, ?)", (k, blob))

    def close(self) -> None:
        self.db.close()


_store: _Store | None = None
_broken: str | None = None  # why this process gave the cache up


def _give_up(e: Exception) -> None:
    global _store, _broken
    _broken = f"{type(e).__name__}: {e}"
    print(f"xentc: warning: reference cache {os.path.join(cache_root() or '', FILE)} not used: "
          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    try:
        if _store is not None:
            _store.close()
    except sqlite3.Error:
        pass
    _store = None


def _open() -> _Store | None:
    global _store
    if _broken is not None:
        return None
    root = cache_root()
    if root is None:
        return None
    path = os.path.join(root, FILE)
    if _store is not None and _store.pid == os.getpid() and _store.path == path:
        return _store
    try:
        _store = _Store(path)
    except (sqlite3.Error, OSError) as e:
        _give_up(e)
    return _store


def get(k: bytes) -> dict[str, np.ndarray] | None:
    """The entry k, or None (not there, or no cache)."""
    s = _open()
    if s is None:
        return None
    try:
        return s.get(k)
    except (sqlite3.Error, ValueError, TypeError) as e:  # locked past the timeout, or a damaged entry
        _give_up(e)
        return None


def put(k: bytes, value: dict[str, np.ndarray]) -> None:
    """Keep value under k (a no-op without a cache, or when the value is too large)."""
    s = _open()
    if s is None:
        return
    blob = _encode(value)
    if blob is None:
        return
    try:
        s.put(k, blob)
    except (sqlite3.Error, OSError) as e:
        _give_up(e)


def flush() -> None:
    """Close this process's connection (every put is committed as it is made); the next get
    or put opens it again. The runner calls it at the end of a run."""
    global _store
    if _store is not None and _store.pid == os.getpid():
        try:
            _store.close()
        except sqlite3.Error:
            pass
        _store = None


atexit.register(flush)


def _entry(parts: tuple) -> bytes | None:
    """key(*parts) where there is a cache and the parts can be keyed (not an object array), else None."""
    if _open() is None:
        return None
    try:
        return key(*parts)
    except (TypeError, ValueError):
        return None


def peek(parts: tuple) -> dict[str, np.ndarray] | None:
    """The entry of `parts` if the cache holds it, else None (nothing computed)."""
    k = _entry(parts)
    return None if k is None else get(k)


def cached(parts: tuple, compute) -> dict[str, np.ndarray]:
    """The entry of `parts` (key), computed by compute() and kept when it is not there; parts
    that cannot be keyed (an object array) are computed, not kept."""
    k = _entry(parts)
    if k is None:
        return compute()
    v = get(k)
    if v is None:
        v = compute()
        put(k, v)
    return v
