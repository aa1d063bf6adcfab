import os

import pytest
from hypothesis import settings

from cases.strategies import register_profiles

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_finish(session):
    """Under `--dist loadgroup`, each framework's conformance tests must reach one worker (which
    runs the framework once): pytest-xdist marks a group by appending '@group' to the test id,
    which pytest 9.2 ignores (pytest-xdist#1386; requirements.lock pins pytest 9.1.1). Fail
    the session at once rather than run every framework on every worker."""
    cfg = session.config
    if getattr(cfg, "workerinput", None) is None or not getattr(cfg.option, "loadgroup", False):
        return
    lost = [it for it in session.items if it.get_closest_marker("xdist_group") and "@" not in it.nodeid]
    if lost:
        raise pytest.UsageError(f"pytest-xdist's loadgroup did not mark {len(lost)} grouped tests "
                                f"(e.g. {lost[0].nodeid}): pytest {pytest.__version__} with this pytest-xdist "
                                "would run each framework on every worker (pytest-xdist#1386)")


def pytest_runtest_makereport(item, call):
    """The report of a test that called pytest.xfail(reason), without the traceback pytest
    would format for it: nothing prints an xfail's traceback (its reason is the report's
    `wasxfail`, which pytest's skipping plugin still sets on this report), and formatting one
    re-parses the test's source, about 3 ms each. The conformance suite has some 17,000 of them
    (measured: 1,654 xfails of torch's took 12.3 of a 38.8 s profiled run). With --runxfail,
    pytest's own report."""
    exc = call.excinfo
    if exc is None or call.when != "call" or item.config.option.runxfail \
            or not isinstance(exc.value, pytest.xfail.Exception):
        return None
    from _pytest.reports import TestReport

    return TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed",
                      f"XFailed: {exc.value.msg}", call.when,
                      [(f"Captured {key} {when}", content) for when, key, content in item._report_sections],
                      call.duration, call.start, call.stop, user_properties=item.user_properties)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` as xdist schedules it, without its quadratic bookkeeping
    (tests/xdist_scheduling.py)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist_scheduling import LinearLoadGroupScheduling

    return LinearLoadGroupScheduling(config, log)
