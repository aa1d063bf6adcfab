"""The contracts every other module shares: loss families, canonical parameters,
statuses, result columns, and the declarative `Api` entry an adapter is made of.

Nothing here imports a framework. The mathematics of each family lives in
`harness.oracle`; this module only names things.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# --- dtypes ---------------------------------------------------------------
DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")


# --- families ---------------------------------------------------------------
ROW_PARAMS = ("class_weight", "label_smoothing", "sample_weight", "reduction")
INDEX_PARAMS = ROW_PARAMS + ("ignore_index",)


@dataclass(frozen=True)
class Family:
    """A canonical loss family.

    inputs:  "logits" or "probabilities"
    targets: "dense" (floats, same shape as inputs) or "index" (integers, inputs.shape[:-1])
    rowwise: True when the loss reduces over a class axis (the last axis) per row.
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
            ("pos_weight", "weight", "label_smoothing", "sample_weight", "reduction"),
            "w*[(1-z)*x + (1+(q-1)*z)*softplus(-x)]",
        ),
        Family(
            "binary", "probabilities", "dense", False, ("weight", "label_smoothing", "sample_weight", "reduction"),
            "-w*[z*log(p) + (1-z)*log(1-p)], 0*log 0 = 0",
        ),
        Family(
            "softmax", "logits", "dense", True, ROW_PARAMS,
            "-sum_c w_c*y_c*log_softmax(x)_c, 0*log 0 = 0",
        ),
        Family(
            "sparse_softmax", "logits", "index", True, INDEX_PARAMS,
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
    )
}

# --- canonical parameters ----------------------------------------------------
#: Canonical parameters a case may carry in `params`. Arrays are float, broadcast as named.
PARAMS: dict[str, str] = {
    "pos_weight": "array over the last axis (sigmoid): weight q of the positive term",
    "weight": "array of the inputs' shape (elementwise families): multiplies each element's loss",
    "class_weight": "array over the class axis (softmax families): multiplies class c's term",
    "label_smoothing": "number eps in [0, 1]: targets become (1-eps)*y + eps/C (C classes; 2 for the binary families)",
    "sample_weight": "array of inputs.shape[:-1] (one per sample), broadcast over the last axis; multiplies the loss",
    "ignore_index": "integer (index families): rows whose target equals it contribute 0 and leave the mean's denominator",
    "reduction": "'none', 'sum' or 'mean'",
}
ARRAY_PARAMS: tuple[str, ...] = ("pos_weight", "weight", "class_weight", "sample_weight")
SCALAR_PARAMS: tuple[str, ...] = ("label_smoothing", "ignore_index")
INT_PARAMS: tuple[str, ...] = ("ignore_index",)
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")

#: Named reference conventions an API may document (values are the defaults).
#:   mean:      "elements"        -> mean over every element of the unreduced loss
#:              "target_weight"   -> sum / sum of the targets' class weights (torch, index targets)
#:              "weight_sum"      -> sum / sum of the weights applied (TF v1 Reduction.MEAN)
#:              "nonzero_weights" -> sum / number of nonzero weights (TF v1 SUM_BY_NONZERO_WEIGHTS)
#:   axis_mean: True            -> elementwise loss is first averaged over the last axis
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
}
#: Statuses that are not a pass for the conformance suite.
FAILING = ("discrepancy", "nonfinite_mismatch", "raised", "crashed")

QUANTITIES = ("loss",)

RESULT_COLUMNS: tuple[str, ...] = (
    "case_id", "category", "family", "api", "framework", "framework_version",
    "dtype", "device", "quantity", "status", "max_ulp", "tol_ulp", "max_abs_err",
    "max_rel_err", "worst_index", "expected", "actual", "worst_input", "n_elements",
    "actual_dtype", "reference", "detail", "seconds",
)


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

    def cannot_express(self, case_params: Mapping[str, Any], dtype: str) -> str | None:
        """Why this API cannot run the case in `dtype`, or None when it can."""
        if dtype not in self.dtypes:
            return f"dtype {dtype} not supported by {self.id}"
        r = case_params.get("reduction", "none")  # a case without one asks for the unreduced loss
        if r not in self.reductions:
            return f"reduction '{r}' not expressible by {self.id} (has {', '.join(self.reductions)})"
        for p in case_params:
            if p == "reduction":
                continue
            if p not in self.params:
                return f"parameter '{p}' not expressible by {self.id}"
        return None
