"""A test-only framework, "faulty": elementwise sigmoid cross-entropy with logits in numpy
float64, which injects a fault when a logit takes one of the magic values below. It lets the
tests crash, hang and slow down a worker on purpose (tests/test_faults.py, tests/test_resume.py).

Registered through the out-of-tree adapter variable (adapters.ENV_EXTRA):

    XENTC_ADAPTERS="faulty=faulty_adapter,missing=faulty_adapter_missing,..."  (ENV below)

with this directory on PYTHONPATH (the workers are spawned: they import it by name).
tests/faulty_adapter_missing.py holds the frameworks whose setup fails: `missing` (not
installed), `broken` (aborts) and `stuck` (hangs).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from adapters import Framework
from harness.spec import Api

NAME = "faulty"
HERE = os.path.dirname(os.path.abspath(__file__))
#: the environment that registers the test frameworks (merge it into os.environ / a subprocess env)
SETUP_FAULTS = ("missing", "broken", "stuck")  # tests/faulty_adapter_missing.py
ENV = {"XENTC_ADAPTERS": ",".join([f"{NAME}=faulty_adapter"] + [f"{n}=faulty_adapter_missing" for n in SETUP_FAULTS])}

#: logit values that trigger a fault (all exact in float32 and float64)
ABORT = 1234.5  # os.abort(): the worker dies of SIGABRT
SEGFAULT = 2345.5  # a read of address 0: SIGSEGV
HANG = 3456.5  # sleeps for an hour: the call times out
RAISE = 4567.5  # raises RuntimeError: a `raised` row
SLOW = 5678.5  # sleeps SLOW_S, then computes normally
EXIT = 6789.5  # os._exit(3): the worker exits (no signal) in the middle of a call
KILLED = 7890.5  # SIGKILL to itself, as the kernel's OOM killer would send
POISON = 8901.5  # raises, and every later call in the process raises (a CUDA device-side assert)
SLOW_S = 0.05
MAGIC = (ABORT, SEGFAULT, HANG, RAISE, SLOW, EXIT, KILLED, POISON)
#: set by a POISON call: this process computes nothing more (FRAMEWORK.poisoned)
_poison: str | None = None


def env(base: dict | None = None) -> dict:
    """`base` (default os.environ) with the test frameworks registered and this directory on
    PYTHONPATH, for a subprocess (`xentc run`) or for spawned workers."""
    e = dict(os.environ if base is None else base)
    e.update(ENV)
    paths = [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p]
    if HERE not in paths:
        e["PYTHONPATH"] = os.pathsep.join([HERE, *paths])
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return e


def register(monkeypatch) -> None:
    """Register the test frameworks in this process (adapters.MODULES was read when `adapters`
    was first imported) and for the workers it spawns (the environment)."""
    import adapters

    for k, v in env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(adapters.MODULES, NAME, "faulty_adapter")
    for n in SETUP_FAULTS:
        monkeypatch.setitem(adapters.MODULES, n, "faulty_adapter_missing")


XENTC = [sys.executable, "-m", "harness"]


def xentc(*args, extra_env: dict | None = None, timeout: float = 300, **kw):
    """Run `xentc ARGS` in a subprocess with the test frameworks registered."""
    import subprocess

    e = env()
    e.update(extra_env or {})
    return subprocess.run([*XENTC, *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout, **kw)


def session_processes(sid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command line) of the live processes of session `sid` (zombies left out:
    they run nothing and wait only to be reaped)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm)": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            out.append((int(d), fields[0], cmd))
    return out


def wait_session_empty(sid: int, timeout: float) -> tuple[float, list]:
    """Seconds until session `sid` has no live process (or `timeout`), and what was left."""
    t0 = time.monotonic()
    while True:
        left = session_processes(sid)
        if not left or time.monotonic() - t0 > timeout:
            return time.monotonic() - t0, left
        time.sleep(0.01)


def sigmoid_loss(logits, labels):
    """max(x, 0) - x*z + log1p(exp(-|x|)) in float64, returned in the logits' dtype; the faults
    above first."""
    global _poison
    x = np.asarray(logits)
    z = np.asarray(labels)
    if _poison:
        raise RuntimeError(_poison)
    if np.any(x == POISON):
        _poison = "injected fault: device-side assert triggered (logit 8901.5)"
        raise RuntimeError(_poison)
    if np.any(x == ABORT):
        os.abort()
    if np.any(x == SEGFAULT):
        import ctypes

        ctypes.string_at(0)  # SIGSEGV
    if np.any(x == HANG):
        time.sleep(3600)
    if np.any(x == RAISE):
        raise RuntimeError("injected fault: logit 4567.5")
    if np.any(x == EXIT):
        os._exit(3)
    if np.any(x == KILLED):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if np.any(x == SLOW):
        time.sleep(SLOW_S)
    xf = x.astype(np.float64)
    zf = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.maximum(xf, 0.0) - xf * zf + np.log1p(np.exp(-np.abs(xf)))
    return out.astype(x.dtype)


#: environment variable naming a file: the first worker to start creates it, any later one
#: (a spare worker, harness.runner.run) aborts while it starts (tests/test_faults.py)
ONE_WORKER = "FAULTY_ONE_WORKER"


#: environment variable: seconds each worker's setup sleeps (a framework slow to import, such as
#: keras with torch on a GPU: tests/test_spare_workers.py)
SETUP_S = "FAULTY_SETUP_S"


def _setup():
    time.sleep(float(os.environ.get(SETUP_S, "0")))
    once = os.environ.get(ONE_WORKER)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            os.abort()
    # nothing heavy: the module itself is the framework
    return sys.modules[__name__]


FRAMEWORK = Framework(
    name=NAME,
    package="numpy",  # the version the worker reports
    aliases={},
    setup=_setup,
    to_native=lambda a: np.asarray(a),
    to_numpy=lambda t: np.asarray(t),
    repro_imports="import numpy as np, faulty_adapter",
    repro_array="np.asarray({values}, dtype=np.{dtype})",
    vjp=None,  # no autodiff: gradient rows are `unsupported`
    poisoned=lambda: _poison,
)

API_ID = "faulty_adapter.sigmoid_loss"
APIS = [
    Api(name=API_ID, family="sigmoid", inputs="logits", targets="labels", reductions=("none",),
        dtypes=("float32", "float64"), framework=NAME),
]
