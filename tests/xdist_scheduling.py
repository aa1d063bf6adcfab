"""pytest-xdist's `--dist loadgroup` scheduling with its bookkeeping in linear time.

xdist 3.8's LoadScopeScheduling (which LoadGroupScheduling extends) is quadratic in the number
of tests in two places, both open upstream:
  - `_pending_of` counts a worker's pending tests by walking every test ever assigned to it, and
    runs after each test that ends (pytest-dev/pytest-xdist#279);
  - `_assign_work_unit` finds each test of a unit by `list.index` over the whole collection
    (pytest-dev/pytest-xdist#1212).
The conformance suite has some 105,000 tests in a few large groups: measured on 100,000 trivial
tests in 8 groups on 2 workers, the controller process used 233 s of CPU, beside the workers on
a 2-CPU machine. This class keeps a count of each worker's pending tests and an index of each
worker's collection; every decision (which unit goes to which worker, and when) is xdist's own,
unchanged (tests/test_xdist_scheduling.py drives both side by side and compares them).
"""
from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling


class _Workload(dict):
    """A worker's assigned work units ({scope: {nodeid: completed}}) and how many are pending."""

    pending = 0


class LinearLoadGroupScheduling(LoadGroupScheduling):
    def __init__(self, config, log=None) -> None:
        super().__init__(config, log)
        self._index: dict = {}  # per worker: {nodeid: its index in the worker's collection}

    def add_node(self, node) -> None:
        super().add_node(node)
        self.assigned_work[node] = _Workload()

    def _pending_of(self, workload) -> int:
        if isinstance(workload, _Workload):
            return workload.pending
        return super()._pending_of(workload)

    def mark_test_complete(self, node, item_index: int, duration: float = 0) -> None:
        nodeid = self.registered_collections[node][item_index]
        unit = self.assigned_work[node][self._split_scope(nodeid)]
        if not unit[nodeid]:
            self.assigned_work[node].pending -= 1
        unit[nodeid] = True
        self._reschedule(node)

    def _assign_work_unit(self, node) -> None:
        assert self.workqueue
        scope, work_unit = self.workqueue.popitem(last=False)
        assigned = self.assigned_work[node]
        if scope in assigned:  # replaced, as in xdist: its pending tests no longer count
            assigned.pending -= sum(not done for done in assigned[scope].values())
        assigned[scope] = work_unit
        if node not in self._index:  # list.index's answer: a nodeid's first position
            first: dict[str, int] = {}
            for i, nodeid in enumerate(self.registered_collections[node]):
                first.setdefault(nodeid, i)
            self._index[node] = first
        index = self._index[node]
        todo = [index[nodeid] for nodeid, completed in work_unit.items() if not completed]
        assigned.pending += len(todo)
        node.send_runtest_some(todo)
