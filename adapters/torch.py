"""PyTorch (CPU) cross-entropy APIs.

Conventions cited from the torch.nn.functional documentation (2.x):
* cross_entropy / nll_loss with class-index targets and `weight`: reduction="mean" divides by
  the sum of the targets' class weights; with class-probability targets it divides by N.
* the class dimension is 1: cross_entropy / nll_loss take K-dimensional inputs (N, C, d1, ...)
  (reference: a case's `axis` 1); multilabel_soft_margin_loss averages over the last axis.
* the module forms (nn.CrossEntropyLoss, ...) take weight / pos_weight / ignore_index /
  label_smoothing / reduction in the constructor and register the weights as buffers.
* binary_cross_entropy clamps log outputs to >= -100 ("BCELoss clamps its log function
  outputs to be greater than or equal to -100"): a documented departure, recorded in
  cases/expectations.toml, not modelled by the reference.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from adapters import Framework, device, error_line
from adapters.autodiff import TORCH_REPRO, torch_import_autograd, torch_vjp
from harness.spec import Api

ALL = ("none", "sum", "mean")
API = partial(Api, framework="torch", reductions=ALL, reduction_arg="reduction")


def _setup():
    import torch

    torch.set_num_threads(1)
    torch_import_autograd()
    return torch


def _to_native(a: np.ndarray):
    import torch

    if a.dtype.name == "bfloat16":
        t = torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    else:
        t = torch.from_numpy(np.ascontiguousarray(a))
    return t if device() == "cpu" else t.to(device())


def _to_numpy(t) -> np.ndarray:
    import ml_dtypes
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.float().numpy().astype(ml_dtypes.bfloat16)
    return t.numpy()


def device_check(dev: str) -> str | None:
    import torch

    return None if torch.cuda.is_available() else "torch sees no CUDA device (torch.cuda.is_available() is False)"


def poisoned() -> str | None:
    """On a GPU, a device-side assert (CUDA's kernels check class indices, BCE's probabilities)
    leaves the process's CUDA context failing every later call: why, or None. Each case ends
    with a copy to the host, so the assert surfaces in the case that triggered it."""
    if device() == "cpu":
        return None
    import torch

    try:
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - the sticky error itself
        return error_line(e)
    return None


FRAMEWORK = Framework(
    name="torch",
    device_check=device_check,
    poisoned=poisoned,
    package="torch",
    aliases={},
    setup=_setup,
    to_native=_to_native,
    to_numpy=_to_numpy,
    repro_imports="import numpy as np, torch",
    repro_array="torch.tensor({values}).to(torch.{dtype})",
    repro_value="{expr}.double().tolist()",
    env={"OMP_NUM_THREADS": "1"},
    vjp=torch_vjp,
    repro_vjp=TORCH_REPRO,
)

F = "torch.nn.functional."
NN = "torch.nn."
#: PyTorch's class dimension is 1 (0 for an unbatched input): K-dimensional inputs are (N, C, d1, ...).
ROWS = partial(API, class_axis=1)
CE_INDEX = {"class_weight": "weight", "label_smoothing": "label_smoothing", "ignore_index": "ignore_index"}
CE_PROBS = {"class_weight": "weight", "label_smoothing": "label_smoothing"}
NLL = {"class_weight": "weight", "ignore_index": "ignore_index"}
TARGET_MEAN = {"mean": "target_weight"}
LOG_SOFTMAX = (F + "log_softmax", {"dim": 1})
#: modules take their options in the constructor and (input, target) in the call
MODULE_INIT = ("weight", "pos_weight", "ignore_index", "label_smoothing", "reduction")

APIS = [
    API(name=F + "binary_cross_entropy_with_logits", family="sigmoid", inputs="input", targets="target",
        params={"pos_weight": "pos_weight", "weight": "weight"}),
    API(name=F + "binary_cross_entropy", family="binary", inputs="input", targets="target",
        params={"weight": "weight"}),
    ROWS(name=F + "cross_entropy", variant="index", family="sparse_softmax", inputs="input", targets="target",
         params=CE_INDEX, conventions=TARGET_MEAN),
    ROWS(name=F + "cross_entropy", variant="probs", family="softmax", inputs="input", targets="target",
         params=CE_PROBS),
    ROWS(name=F + "nll_loss", variant="log_softmax", family="sparse_softmax", inputs="input", targets="target",
         params=NLL, conventions=TARGET_MEAN, prepare=LOG_SOFTMAX),
    # the mean over the class axis of the weighted sigmoid cross-entropy, one value per sample
    API(name=F + "multilabel_soft_margin_loss", family="sigmoid", inputs="input", targets="target",
        params={"weight": "weight"}, conventions={"axis_mean": True}),
    # module forms: the same computations, options given to the constructor
    API(name=NN + "BCEWithLogitsLoss", family="sigmoid", inputs="input", targets="target",
        params={"pos_weight": "pos_weight", "weight": "weight"}, init_args=MODULE_INIT),
    API(name=NN + "BCELoss", family="binary", inputs="input", targets="target",
        params={"weight": "weight"}, init_args=MODULE_INIT),
    ROWS(name=NN + "CrossEntropyLoss", variant="index", family="sparse_softmax", inputs="input", targets="target",
         params=CE_INDEX, conventions=TARGET_MEAN, init_args=MODULE_INIT),
    ROWS(name=NN + "CrossEntropyLoss", variant="probs", family="softmax", inputs="input", targets="target",
         params=CE_PROBS, init_args=MODULE_INIT),
    ROWS(name=NN + "NLLLoss", variant="log_softmax", family="sparse_softmax", inputs="input", targets="target",
         params=NLL, conventions=TARGET_MEAN, prepare=LOG_SOFTMAX, init_args=MODULE_INIT),
]
