"""Large cases (M7): a case taken a block of rows at a time (harness.chunked) is graded exactly
as if it were taken whole; the runner reports its peak memory, keeps one large call in flight
at a time, and runs no framework on a device it does not see (--device)."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from cases.generator import build_corpus
from harness import chunked, runner
from harness.compare import grade, merge_rows
from harness.dtypes import to_dtype


def step(v: float, k: int) -> np.float32:
    """v moved k float32 steps (up for k > 0)."""
    x, to = np.float32(v), np.float32(np.inf if k > 0 else -np.inf)
    for _ in range(abs(k)):
        x = np.nextafter(x, to)
    return x


def _same(a, b) -> bool:
    """Grades equal in every field but ulps_certain (which merge_rows does not keep)."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    da.pop("ulps_certain"), db.pop("ulps_certain")
    return all(da[k] == db[k] or (isinstance(da[k], float) and np.isnan(da[k]) and np.isnan(db[k])) for k in da)


def _blocks(actual, ref, err, dtype, tol, per_block):
    return merge_rows([(rows.start, grade(actual[rows], ref[rows], dtype, tol, None if err is None else err[rows]))
                       for rows in chunked.blocks(len(ref), per_block)])


@pytest.mark.parametrize("seed", range(40))
def test_merged_blocks_grade_as_the_whole(seed):
    r = np.random.default_rng(seed)
    n, c = int(r.integers(1, 12)), int(r.integers(1, 7))
    ref = r.standard_normal((n, c)) * 10.0 ** r.integers(-3, 4)
    act = to_dtype(ref, "float32").copy()
    for _ in range(int(r.integers(0, 6))):  # some elements off by a few ulps, some by many
        i, j = int(r.integers(n)), int(r.integers(c))
        act[i, j] = step(act[i, j], int(r.choice([-40, -3, 1, 2, 7, 40])))
    if r.random() < 0.3:  # ties: the same distance in two rows
        act[:, 0] = [step(v, 9) for v in to_dtype(ref[:, 0], "float32")]
    if r.random() < 0.3:  # a non-finite mismatch
        act[int(r.integers(n)), int(r.integers(c))] = np.nan
    if r.random() < 0.2:  # non-finite in both
        i = int(r.integers(n))
        ref[i, 0], act[i, 0] = np.inf, np.inf
    err = np.abs(ref) * 1e-6 if r.random() < 0.3 else None  # a reference whose terms cancel
    whole = grade(act, ref, "float32", 4.0, err)
    for per_block in range(1, n + 1):
        assert _same(_blocks(act, ref, err, "float32", 4.0, per_block), whole), (per_block, whole)


def test_which_cases_are_taken_in_blocks(monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 64)
    corpus = build_corpus(0, exhaustive=False, found=False)
    taken = [c for c in corpus if chunked.rows_per_block(c)]
    assert taken, "no corpus case is large enough at 64 elements a block"
    for c in taken:
        assert c.reduction == "none" and c.inputs.ndim == 2 and not c.invalid and "axis" not in c.params
        assert chunked.rows_per_block(c) * c.inputs.shape[1] <= 64 or chunked.rows_per_block(c) == 1
    assert all(chunked.rows_per_block(c) is None for c in corpus if c.reduction != "none")
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 1 << 22)
    assert not any(chunked.rows_per_block(c) for c in corpus)  # the default corpus is never chunked


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    df = df.drop(columns="seconds")
    return df.astype(object).where(df.notna(), "NA").astype(str)


@pytest.mark.conformance
@pytest.mark.xdist_group("torch")
def test_a_run_in_blocks_equals_the_whole_run(monkeypatch):
    """The same torch run, its reference and grading whole and in blocks of a few rows: every
    column of every row the same (the loss, its gradients, the worst inputs, the condition
    numbers and the repro snippets)."""
    corpus = [c for c in build_corpus(0, exhaustive=False, found=False)
              if c.reduction == "none" and c.inputs.ndim == 2 and c.family in ("softmax", "sparse_softmax",
                                                                               "categorical", "softmax_focal")]
    whole, _ = runner.run(corpus, ["torch"], ["float32", "float64"])
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 16)
    assert sum(bool(chunked.rows_per_block(c)) for c in corpus) >= 10
    blocks, _ = runner.run(corpus, ["torch"], ["float32", "float64"])
    a, b = _comparable(whole), _comparable(blocks)
    assert len(a) == len(b) > 100 and (whole.status == "match").sum() > 50
    differ = (a != b).any(axis=1)
    assert not differ.any(), "\n".join(
        f"{r.api} {r.case_id} {r.dtype} {r.quantity}: "
        + ", ".join(f"{c}: {a.at[i, c]!r} vs {b.at[i, c]!r}" for c in a.columns if a.at[i, c] != b.at[i, c])
        for i, r in whole[differ].head(5).iterrows())


@pytest.mark.conformance
@pytest.mark.xdist_group("torch")
def test_large_calls_one_at_a_time_and_peak_memory(monkeypatch):
    """Every call counted large: the run still finishes (one in flight at a time, no deadlock),
    with the rows of an ordinary run, and says each process's peak memory."""
    corpus = [c for c in build_corpus(0, exhaustive=False, found=False) if c.family == "sigmoid"][:12]
    normal, _ = runner.run(corpus, ["torch", "keras[numpy]"], ["float32"])
    monkeypatch.setattr(runner, "LARGE_CALL_ELEMENTS", 0)
    stats: dict = {}
    large, _ = runner.run(corpus, ["torch", "keras[numpy]"], ["float32"], stats=stats)
    assert (_comparable(normal) == _comparable(large)).all().all()
    peaks = stats["peak_rss_mib"]
    assert set(peaks) == {"parent", "torch", "keras[numpy]"}
    assert all(v is not None and v > 50 for v in peaks.values()), peaks


@pytest.mark.conformance
@pytest.mark.xdist_group("torch")
def test_no_row_claims_a_device_the_framework_does_not_see():
    """--device cuda on a machine (or a framework) without a GPU: every row `unsupported`, with
    why; none computed on the CPU under the GPU's name."""
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA GPU")
    corpus = [c for c in build_corpus(0, exhaustive=False, found=False) if c.family == "sigmoid"][:3]
    df, _ = runner.run(corpus, ["torch", "keras[numpy]"], ["float32"], device="cuda")
    assert len(df) > 0 and (df.status == "unsupported").all() and (df.device == "cuda").all()
    why = {"torch": "framework torch unavailable: RuntimeError: not on cuda: torch sees no CUDA device "
                    "(torch.cuda.is_available() is False)",
           "keras[numpy]": "framework keras[numpy] unavailable: RuntimeError: not on cuda: keras[numpy] runs on "
                           "the CPU only in this harness"}
    for fw, detail in why.items():  # each planned call says why (the others: why the API cannot express it)
        assert detail in set(df[df.framework == fw].detail)
