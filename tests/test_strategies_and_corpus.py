"""The built-in corpus (cases/generator.py) and the Hypothesis strategies (cases/strategies.py):
generator invariants, case-file round trips, the oracle against mpmath on generated cases, and
invariances of the oracle."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cases.generator import CATEGORIES, EXHAUSTIVE, EXHAUSTIVE_TARGETS, FOUND, LARGE_C, build_corpus, invalid_cases
from cases.generator import INVALID as INVALID_CATEGORY
from harness.badinput import KINDS, violations
from cases.strategies import cases, register_profiles
from harness import mpref, oracle
from harness.casefile import Case, CaseFileError, parse_cases
from harness.dtypes import finfo, to_dtype
from harness.spec import ARRAY_PARAMS, DTYPES, FAMILIES

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: the graded corpus (valid cases); the invalid ones have their own tests below
CORPUS = build_corpus(0, invalid=False)
BY_ID = {c.id: c for c in CORPUS}
INVALID = invalid_cases(0)


def bits(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    return repr((a.shape, a.dtype.str)).encode() + a.tobytes()


def fingerprint(c: Case) -> tuple:
    params = tuple((k, bits(v) if isinstance(v, np.ndarray) else v) for k, v in sorted(c.params.items()))
    return c.id, c.family, bits(c.inputs), bits(c.targets), params, c.dtypes, c.invalid


# --- generator invariants ------------------------------------------------------------------------------
def test_corpus_is_deterministic():
    assert [fingerprint(c) for c in build_corpus(0, invalid=False)] == [fingerprint(c) for c in CORPUS]
    assert [fingerprint(c) for c in build_corpus(0)] == [fingerprint(c) for c in CORPUS + INVALID]


# --- the invalid cases (harness.badinput) ---------------------------------------------------------
def test_every_invalid_kind_is_generated_for_each_of_its_families():
    have = {(c.invalid, c.family) for c in INVALID}
    want = {(k.name, f) for k in KINDS.values() for f in k.families}
    assert have == want
    assert all(c.category == INVALID_CATEGORY and c.dtypes == ("float32",) for c in INVALID)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_case_holds_its_kind_and_round_trips(case):
    found = violations(case.family, *case.in_dtype("float32"))
    assert case.invalid in found, found
    text = json.dumps({"cases": [case.to_json()]}, allow_nan=False)
    (back,) = parse_cases(json.loads(text))
    assert fingerprint(back) == fingerprint(case)
    assert case.in_dtype("float32")[0].dtype == back.in_dtype("float32")[0].dtype


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_the_reference_finds_every_valid_case_valid(case):
    assert violations(case.family, *case.in_dtype("float64")) == []


def test_undeclared_or_misdeclared_invalid_input_is_a_case_file_error():
    case = next(c for c in INVALID if c.invalid == "target_above_1")
    doc = case.to_json()
    undeclared = {k: v for k, v in doc.items() if k != "invalid"}
    with pytest.raises(CaseFileError, match='declare "invalid": "target_above_1"'):
        parse_cases({"cases": [undeclared]})
    with pytest.raises(CaseFileError, match='declared "invalid": "nan_target" but its data shows target_above_1'):
        parse_cases({"cases": [{**doc, "invalid": "nan_target"}]})
    valid = BY_ID["baseline/sigmoid/random-none"].to_json()
    with pytest.raises(CaseFileError, match="is valid"):
        parse_cases({"cases": [{**valid, "invalid": "target_above_1"}]})
    with pytest.raises(CaseFileError, match="field 'invalid' must be one of"):
        parse_cases({"cases": [{**doc, "invalid": "garbage"}]})


def test_seed_changes_random_cases_but_not_ids():
    other = build_corpus(1, invalid=False)
    assert [c.id for c in other] == [c.id for c in CORPUS]
    changed = {c.id for c, d in zip(CORPUS, other) if fingerprint(c) != fingerprint(d)}
    assert "baseline/sigmoid/random-none" in changed and "shapes/softmax/classes-32768-none" in changed
    # cases without random draws do not depend on the seed
    assert "extreme/sigmoid/specials" not in changed and "extreme/softmax/nonfinite-0" not in changed
    assert "weights/softmax/class_weight-span-none" in changed  # random logits, fixed weights


def test_ids_are_category_family_name():
    ids = [c.id for c in CORPUS]
    assert len(ids) == len(set(ids))
    for c in CORPUS:
        parts = c.id.split("/")
        assert len(parts) == 3 and all(parts), c.id
        assert parts[0] in CATEGORIES + (EXHAUSTIVE, FOUND) and parts[0] == c.category, c.id
        assert parts[1] == c.family and c.family in FAMILIES, c.id


def test_every_family_in_every_category():
    have = {(c.category, c.family) for c in CORPUS if c.category in CATEGORIES}
    missing = {(k, f) for k in CATEGORIES for f in FAMILIES} - have
    # every family now has a soft-labels case: label smoothing makes index targets soft
    assert missing == set()


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_case_is_valid_and_round_trips(case):
    fam = FAMILIES[case.family]
    x, t = case.inputs, case.targets
    assert x.dtype == np.float64
    ax = case.params.get("axis", -1) % x.ndim
    if fam.rowwise:
        assert x.ndim >= 2 and x.shape[ax] >= 1
    if fam.targets == "classes":
        C = case.params["output_weights"].shape[0]
        assert t.dtype == np.int64 and t.shape[0] == x.shape[0] and np.all((t >= 0) & (t < C))
    elif fam.targets == "index":
        assert t.dtype == np.int64 and t.shape == x.shape[:ax] + x.shape[ax + 1:]
        ii = case.params.get("ignore_index")
        assert np.all(((t >= 0) & (t < x.shape[ax])) | (t == ii))
    else:
        assert t.dtype == np.float64 and t.shape == x.shape
        assert np.all(np.isfinite(t))
    if fam.inputs == "probabilities":
        assert np.all((x >= 0) & (x <= 1)), "probabilities outside [0, 1]"
    # the case-file rules accept it, bit for bit (params and shapes included)
    text = json.dumps({"cases": [case.to_json()]}, allow_nan=False)
    (back,) = parse_cases(json.loads(text))
    assert fingerprint(back) == fingerprint(case)


def test_dtype_restricted_cases():
    for c in CORPUS:
        if c.dtypes is None:
            continue
        assert c.dtypes and set(c.dtypes) <= set(DTYPES), c.id
        if len(c.dtypes) == 1:
            assert c.dtypes[0] in c.id.split("/")[-1], f"{c.id} runs only in {c.dtypes[0]} but does not say so"
        else:
            # the weight spans leave out float16 only, whose range (65504) the weighted losses exceed
            assert c.dtypes == ("bfloat16", "float32", "float64") and c.category == "weights", c.id


def _runs_in(c: Case, d: str) -> bool:
    return c.dtypes is None or d in c.dtypes


def _values(c: Case) -> np.ndarray:
    return c.inputs.ravel()


def test_corpus_has_the_required_values():
    allx = np.concatenate([_values(c) for c in CORPUS])
    assert np.any(allx == math.inf) and np.any(allx == -math.inf) and np.any(np.isnan(allx))
    assert np.any((allx == 0) & np.signbit(allx)), "-0.0"
    for v in (1e4, -1e4, 1e8, 1e30, -1e30):
        assert np.any(allx == v), v
    for d in DTYPES:
        fi = finfo(d)
        tiny, sub, mx = float(fi.tiny), float(fi.smallest_subnormal), float(fi.max)
        mine = [c for c in CORPUS if _runs_in(c, d)]
        xs = np.concatenate([np.abs(c.in_dtype(d)[0].astype(np.float64).ravel()) for c in mine])
        assert np.any((xs > 0) & (xs < tiny)), f"no subnormal input in {d}"
        assert np.any(xs == sub), f"no smallest subnormal in {d}"
        assert np.any(xs == mx), f"no finfo({d}).max"
        # logit cases specifically reach +-max of the dtype
        assert any(np.any(c.inputs == -mx) for c in mine if FAMILIES[c.family].inputs == "logits"), d


def test_corpus_has_the_required_shapes():
    for f, fam in FAMILIES.items():
        mine = [c for c in CORPUS if c.family == f]
        assert any(c.inputs.shape[0] == 0 for c in mine), f"{f}: empty batch"
        assert any(c.inputs.shape[0] == 1 for c in mine), f"{f}: batch of one"
        width = (lambda c: c.params["output_weights"].shape[0]) if fam.targets == "classes" else (lambda c: c.inputs.shape[-1])
        assert any(width(c) >= LARGE_C for c in mine), f"{f}: >= {LARGE_C} classes (or columns)"
        if fam.rowwise and fam.targets != "classes":
            assert any(c.inputs.shape[-1] == 1 for c in mine), f"{f}: one class"
            assert any(c.inputs.shape[-1] == 2 for c in mine), f"{f}: two classes"
    assert LARGE_C >= 32768


def test_corpus_has_the_required_weights():
    pw = np.concatenate([c.params["pos_weight"].ravel() for c in CORPUS if "pos_weight" in c.params])
    for v in (0.0, 1e-6, 1e6):
        assert np.any(pw == v), f"pos_weight {v}"
    assert pw.min() <= 1e-5 and pw.max() >= 1e5
    cw = [c.params["class_weight"] for c in CORPUS if "class_weight" in c.params]
    assert any(np.any(w == 0) for w in cw) and any(np.all(w == 0) for w in cw), "zero class weights"
    assert any(w.max() / max(w[w > 0].min(), 1e-300) >= 1e12 for w in cw if np.any(w > 0)), "1e-6..1e6 span"
    ew = [c.params["weight"] for c in CORPUS if "weight" in c.params]
    assert any(np.all(w == 0) for w in ew), "zero elementwise weights"
    for f, fam in FAMILIES.items():
        if "class_weight" in fam.params:
            assert any("class_weight" in c.params for c in CORPUS if c.family == f), f
    for red in ("none", "sum", "mean"):
        assert {c.family for c in CORPUS if c.reduction == red} == set(FAMILIES), red


# --- strategies -------------------------------------------------------------------------------------------
@given(cases())
def test_generated_case_round_trips_through_json(case):
    assert case.category == "hypothesis" and case.id.startswith(f"hypothesis/{case.family}/")
    text = json.dumps({"cases": [case.to_json()]}, allow_nan=False)  # JSON-safe: no bare NaN/Infinity
    (back,) = parse_cases(json.loads(text))
    assert fingerprint(back) == fingerprint(case)  # bitwise: nan payload-free, -0.0 kept, shapes kept


@given(st.lists(cases(), min_size=2, max_size=4, unique_by=lambda c: c.id))
def test_generated_case_lists_parse_together(cs):
    back = parse_cases(json.loads(json.dumps({"cases": [c.to_json() for c in cs]})))
    assert [fingerprint(b) for b in back] == [fingerprint(c) for c in cs]


def _without_pos_weight(case: Case) -> Case:
    """The mirror symmetry loss(x, z) == loss(-x, 1-z) holds only without pos_weight."""
    if "pos_weight" not in case.params:
        return case
    return dataclasses.replace(case, params={k: v for k, v in case.params.items() if k != "pos_weight"})


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(cases(finite=True), st.sampled_from(["float32", "float64"]))
def test_oracle_matches_mpmath_on_generated_cases(case, dtype):
    problems = mpref.oracle_problems(mpref.compare_case(case, dtype), dtype)
    assert not problems, " | ".join(problems[:5])


# --- invariances of the oracle ---------------------------------------------------------------------------
def moderate_rows(max_classes: int = 8):
    return st.integers(1, 4).flatmap(lambda b: st.integers(1, max_classes).flatmap(
        lambda c: st.lists(st.lists(st.floats(-20, 20), min_size=c, max_size=c), min_size=b, max_size=b)))


@given(moderate_rows(), st.floats(-50, 50), st.data())
def test_softmax_is_shift_invariant(rows, shift, data):
    x = np.asarray(rows, np.float64)
    B, C = x.shape
    y = np.asarray(data.draw(st.lists(st.lists(st.floats(0, 1), min_size=C, max_size=C), min_size=B, max_size=B)))
    k = np.asarray(data.draw(st.lists(st.integers(0, C - 1), min_size=B, max_size=B)), np.int64)
    for fam, t in (("softmax", y), ("sparse_softmax", k)):
        a = oracle.loss(fam, x, t)
        b = oracle.loss(fam, x + shift, t)
        # x + shift is rounded: each logit moves by <= ulp(70)/2 ~ 7e-15, so the loss by ~2e-14 * sum(y)
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12), (fam, a, b)


@given(cases(family="sigmoid"))
def test_sigmoid_mirror_symmetry(case):
    """loss(x, z) == loss(-x, 1-z) when pos_weight is absent (weight and reductions allowed)."""
    case = _without_pos_weight(case)
    z = np.round(case.targets * 2.0**20) / 2.0**20  # so that 1 - z is exact
    assert np.array_equal(1 - (1 - z), z)
    for prec in (np.float64, np.longdouble):
        for conv in ({}, {"axis_mean": True}):
            a = oracle.loss("sigmoid", case.inputs, z, case.params, conv, prec)
            b = oracle.loss("sigmoid", -case.inputs, 1 - z, case.params, conv, prec)
            assert np.array_equal(a, b, equal_nan=True), (case.to_json(), a, b)


@given(cases(family="sigmoid", finite=True))
def test_sigmoid_mirror_symmetry_mpmath(case):
    """The same symmetry holds exactly in the mpmath reference."""
    case = _without_pos_weight(case)
    z = np.round(case.targets * 2.0**20) / 2.0**20
    a = mpref.unreduced("sigmoid", case.inputs, z, case.params)
    b = mpref.unreduced("sigmoid", -case.inputs, 1 - z, case.params)
    assert all(u == v for u, v in zip(a.ravel(), b.ravel()))


@given(cases(finite=True))
def test_in_dtype_is_what_the_dtype_holds(case):
    """Case.in_dtype rounds every float array to the dtype and leaves index targets alone."""
    for d in case.dtypes or DTYPES:
        x, t, p = case.in_dtype(d)
        assert x.dtype == to_dtype(np.zeros(1), d).dtype
        if FAMILIES[case.family].targets == "index":
            assert t.dtype == np.int64 and np.array_equal(t, case.targets)
        for k in ARRAY_PARAMS:
            if k in p:
                assert p[k].dtype == x.dtype


def test_exhaustive_cases_hold_every_finite_value_once_per_target():
    from harness.dtypes import to_dtype

    ex = [c for c in CORPUS if c.category == EXHAUSTIVE]
    assert {c.family for c in ex} == {"sigmoid", "binary", "sigmoid_focal", "binary_focal"}
    for c in ex:
        (d,) = c.dtypes
        x = c.inputs.ravel()
        assert np.array_equal(to_dtype(x, d).astype(np.float64), x), c.id  # exact in the dtype
        per = x.size // len(EXHAUSTIVE_TARGETS)
        assert sorted(set(c.targets.ravel())) == sorted(EXHAUSTIVE_TARGETS)
        assert np.isfinite(x).all()
        if FAMILIES[c.family].inputs == "probabilities":
            assert x.min() == 0 and x.max() == 1
        else:  # 2**16 patterns less 2 infinities and 2 * (2**(mantissa bits) - 1) NaNs, -0 kept
            nan_count = {"float16": 2 * (2 ** 10 - 1), "bfloat16": 2 * (2 ** 7 - 1)}[d]
            assert per == 2 ** 16 - 2 - nan_count, c.id
        assert c.inputs.shape[1:] == (1,)  # a last-axis mean keeps each element its own output


def test_found_cases_carry_their_provenance():
    for c in CORPUS:
        if c.category == FOUND:
            assert {"api", "dtype", "search", "seed", "date"} <= set(c.provenance), c.id
            assert c.dtypes == (c.provenance["dtype"],)


def test_empty_array_params_keep_their_shape_through_a_case_file():
    """An empty mask of shape (0, 1) must come back (0, 1), not (0,): found by Hypothesis in CI."""
    c = Case("empty-where", "sparse_softmax", np.zeros((0, 1)), np.zeros((0,), np.int64),
             {"where": np.zeros((0, 1), bool)})
    back = parse_cases(json.loads(json.dumps({"cases": [c.to_json()]})))[0]
    assert fingerprint(back) == fingerprint(c)
