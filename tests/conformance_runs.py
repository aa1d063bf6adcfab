"""The conformance run of each framework: the built-in corpus (seed 0) on every dtype, through
the runner `xentc run` uses, computed once per test process. Shared by the conformance suite
(tests/test_conformance.py) and the tests that check a property of that same run
(tests/test_batching.py): under `--dist loadgroup` a framework's tests share one worker, so the
framework runs once there."""
from __future__ import annotations

import pandas as pd

from cases.generator import build_corpus
from harness import runner
from harness.spec import DTYPES

SEED = 0
#: the whole corpus `xentc run` uses: hand-written cases, the exhaustive float16/bfloat16 domains
#: of the elementwise families and the `xentc explore` finds (cases/found/)
CORPUS = build_corpus(SEED)

_runs: dict[str, pd.DataFrame] = {}


def run_of(framework: str) -> pd.DataFrame:
    """The results table of `framework` on CORPUS and every dtype (computed on first use)."""
    if framework not in _runs:
        _runs[framework], _ = runner.run(CORPUS, [framework], DTYPES)
    return _runs[framework]
