"""Large cases a block of rows at a time.

A row-wise family's unreduced case (2-D inputs, rows x classes) whose inputs have more than
CHUNK_ELEMENTS elements has its reference and its grading computed on blocks of consecutive
rows of at most CHUNK_ELEMENTS elements each. Each output, and each row of a gradient, depends
on its own row only, so a block's reference is the whole case's, row for row, and
compare.merge_rows makes the blocks' grades the whole one's (tests/test_chunked.py). The
memory the parent needs beyond the case and the framework's output is then that of one block's
reference (a few arrays of CHUNK_ELEMENTS in the reference precision, 32 MiB each in float64),
whatever the number of rows; whole, a 4,096 x 131,072 case's gradient reference alone would be
4 GiB, and its bound and grading temporaries several times that (benchmarks/RESULTS.md has the
peaks measured on cases.generator.large_cases).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from harness.casefile import ROW_PARAMS
from harness.compare import Grade, grade, merge_rows
from harness.spec import ARRAY_PARAMS, FAMILIES, SAMPLED_FAMILIES

#: the most input elements one block holds (32 MiB of float64 per array of the reference)
CHUNK_ELEMENTS = 1 << 22


def rows_per_block(case) -> int | None:
    """The rows of one block where `case` is taken in blocks, else None: a case that is small,
    reduced, not row-wise, sampled, with an axis, or with an array parameter that is not one
    entry per row (a class weight's gradient is a sum over every row)."""
    x = case.inputs
    if (x.size <= CHUNK_ELEMENTS or x.ndim != 2 or case.reduction != "none" or case.invalid
            or case.family in SAMPLED_FAMILIES or not FAMILIES[case.family].rowwise or "axis" in case.params):
        return None
    for k in (*ARRAY_PARAMS, *ROW_PARAMS):
        if k in case.params and (k not in ROW_PARAMS or np.ndim(case.params[k]) == 0
                                 or np.shape(case.params[k])[0] != x.shape[0]):
            return None
    return max(1, CHUNK_ELEMENTS // x.shape[1])


def shape_of(case, quantity: str) -> tuple[int, ...]:
    """The shape of a quantity of a case taken in blocks: one loss per row, and each gradient of
    its argument's shape (grad_weights: the per-row weight's)."""
    if quantity == "loss":
        return case.inputs.shape[:1]
    if quantity == "grad_logits":
        return case.inputs.shape
    if quantity == "grad_targets":
        return case.targets.shape
    return np.shape(case.params["sample_weight"])


def blocks(n_rows: int, per_block: int) -> Iterator[slice]:
    for start in range(0, n_rows, per_block):
        yield slice(start, min(start + per_block, n_rows))


def grade_blocks(actual: np.ndarray, reference: Callable[[slice], tuple[np.ndarray, np.ndarray | None]],
                 shape: tuple[int, ...], dtype: str, tol_ulp: float, per_block: int) -> Grade:
    """compare.grade of `actual` against a reference given a block at a time:
    reference(rows) -> (value, bound on its error or None) of those rows."""
    actual = np.asarray(actual)
    if actual.shape != tuple(shape):
        return grade(actual, np.empty(shape), dtype, tol_ulp)  # the shape mismatch, before any reference
    parts = []
    for rows in blocks(shape[0], per_block):
        ref, err = reference(rows)
        parts.append((rows.start, grade(actual[rows], ref, dtype, tol_ulp, err)))
    return merge_rows(parts)
