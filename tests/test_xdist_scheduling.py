"""tests/xdist_scheduling.py makes every decision pytest-xdist's LoadGroupScheduling makes: both
are driven through the same runs (workers that take their tests in the order sent and end them
in a random interleaving, one that crashes midway) and must send the same tests to the same
workers at every step, and agree on what is pending and finished."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

xdist_scheduler = pytest.importorskip("xdist.scheduler")
from xdist_scheduling import LinearLoadGroupScheduling  # noqa: E402


class _Node:
    """What a scheduler uses of a worker: it is sent test indices, and asked to shut down."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[list[int]] = []
        self.shutting_down = False

    def send_runtest_some(self, indices) -> None:
        self.sent.append(list(indices))

    def shutdown(self) -> None:
        self.shutting_down = True


class _Quiet:
    """A log that drops xdist's scheduling messages (log.loadscopesched(...), ...)."""

    def __getattr__(self, name):
        return lambda *args: None


def _config(workers: int):
    return SimpleNamespace(getvalue=lambda name: [f"{workers}*popen"] if name == "tx" else None,
                           option=SimpleNamespace(loadscopereorder=True), hook=None)


def _collection(rng: random.Random) -> list[str]:
    ids = []
    for i in range(rng.randint(20, 400)):
        if rng.random() < 0.7:  # a grouped test ("@group"), or one that is a scope of its own
            ids.append(f"tests/test_m{i % 3}.py::test_x[{i}]@g{rng.randint(0, 6)}")
        else:
            ids.append(f"tests/test_m{i % 3}.py::test_y[{i}]")
    return ids


def _drive(cls, collection: list[str], workers: int, seed: int, crash_at: int | None) -> list:
    """The scheduler's observable decisions, step by step."""
    rng = random.Random(seed)
    sched = cls(_config(workers), log=_Quiet())
    nodes = [_Node(f"gw{i}") for i in range(workers)]
    for n in nodes:
        sched.add_node(n)
    for n in nodes:
        sched.add_node_collection(n, collection)
    sched.schedule()
    done = {n: 0 for n in nodes}  # how many of its sent tests each worker has ended
    trace, step = [], 0
    while True:
        live = [n for n in nodes if n in sched.assigned_work]
        busy = [n for n in live if done[n] < sum(map(len, n.sent))]
        trace.append(([list(map(list, n.sent)) for n in nodes], [n.shutting_down for n in nodes],
                      sched.tests_finished, sched.has_pending))
        if not busy:
            return trace
        node = rng.choice(busy)
        if crash_at is not None and step == crash_at and len(live) > 1:
            trace.append(("crashed", sched.remove_node(node)))
        else:
            flat = [i for batch in node.sent for i in batch]
            sched.mark_test_complete(node, flat[done[node]])
            done[node] += 1
        step += 1


@pytest.mark.parametrize("seed", range(12))
def test_the_same_decisions_as_xdist(seed):
    rng = random.Random(seed)
    collection = _collection(rng)
    workers = rng.choice([2, 3])
    crash_at = rng.choice([None, rng.randint(1, 40)])
    theirs = _drive(xdist_scheduler.LoadGroupScheduling, collection, workers, seed, crash_at)
    ours = _drive(LinearLoadGroupScheduling, collection, workers, seed, crash_at)
    assert len(theirs) > 2
    assert ours == theirs
