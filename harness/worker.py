"""The worker process: owns one framework, calls its APIs on arrays it is sent.

Started with the 'spawn' method so the parent never imports a framework; on the device it is
given (adapters.DEVICES), which the framework must see, or it reports itself unavailable. Protocol over a
multiprocessing Pipe (our own processes; case files are never pickled):
  parent -> worker: (call_id, [(api_id, [(x, t, params), ...], quantities, batched), ...])  or None
                    to stop: a call of one part, or a bundle of several (runner.Bundle)
  worker -> parent: ("ready", version, info) once, then per call
                    (call_id, [result per case], [seconds per case]), a result being
                    ("ok", {quantity: (kind, payload)}) (adapters.call),
                    ("raised", "ExcType: first line") when the loss raised, or
                    (adapters.UNRUN, why) for a case not run;
                    then ("poisoned", why, None) and the end, when a case left the process
                    unable to compute (adapters.poisoned: a CUDA context after a device-side
                    assert); the runner sends the calls it did not run to a new worker.
A batched call (one case or several of one adapters.batch_key) runs through
adapters.call_batch (its time shared by its cases); any other (one case, or a group of cases of
one API: runner.batches) through adapters.call_each, each case on its own and timed on its own;
a bundle of such calls through adapters.call_bundle, as one compiled program (its time shared
by its cases).
"""
from __future__ import annotations

import os
import sys
import time


def _die_with_parent() -> None:
    """Linux: ask the kernel to kill this worker when the runner dies (a SIGKILLed `xentc run`
    leaves no worker computing for nobody). Elsewhere the worker ends at its next recv()."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        # the runner may have died before the prctl: then no signal will ever come
        import multiprocessing

        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:
            os._exit(1)


def _reader(conn):
    """A queue the calls arrive in, read off the pipe by a thread of their own: the runner's
    send of a call never waits for this worker to finish the call before it, so the runner can
    send the next call of any size while this one computes and neither blocks the other (each
    side's writes are read while it works). None: stop, or the runner is gone."""
    import queue
    import threading

    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
            inbox.put(msg)
            if msg is None:
                return

    threading.Thread(target=read, name="xentc-reader", daemon=True).start()
    return inbox


def main(conn, framework: str, log_path: str | None = None, device: str = "cpu") -> None:
    _die_with_parent()
    import adapters

    adapter = adapters.load(framework)
    fw = adapter.framework
    os.environ.update(fw.env)
    os.environ.update(adapters.DEVICE_ENV[device])
    os.environ.update(fw.device_env.get(device, {}))
    os.environ["XENTC_DEVICE"] = device
    if log_path:  # framework chatter (TF/XLA logs) goes to a file, not the user's terminal
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
    try:
        fw.setup()
        if device != "cpu":  # the framework must see the device, or none of its rows claim it
            why = (fw.device_check(device) if fw.device_check is not None
                   else f"{framework} runs on the CPU only in this harness")
            if why:
                raise RuntimeError(f"not on {device}: {why}")
        from importlib.metadata import version

        ver = version(fw.package)
    except Exception as e:  # framework missing or broken: the parent records 'unsupported'
        conn.send(("unavailable", adapters.error_line(e), None))
        return
    apis = {a.id: a for a in adapter.apis}
    conn.send(("ready", ver, {"python": sys.version.split()[0]}))
    inbox = _reader(conn)
    while True:
        msg = inbox.get()
        if msg is None:  # the end, or the runner is gone
            break
        call_id, parts = msg
        api_id, items, quantities, batched = parts[0]
        t0 = time.perf_counter()
        if len(parts) > 1:
            res = adapters.call_bundle(fw, [(apis[a], its, q, b) for a, its, q, b in parts], log_errors=bool(log_path))
            seconds = [(time.perf_counter() - t0) / len(res)] * len(res)
        elif batched:
            res = adapters.call_batch(fw, apis[api_id], items, quantities)
            seconds = [(time.perf_counter() - t0) / len(items)] * len(items)
        else:
            seconds = []
            res = adapters.call_each(fw, apis[api_id], items, quantities, log_errors=bool(log_path), times=seconds)
        conn.send((call_id, res, seconds))
        why = adapters.poisoned(fw, res)
        if why:
            conn.send(("poisoned", why, None))
            break
    # every result is sent: the interpreter's teardown of a framework (measured: TensorFlow 1.0 s,
    # torch 0.5 s) would only delay the runner's join, so the process ends here
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

