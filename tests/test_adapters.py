"""The adapter tables: declarations are consistent, and each maps canonical parameters to
the API's own arguments as documented. No framework is imported here."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import adapters
from harness.spec import PARAM_KINDS, DTYPES, FAMILIES

APIS = adapters.all_apis()

# The public names the M1 scope lists, exactly as written there.
REQUIRED = {
    "tf.nn.sigmoid_cross_entropy_with_logits", "tf.nn.weighted_cross_entropy_with_logits",
    "tf.nn.softmax_cross_entropy_with_logits", "tf.nn.sparse_softmax_cross_entropy_with_logits",
    "tf.keras.losses.binary_crossentropy", "tf.keras.losses.categorical_crossentropy",
    "tf.keras.losses.sparse_categorical_crossentropy",
    "torch.nn.functional.binary_cross_entropy_with_logits", "torch.nn.functional.binary_cross_entropy",
    "torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss",
    "optax.sigmoid_binary_cross_entropy", "optax.softmax_cross_entropy",
    "optax.softmax_cross_entropy_with_integer_labels", "optax.safe_softmax_cross_entropy",
}


def test_every_required_api_is_registered():
    assert REQUIRED <= {a.name for a in APIS}


def test_keras_losses_have_probability_and_logit_variants():
    for name in ("binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"):
        entries = [a for a in APIS if a.name == f"tf.keras.losses.{name}"]
        assert {FAMILIES[a.family].inputs for a in entries} == {"logits", "probabilities"}
        assert [a.fixed.get("from_logits") for a in entries if FAMILIES[a.family].inputs == "logits"] == [True]


def test_torch_cross_entropy_has_index_and_probability_targets():
    fams = {a.family for a in APIS if a.name == "torch.nn.functional.cross_entropy"}
    assert fams == {"sparse_softmax", "softmax"}


def test_api_ids_unique_and_start_with_public_name():
    ids = [(a.framework, a.id) for a in APIS]
    assert len(ids) == len(set(ids))
    for a in APIS:
        assert a.id.startswith(a.name)
        assert set(a.dtypes) <= set(DTYPES)


@pytest.mark.parametrize("api", APIS, ids=lambda a: f"{a.framework}:{a.id}")
def test_call_plan_maps_every_parameter(api):
    fam = FAMILIES[api.family]
    x = np.zeros((2, 3), np.float32)
    t = {"index": np.zeros((2,), np.int64), "classes": np.zeros((2, 1), np.int64)}.get(fam.targets,
                                                                                      np.zeros((2, 3), np.float32))
    params = {"pos_weight": np.ones(3, np.float32), "weight": np.ones((2, 3), np.float32),
              "class_weight": np.ones(3, np.float32), "sample_weight": np.ones(2, np.float32),
              "label_smoothing": 0.125, "ignore_index": -100, "axis": -1, "where": np.ones((2, 3), bool),
              "alpha": 0.25, "gamma": 1.5, "poly_epsilon": -1.0, "output_weights": np.ones((4, 3), np.float32),
              "output_biases": np.zeros(4, np.float32), "sampled": np.array([1, 2], np.int64),
              "true_expected_count": np.ones((2, 1), np.float32), "sampled_expected_count": np.ones(2, np.float32),
              "remove_accidental_hits": True, "reduction": api.reductions[-1]}
    params = {k: v for k, v in params.items() if k == "reduction" or k in api.params}
    kw = adapters.call_plan(api, x, t, params)
    assert kw[api.inputs] is x and kw[api.targets] is t
    for canonical, arg in api.params.items():
        if arg is None:  # consumed by prepare_targets or derive, never passed as a keyword
            assert canonical not in kw
        elif PARAM_KINDS[canonical] in ("number", "int", "bool"):  # Python scalars, as users pass them
            assert type(kw[arg]) is type(params[canonical]) and kw[arg] == params[canonical]
        else:
            assert kw[arg] is params[canonical]
    if api.reduction_arg:
        assert kw[api.reduction_arg] == api.reduction_values.get(api.reductions[-1], api.reductions[-1])
    init, rest = adapters.split_init(api, kw)
    if api.init_args is not None:  # a loss class: constructor options, then (y_true, y_pred, sample_weight)
        assert api.inputs in rest and api.targets in rest and set(init) <= set(api.init_args)
    for k, v in api.fixed.items():
        assert kw[k] == v
    if api.derive is not None:  # tf.nn sampled losses: the fixed sampled values, as a triple
        assert kw["num_sampled"] == 2 and kw["num_classes"] == 4 and kw["num_true"] == 1
        assert kw["sampled_values"][0] is params["sampled"]


def test_documented_mappings():
    by_id = {a.id: a for a in APIS if not a.framework.startswith("keras[")}
    torch_idx = by_id["torch.nn.functional.cross_entropy[index]"]
    assert torch_idx.params == {"class_weight": "weight", "label_smoothing": "label_smoothing",
                                "ignore_index": "ignore_index"}
    assert torch_idx.convention("mean") == "target_weight"
    assert by_id["torch.nn.functional.cross_entropy[probs]"].convention("mean") == "elements"
    assert by_id["torch.nn.functional.binary_cross_entropy_with_logits"].params == {
        "pos_weight": "pos_weight", "weight": "weight"}
    w = by_id["tf.nn.weighted_cross_entropy_with_logits"]
    kw = adapters.call_plan(w, np.zeros(3, np.float16), np.zeros(3, np.float16), {})
    assert kw["pos_weight"].dtype == np.float16 and kw["pos_weight"] == 1.0  # neutral default, in the dtype
    assert by_id["tf.keras.losses.binary_crossentropy"].convention("axis_mean") is True
    nll = by_id["torch.nn.functional.nll_loss[log_softmax]"]
    assert nll.prepare == ("torch.nn.functional.log_softmax", {"dim": 1})  # the class dimension is 1
    assert nll.class_axis == 1 and by_id["optax.softmax_cross_entropy"].params["axis"] == "axis"
    smooth = by_id["optax.softmax_cross_entropy[smooth_labels]"]
    assert smooth.prepare_targets == ("optax.smooth_labels", {"alpha": "label_smoothing"})
    assert adapters.target_transform(smooth, {"label_smoothing": 0.1}) == ("optax.smooth_labels", {"alpha": 0.1})


def test_axis_and_required_parameters():
    by_id = {a.id: a for a in APIS if a.framework in ("torch", "jax", "keras[jax]")}
    ce = by_id["torch.nn.functional.cross_entropy[index]"]
    assert ce.cannot_express({"axis": 1}, "float32", 3) is None  # (N, C, d1): PyTorch's layout
    assert ce.cannot_express({}, "float32", 2) is None  # (N, C): the class axis is the last one too
    assert "axis -1 not expressible" in ce.cannot_express({}, "float32", 3)
    assert "axis 0" in ce.cannot_express({"axis": 0}, "float32", 2)
    opt = by_id["optax.softmax_cross_entropy"]
    assert opt.cannot_express({"axis": 0}, "float32", 2) is None
    bal = by_id["keras.losses.binary_focal_crossentropy[balanced]"]
    assert "always applies alpha" in bal.cannot_express({}, "float32", 2)
    assert bal.cannot_express({"alpha": 0.25}, "float32", 2) is None
    poly = by_id["optax.losses.poly_loss_cross_entropy"]
    assert "poly_epsilon" in poly.cannot_express({}, "float32", 2)


def test_cannot_express_names_the_reason():
    sig = next(a for a in APIS if a.id == "tf.nn.sigmoid_cross_entropy_with_logits")
    assert "pos_weight" in sig.cannot_express({"pos_weight": np.ones(2)}, "float32")
    assert "reduction 'mean'" in sig.cannot_express({"reduction": "mean"}, "float32")
    assert sig.cannot_express({"reduction": "none"}, "float32") is None


def test_keras_backends_share_one_table():
    tables = {fw: [a.id for a in adapters.load(fw).apis] for fw in adapters.MODULES if fw.startswith("keras[")}
    assert set(tables) == {"keras[tensorflow]", "keras[jax]", "keras[torch]", "keras[numpy]"}
    assert len({tuple(t) for t in tables.values()}) == 1
    assert all(a.framework == fw for fw in tables for a in adapters.load(fw).apis)
    mean = next(a for a in adapters.load("keras[jax]").apis if a.id == "keras.losses.CategoricalCrossentropy")
    assert mean.reduction_values == {"mean": "sum_over_batch_size"} and "label_smoothing" in mean.init_args


def test_importing_adapters_imports_no_framework():
    code = ("import sys, adapters, harness.runner, harness.report, cases.generator; adapters.all_apis(); "
            "print(sorted(m for m in ('torch','tensorflow','jax','optax','keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
