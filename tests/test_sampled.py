"""harness.sampled: the sampled softmax / NCE reference (numpy) against its mpmath twin, identities
that tie it to the full softmax and to sigmoid cross-entropy, and the special-value conventions.

* Every dtype: inputs rounded to it, the numpy reference (float64; long double for float64)
  graded against mpmath (128 bits) rounded to the dtype: error <= BOUND_ULP ulps of the dtype,
  identical non-finite classes. Random cases and extreme ones: logits up to ~1e4 with gaps of a
  few units (losses far below the logits: cancellation), expected counts 1e-30 and 1,
  accidental hits kept and removed, T = 1 and T = 3.
* Identities, against values computed here in mpmath from scratch.
* Conventions: nan rows, +inf logits from q = 0, negative counts, ids out of range.
"""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from mpmath import mp

from harness import sampled as sm
from harness.dtypes import to_dtype
from harness.mpref import oracle_error

DTYPES = ("float16", "bfloat16", "float32", "float64")
BOUND_ULP = {"float16": 1e-6, "bfloat16": 1e-6, "float32": 1e-6, "float64": 3e-3}
FLOAT_PARAMS = ("output_weights", "output_biases", "true_expected_count", "sampled_expected_count")


def _case(seed, N=8, T=1, S=6, C=12, d=8, scale=1.0, qt=None, qs=None, hits=0, remove=False, near=0.0):
    """x ~ N(0,1); W ~ scale*N(0,1) (near > 0: all rows scale*v + near*N(0,1), so the logits are
    ~scale with gaps ~near); counts uniform in [0.05, 1] unless given; `hits` rows get a label
    equal to a sampled id."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d))
    if near:
        W = scale * rng.normal(size=(1, d)) + near * rng.normal(size=(C, d))
    else:
        W = scale * rng.normal(size=(C, d))
    s = rng.choice(C, S, replace=False)
    labels = np.stack([rng.choice(C, T, replace=False) for _ in range(N)])
    for i in range(hits):
        labels[i, i % T] = s[i % S] if s[i % S] not in labels[i] else labels[i, i % T]
    p = {"output_weights": W, "output_biases": rng.normal(size=C), "sampled": s,
         "true_expected_count": np.full((N, T), qt) if qt is not None else rng.uniform(0.05, 1, (N, T)),
         "sampled_expected_count": np.full(S, qs) if qs is not None else rng.uniform(0.05, 1, S),
         "remove_accidental_hits": remove}
    return x, labels, p


def _in_dtype(x, labels, p, dtype):
    return to_dtype(x, dtype), labels, {k: to_dtype(v, dtype) if k in FLOAT_PARAMS else v for k, v in p.items()}


CASES = {
    **{f"random-{seed}-T{T}-{'rm' if rm else 'keep'}": dict(seed=seed, T=T, hits=3, remove=rm)
       for seed in range(3) for T in (1, 3) for rm in (False, True)},
    "large-1e4": dict(seed=10, scale=1e3, d=16),
    "large-1e4-T3-rm": dict(seed=11, scale=1e3, d=16, T=3, hits=4, remove=True),
    "near-tie-1e4": dict(seed=12, scale=3e3, near=3.0, d=8),  # logits ~1e4, gaps ~10: small losses
    "near-tie-1e4-T3": dict(seed=13, scale=3e3, near=3.0, d=8, T=3, hits=2, remove=True),
    "qtrue-1e-30": dict(seed=14, qt=1e-30, qs=1.0),  # true logits +69: losses ~e^-69
    "qsampled-1e-30": dict(seed=15, qt=1.0, qs=1e-30),
    "qtrue-1e-30-T3-rm": dict(seed=16, qt=1e-30, qs=1.0, T=3, hits=4, remove=True),
    "qtrue-1e-30-qsampled-1e30": dict(seed=18, qt=1e-30, qs=1e30, scale=3.0),  # NCE losses ~e^-60
    "near-tie-1e16-hits-kept": dict(seed=19, scale=1e16, near=1.0, d=4, hits=3),  # a class twice, logits ~1e16
    "S16-d16-N16": dict(seed=17, N=16, S=16, C=24, d=16, hits=5, remove=True),
}


@pytest.mark.parametrize("family", sm.FAMILIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_reference_matches_mpmath(family, dtype):
    precision = np.longdouble if dtype == "float64" else np.float64
    worst = 0.0
    for name, kw in CASES.items():
        x, labels, p = _in_dtype(*_case(**kw), dtype)
        approx = sm.loss_rows(family, x, labels, p, precision)
        assert approx.dtype == precision and approx.shape == (x.shape[0],)
        err = oracle_error(approx, sm.mp_loss_rows(family, x, labels, p), dtype)
        assert err["class_ok"].all(), f"{name}: non-finite class differs: {approx} vs {err['correct']}"
        u = np.where(np.isfinite(err["ulps"]), err["ulps"], 0)
        assert u.max() <= BOUND_ULP[dtype], f"{name}: error {u.max():.3g} ulp of {dtype}"
        worst = max(worst, float(u.max()))
    print(f"{family} {dtype}: worst {worst:.3g} ulp")


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_special_values(dtype):
    """inf, nan, 0 and huge values sprinkled into x, W, b and the counts: the same non-finite
    classes as mpmath, and the finite results within the bound."""
    rng = np.random.default_rng(40)
    specials = [np.inf, -np.inf, np.nan, 0.0, 1e30, -1e30, 3e38, 1e-30]
    precision = np.longdouble if dtype == "float64" else np.float64
    for it in range(40):
        x, labels, p = _case(int(rng.integers(1 << 30)), N=4, T=int(rng.integers(1, 4)), S=4, C=8, d=3, hits=2,
                             remove=bool(it % 2), scale=float(10 ** rng.uniform(0, 20)), near=float(it % 3))
        for a in (x, p["output_weights"], p["output_biases"], p["true_expected_count"], p["sampled_expected_count"]):
            if rng.random() < 0.3:
                a.flat[rng.integers(a.size)] = specials[rng.integers(len(specials))]
        x, labels, p = _in_dtype(x, labels, p, dtype)
        for family in sm.FAMILIES:
            err = oracle_error(sm.loss_rows(family, x, labels, p, precision), sm.mp_loss_rows(family, x, labels, p), dtype)
            assert err["class_ok"].all(), (it, family, err["rounded"], err["correct"])
            assert np.max(np.where(np.isfinite(err["ulps"]), err["ulps"], 0)) <= BOUND_ULP[dtype], (it, family)


def test_sampled_logits_shapes_and_labels():
    x, labels, p = _case(0, N=4, T=3, S=5, hits=2, remove=True)
    logits, y = sm.sampled_logits(x, labels, p, np.longdouble)
    assert logits.shape == y.shape == (4, 8) and logits.dtype == y.dtype == np.longdouble
    assert np.all(y[:, :3] == np.longdouble(1) / 3) and np.all(y[:, 3:] == 0)
    hit = (labels[:, :, None] == p["sampled"][None, None, :]).any(axis=1)
    assert hit.sum() >= 2 and np.all(logits[:, 3:][hit] == -np.inf) and np.isfinite(logits[:, 3:][~hit]).all()


# --- identities, against mpmath computed here -------------------------------------------------
def _mp_logits_full(x, p):
    """x . W^T + b for every class, exactly (then rounded to 300 bits)."""
    with mp.workprec(300):
        return [[mp.fsum([mpmath.mpf(a) * mpmath.mpf(w) for a, w in zip(xr, wr)]) + mpmath.mpf(bc)
                 for wr, bc in zip(p["output_weights"].tolist(), p["output_biases"].tolist())] for xr in x.tolist()]


def _close(approx, exact, rel):
    for a, e in zip(approx, exact):
        assert abs(mpmath.mpf(float(a)) - e) <= rel * abs(e), (float(a), e)


def _mp_close(values, exact, bits=120):
    for v, e in zip(values, exact):
        assert abs(v - e) <= abs(e) * mpmath.mpf(2) ** -bits, (v, e)


@pytest.mark.parametrize("remove", [False, True])
def test_sampled_softmax_over_all_classes_is_full_softmax(remove):
    """T = 1, counts 1, the sampled ids all classes but the label (or all classes, with the
    label's accidental hit removed): the full softmax cross-entropy of x.W^T + b."""
    C = 9
    x, labels, p = _case(20, N=5, C=C, S=C - 1)
    labels = np.full((5, 1), 4) if not remove else np.arange(5)[:, None] * 2
    p.update(sampled=np.array([c for c in range(C) if remove or c != 4]), remove_accidental_hits=remove,
             true_expected_count=np.ones((5, 1)), sampled_expected_count=np.ones(C if remove else C - 1))
    z = _mp_logits_full(x, p)
    with mp.workprec(300):
        exact = [mp.log(mp.fsum([mp.exp(v) for v in zr])) - zr[k] for zr, k in zip(z, labels[:, 0].tolist())]
    _mp_close(sm.mp_loss_rows("sampled_softmax", x, labels, p), exact)
    _close(sm.loss_rows("sampled_softmax", x, labels, p), exact, 4e-16)


def test_nce_with_one_sampled_class_is_two_sigmoid_ces():
    x, labels, p = _case(21, N=6, S=1, hits=0, qt=None, qs=None)
    labels[labels == p["sampled"][0]] = (p["sampled"][0] + 1) % 12  # no accidental hits
    z = _mp_logits_full(x, p)
    with mp.workprec(300):
        def softplus(t):
            return mp.log1p(mp.exp(t))

        s, qt, qs = int(p["sampled"][0]), p["true_expected_count"], p["sampled_expected_count"]
        exact = [softplus(-(zr[k] - mp.log(qt[i, 0]))) + softplus(zr[s] - mp.log(qs[0]))
                 for i, (zr, k) in enumerate(zip(z, labels[:, 0].tolist()))]
    _mp_close(sm.mp_loss_rows("nce", x, labels, p), exact)
    _close(sm.loss_rows("nce", x, labels, p), exact, 4e-16)


@pytest.mark.parametrize("family", sm.FAMILIES)
@pytest.mark.parametrize("T", [1, 3])
def test_removed_hit_equals_dropping_the_sampled_id(family, T):
    x, _, p = _case(22, N=6, T=T, S=5, hits=0)
    k, s = 2, p["sampled"]
    others = [c for c in range(12) if c not in s]  # classes never sampled
    labels = np.array([[others[(i + j) % len(others)] for j in range(T)] for i in range(6)])
    hit_rows = np.array([0, 3, 5])
    labels[hit_rows, -1] = s[k]  # these rows hit s[k], and nothing else is a hit
    removed = {**p, "remove_accidental_hits": True}
    dropped = {**p, "sampled": np.delete(s, k), "sampled_expected_count": np.delete(p["sampled_expected_count"], k)}
    a = sm.mp_loss_rows(family, x, labels, removed)[hit_rows]
    b = sm.mp_loss_rows(family, x, labels, dropped)[hit_rows]
    _mp_close(a, b)
    np.testing.assert_allclose(sm.loss_rows(family, x, labels, removed)[hit_rows],
                               sm.loss_rows(family, x, labels, dropped)[hit_rows], rtol=4e-16)
    # without removal, the hit is an ordinary sampled column: the loss is larger
    assert np.all(sm.loss_rows(family, x, labels, p)[hit_rows] > sm.loss_rows(family, x, labels, removed)[hit_rows])


# --- conventions ------------------------------------------------------------------------------
def _both(family, x, labels, p):
    """numpy (float64 and long double) and mpmath results, checked to agree on the class."""
    a = sm.loss_rows(family, x, labels, p)
    b = sm.loss_rows(family, x, labels, p, np.longdouble)
    m = np.array([float(v) for v in sm.mp_loss_rows(family, x, labels, p)])
    for r in (a, b.astype(np.float64)):
        assert np.array_equal(np.isnan(r), np.isnan(m)) and np.array_equal(np.isinf(r), np.isinf(m)), (r, m)
    return a, m


@pytest.mark.parametrize("family", sm.FAMILIES)
def test_nan_in_x_makes_only_that_row_nan(family):
    x, labels, p = _case(30, N=4, hits=2, remove=True)
    x[1, 3] = np.nan
    a, m = _both(family, x, labels, p)
    assert np.isnan(a[1]) and np.isfinite(np.delete(a, 1)).all()


@pytest.mark.parametrize("T", [1, 3])
def test_zero_true_count_is_a_plus_inf_true_logit(T):
    x, labels, p = _case(31, N=4, T=T)
    p["true_expected_count"][2, 0] = 0.0
    logits, _ = sm.sampled_logits(x, labels, p)
    assert logits[2, 0] == np.inf
    a, m = _both("sampled_softmax", x, labels, p)
    # T = 1: the softmax is one-hot on the label: loss 0. T = 3: the other true classes get
    # probability 0: +inf.
    assert a[2] == (0.0 if T == 1 else np.inf) and np.isfinite(np.delete(a, 2)).all()
    a, m = _both("nce", x, labels, p)
    # NCE: softplus(-inf) = 0 for the label term; (1 - 1/T)*softplus(+inf) = inf when T > 1
    assert (np.isfinite(a[2]) if T == 1 else a[2] == np.inf)
    if T == 1:
        logits_ok = {**p, "true_expected_count": np.where(p["true_expected_count"] == 0, 1.0, p["true_expected_count"])}
        rest = sm.mp_loss_rows("nce", x, labels, logits_ok)[2]  # minus the label's own term
        with mp.workprec(200):
            t = mpmath.mpf(float(sm.sampled_logits(x, labels, logits_ok, np.longdouble)[0][2, 0]))
            assert abs(mpmath.mpf(m[2]) - (rest - mp.log1p(mp.exp(-t)))) < 1e-12 * rest


@pytest.mark.parametrize("family", sm.FAMILIES)
def test_negative_count_is_nan(family):
    x, labels, p = _case(32, N=4)
    p["true_expected_count"][1, 0] = -0.5
    a, _ = _both(family, x, labels, p)
    assert np.isnan(a[1]) and np.isfinite(np.delete(a, 1)).all()
    p = _case(32, N=4)[2]
    p["sampled_expected_count"][3] = -1.0
    assert np.isnan(_both(family, x, labels, p)[0]).all()  # every row uses every sampled id


@pytest.mark.parametrize("family", sm.FAMILIES)
def test_ids_out_of_range_are_nan(family):
    x, labels, p = _case(33, N=4, C=12)
    labels[0, 0], labels[3, 0] = 12, -1
    a, _ = _both(family, x, labels, p)
    assert np.isnan(a[[0, 3]]).all() and np.isfinite(a[[1, 2]]).all()
    labels = _case(33, N=4, C=12)[1]
    p["sampled"] = p["sampled"].copy()
    p["sampled"][0] = 99
    assert np.isnan(_both(family, x, labels, p)[0]).all()


@pytest.mark.parametrize("family", sm.FAMILIES)
def test_all_sampled_removed(family):
    """Every sampled id a hit and removed: sampled softmax with T = 1 is exactly 0 (the true
    class alone); NCE is the label terms alone."""
    x, labels, p = _case(34, N=3, S=1)
    labels[:, 0] = p["sampled"][0]
    p["remove_accidental_hits"] = True
    a, m = _both(family, x, labels, p)
    if family == "sampled_softmax":
        assert np.all(a == 0) and np.all(m == 0)
    else:
        logits, _ = sm.sampled_logits(x, labels, p)
        np.testing.assert_allclose(a, np.logaddexp(0, -logits[:, 0]), rtol=1e-15)


def test_unknown_family():
    x, labels, p = _case(35, N=2)
    for f in (sm.loss_rows, sm.mp_loss_rows):
        with pytest.raises(ValueError):
            f("softmax", x, labels, p)
