"""The contracts every other module shares: loss families, canonical parameters,
statuses, result columns, and the declarative `Api` entry an adapter is made of.

Nothing here imports a framework. The mathematics of each family lives in
`harness.oracle`; this module only names things.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

# --- dtypes ---------------------------------------------------------------
DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")


# --- families ---------------------------------------------------------------
ROW_PARAMS = ("class_weight", "label_smoothing", "sample_weight", "reduction", "axis")
INDEX_PARAMS = ROW_PARAMS + ("ignore_index",)
FOCAL_PARAMS = ("alpha", "gamma", "label_smoothing", "sample_weight", "reduction", "axis")
SAMPLED_PARAMS = ("output_weights", "output_biases", "sampled", "true_expected_count",
                  "sampled_expected_count", "remove_accidental_hits", "reduction")


@dataclass(frozen=True)
class Family:
    """A canonical loss family.

    inputs:  "logits", "probabilities" or "activations" (sampled families: the last hidden
             layer, multiplied by params output_weights inside the loss)
    targets: "dense" (floats, same shape as inputs), "index" (integers, the inputs' shape
             without the class axis) or "classes" (integers [N, num_true]: sampled families)
    rowwise: True when the loss reduces over a class axis per row (the last axis, or `axis`).
    params:  canonical parameters the family's definition knows.
    definition: the formula, for docs and reports (the code is in harness.oracle).
    """

    name: str
    inputs: str
    targets: str
    rowwise: bool
    params: tuple[str, ...]
    definition: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "sigmoid", "logits", "dense", False,
            ("pos_weight", "weight", "label_smoothing", "sample_weight", "reduction", "axis"),
            "w*[(1-z)*x + (1+(q-1)*z)*softplus(-x)]",
        ),
        Family(
            "binary", "probabilities", "dense", False,
            ("weight", "label_smoothing", "sample_weight", "reduction", "axis"),
            "-w*[z*log(p) + (1-z)*log(1-p)], 0*log 0 = 0",
        ),
        Family(
            "softmax", "logits", "dense", True, ROW_PARAMS + ("where", "poly_epsilon"),
            "-sum_c w_c*y_c*[log_softmax(x)_c - eps_poly*(1-softmax(x)_c)], 0*log 0 = 0",
        ),
        Family(
            "sparse_softmax", "logits", "index", True, INDEX_PARAMS + ("where",),
            "-w_k*log_softmax(x)_k for target class k",
        ),
        Family(
            "categorical", "probabilities", "dense", True, ROW_PARAMS,
            "-sum_c w_c*y_c*log(p_c), 0*log 0 = 0",
        ),
        Family(
            "sparse_categorical", "probabilities", "index", True, INDEX_PARAMS,
            "-w_k*log(p_k) for target class k",
        ),
        Family(
            "sigmoid_focal", "logits", "dense", False, FOCAL_PARAMS,
            "a(z)*(1-p_t)^gamma*sigmoid_ce(x, z), p=sigmoid(x), 1-p_t=z*(1-p)+(1-z)*p, a(z)=alpha*z+(1-alpha)*(1-z)",
        ),
        Family(
            "binary_focal", "probabilities", "dense", False, FOCAL_PARAMS,
            "a(z)*(1-p_t)^gamma*binary_ce(p, z), 1-p_t=z*(1-p)+(1-z)*p, a(z)=alpha*z+(1-alpha)*(1-z)",
        ),
        Family(
            "softmax_focal", "logits", "dense", True, FOCAL_PARAMS,
            "-alpha*sum_c y_c*(1-p_c)^gamma*log(p_c), p=softmax(x)",
        ),
        Family(
            "categorical_focal", "probabilities", "dense", True, FOCAL_PARAMS,
            "-alpha*sum_c y_c*(1-p_c)^gamma*log(p_c)",
        ),
        Family(
            "sampled_softmax", "activations", "classes", True, SAMPLED_PARAMS,
            "softmax_ce over [true, sampled] logits x.W[c]+b[c]-log(Q(c)), labels 1/num_true on the true ones",
        ),
        Family(
            "nce", "activations", "classes", True, SAMPLED_PARAMS,
            "sum of sigmoid_ce over [true, sampled] logits x.W[c]+b[c]-log(Q(c)), labels 1/num_true on the true ones",
        ),
    )
}
FOCAL_FAMILIES = ("sigmoid_focal", "binary_focal", "softmax_focal", "categorical_focal")
SAMPLED_FAMILIES = ("sampled_softmax", "nce")
#: gamma when a focal case gives none: the focal-loss paper's and every API's default.
DEFAULT_GAMMA = 2.0

# --- canonical parameters ----------------------------------------------------
#: Canonical parameters a case may carry in `params`, with their kind and meaning.
PARAMS: dict[str, str] = {
    "pos_weight": "array over the last axis (sigmoid): weight q of the positive term",
    "weight": "array of the inputs' shape (elementwise families): multiplies each element's loss",
    "class_weight": "array over the class axis (softmax families): multiplies class c's term",
    "label_smoothing": "number eps in [0, 1]: targets become (1-eps)*y + eps/C (C classes; 2 for the binary families)",
    "sample_weight": "array of the inputs' shape without the class axis (one per sample), broadcast over it; multiplies the loss",
    "ignore_index": "integer (index families): rows whose target equals it contribute 0 and leave the mean's denominator",
    "axis": "integer: the class axis (row-wise families), or the axis a per-sample mean runs over; default -1",
    "where": "booleans of the inputs' shape, or of it without the class axis (whole rows): classes left out of "
             "the softmax and of the sum; a row with none left contributes 0",
    "alpha": "number (focal families): class balance alpha*z + (1-alpha)*(1-z) (binary), or a factor (categorical); none: 1",
    "gamma": "number (focal families): focusing exponent on (1-p_t); default 2",
    "poly_epsilon": "number (softmax): Poly-1 coefficient, adds eps*sum_c y_c*(1-softmax(x)_c)",
    "output_weights": "array [C, d] (sampled families): class embeddings W",
    "output_biases": "array [C] (sampled families): class biases b",
    "sampled": "integers [S] (sampled families): the sampled classes, fixed",
    "true_expected_count": "array [N, num_true] (sampled families): Q of each true class",
    "sampled_expected_count": "array [S] (sampled families): Q of each sampled class",
    "remove_accidental_hits": "boolean (sampled families): a sampled class equal to a true one leaves the row; default false",
    "reduction": "'none', 'sum' or 'mean'",
}
#: How each parameter is written and passed: float arrays are rounded to the tested dtype.
PARAM_KINDS: dict[str, str] = {
    "pos_weight": "array", "weight": "array", "class_weight": "array", "sample_weight": "array",
    "output_weights": "array", "output_biases": "array", "true_expected_count": "array",
    "sampled_expected_count": "array", "sampled": "int_array", "where": "bool_array",
    "label_smoothing": "number", "alpha": "number", "gamma": "number", "poly_epsilon": "number",
    "ignore_index": "int", "axis": "int", "remove_accidental_hits": "bool", "reduction": "reduction",
}
assert set(PARAM_KINDS) == set(PARAMS)
ARRAY_PARAMS: tuple[str, ...] = tuple(k for k, v in PARAM_KINDS.items() if v == "array")
SCALAR_PARAMS: tuple[str, ...] = tuple(k for k, v in PARAM_KINDS.items() if v in ("number", "int"))
INT_PARAMS: tuple[str, ...] = tuple(k for k, v in PARAM_KINDS.items() if v == "int")
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")
#: where `xentc run --device` runs the APIs (adapters.DEVICE_ENV); results column `device`
DEVICES: tuple[str, ...] = ("cpu", "cuda")

#: Named reference conventions an API may document (values are the defaults).
#:   mean:      "elements"        -> mean over every element of the unreduced loss
#:              "target_weight"   -> sum / sum of the targets' class weights (torch, index targets)
#:              "weight_sum"      -> sum / sum of the weights applied (TF v1 Reduction.MEAN,
#:                                   Keras "mean_with_sample_weight")
#:              "nonzero_weights" -> sum / number of nonzero weights (TF v1 SUM_BY_NONZERO_WEIGHTS)
#:   axis_mean: True            -> elementwise loss is first averaged over the last axis (or `axis`)
#:                                 (Keras' binary_crossentropy returns one value per sample)
CONVENTIONS: dict[str, Any] = {"mean": "elements", "axis_mean": False}
MEAN_CONVENTIONS = ("elements", "target_weight", "weight_sum", "nonzero_weights")

# --- statuses and result columns ---------------------------------------------
STATUSES: dict[str, str] = {
    "match": "within tolerance of the reference (non-finite classes equal)",
    "discrepancy": "finite where the reference is finite, but out of tolerance",
    "nonfinite_mismatch": "nan/+inf/-inf/finite class differs from the reference",
    "raised": "the framework raised where the reference defines a value",
    "unsupported": "the API cannot express this case (dtype, parameter or reduction)",
    "crashed": "the worker process died (signal) or timed out in this call",
    "no_gradient": "the framework returned no gradient where the mathematics defines one",
    "rejected": "invalid input (no reference value): the framework raised (detail: type and first line)",
    "silent_nan": "invalid input: the framework returned a result holding nan",
    "silent_value": "invalid input: the framework returned numbers (the dangerous one; detail: the value and its likely reading)",
}
#: Statuses that are not a pass for the conformance suite. silent_value is the dangerous answer
#: to invalid input; an API that accepts a kind on purpose says so in cases/expectations.toml.
FAILING = ("discrepancy", "nonfinite_mismatch", "raised", "crashed", "no_gradient", "silent_value")
#: The statuses of an invalid case (harness.badinput), besides crashed and unsupported.
BAD_INPUT_STATUSES = ("rejected", "silent_nan", "silent_value")

#: What a row measures. Gradients are those of the sum of the API's outputs (the
#: vector-Jacobian product with a cotangent of ones; a `mean` carries the API's normalisation),
#: through the framework's own autodiff, with respect to:
#:   grad_logits:  the inputs argument (logits, probabilities, or the sampled losses' activations)
#:   grad_targets: the dense targets (index and class targets have no derivative)
#:   grad_weights: the case's weight array, the first of harness.oracle.WEIGHT_PARAMS it has
GRADIENTS: tuple[str, ...] = ("grad_logits", "grad_targets", "grad_weights")
QUANTITIES: tuple[str, ...] = ("loss", *GRADIENTS)

RESULT_COLUMNS: tuple[str, ...] = (
    "case_id", "category", "family", "api", "framework", "framework_version",
    "dtype", "device", "quantity", "status", "max_ulp", "tol_ulp", "max_abs_err",
    "max_rel_err", "worst_index", "expected", "actual", "worst_input", "n_elements",
    "actual_dtype", "reference", "detail", "seconds",
    "max_ulp_finite", "worst_input_finite", "cond", "cond_ulp", "ulp_profile", "invalid",
)
#: max_ulp_finite: max ULP over the elements where result and reference are both finite (and a
#: gradient's reference certain to half an ulp): the accuracy figure, even beside a nonfinite
#: mismatch; worst_input_finite: the input there when it is not worst_input.
#: cond: the loss's condition number at that element; cond_ulp: the error (ulps) the input forces
#: there, the line between conditioning and implementation error (harness.condition). Both nan
#: for gradient rows and where undefined.
#: ulp_profile: for the exhaustive domains, the largest ULP error per band of x (JSON,
#: harness.profile), which the report plots; '' elsewhere.
#: invalid: the kind of invalid input of the case (harness.badinput.KINDS), '' for a valid case.


def category_of(case_id: str) -> str:
    """A case's category is the first '/'-separated part of its id ('user' if none)."""
    head, sep, _ = case_id.partition("/")
    return head if sep else "user"


# --- the declarative API entry -------------------------------------------------
@dataclass(frozen=True)
class Api:
    """One framework API, declared as data.

    name:      public qualified name, exactly as users write it ("tf.nn.softmax_cross_entropy_with_logits").
    family:    canonical family it computes.
    variant:   suffix for entries sharing a name (api id becomes "name[variant]").
    inputs/targets: keyword names receiving the logits-or-probabilities and the targets.
    params:    canonical parameter -> keyword argument of this API.
    reductions: canonical reductions the API can express.
    reduction_arg: keyword receiving the reduction (None: the API has one fixed reduction).
    reduction_values: the API's name of each canonical reduction where it differs
               (Keras: "mean" is "sum_over_batch_size").
    init_args: for a loss class (keras.losses.BinaryCrossentropy), the keywords that go to
               its constructor; the others go to the call of the instance.
    fixed:     keyword arguments always passed (e.g. from_logits=True).
    prepare:   (qualified name, kwargs) applied to the inputs first, e.g. log_softmax before nll_loss.
    dtypes:    dtypes the API documents support for.
    defaults:  canonical parameter values to pass when the case has none (a required
               argument whose canonical default is neutral, e.g. pos_weight=1).
    conventions: reference conventions the API documents (see CONVENTIONS).
    index_dtype: integer dtype for index targets.
    class_axis: the class (or per-sample mean) axis when the API has no `axis` argument:
               -1, or 1 for PyTorch (the axis `% ndim`, so 0 for an unbatched input).
    required:  canonical parameters the API always applies, so a case without them cannot be
               expressed (Keras' apply_class_balancing=True always applies alpha).
    prepare_targets: (qualified name, {keyword: canonical parameter}) applied to the targets
               first, e.g. optax.smooth_labels(labels, alpha=<label_smoothing>); the parameter
               is mapped to None in `params`.
    derive:    (inputs, targets, params) -> extra keyword arguments computed from the case
               (tf.nn.sampled_softmax_loss: num_sampled, num_classes, sampled_values).
    A canonical parameter mapped to None in `params` is expressible but consumed by
    prepare_targets or derive rather than passed as a keyword.
    """

    name: str
    family: str
    inputs: str
    targets: str
    variant: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    reductions: tuple[str, ...] = ("none",)
    reduction_arg: str | None = None
    reduction_values: Mapping[str, str] = field(default_factory=dict)  # canonical -> API's name
    init_args: tuple[str, ...] | None = None  # a class: these keywords go to the constructor
    fixed: Mapping[str, Any] = field(default_factory=dict)
    prepare: tuple[str, Mapping[str, Any]] | None = None
    dtypes: tuple[str, ...] = DTYPES
    conventions: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # canonical value passed when a case omits it
    index_dtype: str = "int64"
    class_axis: int = -1
    required: tuple[str, ...] = ()
    prepare_targets: tuple[str, Mapping[str, str]] | None = None
    derive: Callable[..., dict] | None = None
    framework: str = ""  # filled in by the adapter registry

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: unknown family {self.family!r}")
        fam = FAMILIES[self.family]
        bad = [p for p in self.params if p not in fam.params or p == "reduction"]
        if bad:
            raise ValueError(f"{self.name}: family {self.family} has no parameter(s) {bad}")
        if set(self.reductions) - set(REDUCTIONS):
            raise ValueError(f"{self.name}: unknown reduction in {self.reductions}")
        if len(self.reductions) > 1 and self.reduction_arg is None:
            raise ValueError(f"{self.name}: several reductions need a reduction_arg")
        unknown = set(self.conventions) - set(CONVENTIONS)
        if unknown:
            raise ValueError(f"{self.name}: unknown convention(s) {sorted(unknown)}")
        if self.conventions.get("mean", "elements") not in MEAN_CONVENTIONS:
            raise ValueError(f"{self.name}: unknown mean convention {self.conventions['mean']!r}")

    @property
    def id(self) -> str:
        return f"{self.name}[{self.variant}]" if self.variant else self.name

    def convention(self, key: str) -> Any:
        return self.conventions.get(key, CONVENTIONS[key])

    def cannot_express(self, case_params: Mapping[str, Any], dtype: str, ndim: int | None = None) -> str | None:
        """Why this API cannot run the case in `dtype`, or None when it can (ndim: the
        inputs' rank, to check a case's axis against an API whose class axis is fixed)."""
        if dtype not in self.dtypes:
            return f"dtype {dtype} not supported by {self.id}"
        r = case_params.get("reduction", "none")  # a case without one asks for the unreduced loss
        if r not in self.reductions:
            return f"reduction '{r}' not expressible by {self.id} (has {', '.join(self.reductions)})"
        for p in case_params:
            if p == "reduction" or (p == "axis" and "axis" not in self.params):
                continue
            if p not in self.params:
                return f"parameter '{p}' not expressible by {self.id}"
        if "axis" not in self.params and ndim:
            want = case_params.get("axis", -1) % ndim
            if want != self.class_axis % ndim:
                return f"axis {case_params.get('axis', -1)} not expressible by {self.id} (its axis is fixed at {self.class_axis})"
        missing = [p for p in self.required if p not in case_params]
        if missing:
            return f"{self.id} always applies {', '.join(missing)}; the case has none"
        return None
