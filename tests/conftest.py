import os

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
        import pytest

        raise pytest.UsageError(f"pytest-xdist's loadgroup did not mark {len(lost)} grouped tests "
                                f"(e.g. {lost[0].nodeid}): pytest {pytest.__version__} with this pytest-xdist "
                                "would run each framework on every worker (pytest-xdist#1386)")
