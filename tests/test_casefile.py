"""The JSON case-file format (harness.casefile): what parses, and the one-line errors."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from harness.casefile import CaseFileError, dump_cases, load_cases, parse_cases

README_EXAMPLE = {"cases": [{"id": "my-case", "family": "sigmoid", "inputs": [[-20.0, "inf"]],
                             "targets": [[0.0, 1.0]], "params": {"pos_weight": [1.0, 2.0], "reduction": "none"},
                             "dtypes": ["float32"]}]}


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def test_readme_example():
    (c,) = parse_cases(copy.deepcopy(README_EXAMPLE))
    assert (c.id, c.family, c.category, c.reduction, c.dtypes) == ("my-case", "sigmoid", "user", "none", ("float32",))
    assert c.inputs.dtype == np.float64 and c.inputs.tolist() == [[-20.0, math.inf]]
    assert c.targets.tolist() == [[0.0, 1.0]]
    assert c.params["pos_weight"].tolist() == [1.0, 2.0]


def test_readme_example_from_a_file(tmp_path):
    p = tmp_path / "cases.json"
    p.write_text(json.dumps(README_EXAMPLE))
    (c,) = load_cases(p)
    assert c.id == "my-case"


def test_number_syntax():
    doc = {"cases": [{"id": "numbers", "family": "sigmoid",
                      "inputs": [["inf", "-inf", "nan", "-0.0", "0x1p-149", "-0x1.8p+1", 0, 1e308, "+inf", " NaN "]],
                      "targets": [[0.0] * 10]}]}
    (c,) = parse_cases(doc)
    x = c.inputs[0]
    assert x[0] == math.inf and x[1] == -math.inf and math.isnan(x[2])
    assert x[3] == 0.0 and math.copysign(1.0, x[3]) == -1.0  # the sign bit survives
    assert x[4] == 2.0**-149 and x[5] == -3.0 and x[6] == 0.0 and math.copysign(1.0, x[6]) == 1.0
    assert x[7] == 1e308 and x[8] == math.inf and math.isnan(x[9])


def test_index_targets_are_int64():
    doc = {"cases": [{"id": "sparse", "family": "sparse_softmax", "inputs": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
                      "targets": [2, 0], "params": {"class_weight": [1, 2, 3], "reduction": "mean"}}]}
    (c,) = parse_cases(doc)
    assert c.targets.dtype == np.int64 and c.targets.tolist() == [2, 0]
    assert c.params["class_weight"].dtype == np.float64


def test_scalar_and_single_pos_weight():
    for pw in (2.0, [2.0]):
        doc = {"cases": [{"id": "pw", "family": "sigmoid", "inputs": [[0.0, 1.0]], "targets": [[1.0, 0.0]],
                          "params": {"pos_weight": pw}}]}
        (c,) = parse_cases(doc)
        assert c.params["pos_weight"].tolist() == pw


def test_empty_batch_shape_form_round_trips():
    """An empty batch of C classes has no nested-list form; {"shape", "values"} carries it."""
    doc = {"cases": [{"id": "empty", "family": "softmax", "inputs": {"shape": [0, 5], "values": []},
                      "targets": {"shape": [0, 5], "values": []}, "params": {"reduction": "mean"}},
                     {"id": "shaped", "family": "sigmoid", "inputs": {"shape": [2, 1], "values": [1.0, "-inf"]},
                      "targets": [[1.0], [0.0]]}]}
    empty, shaped = parse_cases(doc)
    assert empty.inputs.shape == (0, 5) and empty.targets.shape == (0, 5)
    assert shaped.inputs.tolist() == [[1.0], [-math.inf]]
    again = parse_cases(json.loads(dump_cases([empty, shaped])))
    assert [c.inputs.shape for c in again] == [(0, 5), (2, 1)]


def test_dump_and_parse_preserve_bits():
    doc = {"cases": [{"id": "bits", "family": "softmax", "inputs": [["-0.0", "nan", "0x1p-1074", 1e-310]],
                      "targets": [[0.25, 0.25, "0x1.8p-2", 0.0]], "params": {"class_weight": ["inf", 0, 1, 2]},
                      "dtypes": ["float64", "bfloat16"]}]}
    (c,) = parse_cases(doc)
    text = dump_cases([c])
    json.loads(text, parse_constant=lambda name: pytest.fail(f"dump_cases wrote bare {name}"))
    (d,) = parse_cases(json.loads(text))
    assert bits(d.inputs) == bits(c.inputs) and bits(d.targets) == bits(c.targets)
    assert bits(d.params["class_weight"]) == bits(c.params["class_weight"])
    assert d.dtypes == ("float64", "bfloat16")


# --- errors ---------------------------------------------------------------------------------------
def case(**over):
    base = {"id": "bad-case", "family": "sigmoid", "inputs": [[0.0, 1.0]], "targets": [[1.0, 0.0]]}
    base.update(over)
    return base


def sparse_case(**over):
    base = {"id": "bad-case", "family": "sparse_softmax", "inputs": [[0.0, 1.0], [2.0, 3.0]], "targets": [0, 1]}
    base.update(over)
    return base


ERRORS = [
    # (test id, case object, fragments the message must contain)
    ("unknown-family", case(family="hinge"), ["'bad-case'", "family", "hinge"]),
    ("family-not-a-string", case(family=3), ["'bad-case'", "family"]),
    ("inputs-a-string", case(inputs="abc"), ["'bad-case'", "inputs", "abc"]),
    ("inputs-null", case(inputs=None), ["'bad-case'", "inputs"]),
    ("inputs-bool", case(inputs=[[True, 1.0]]), ["'bad-case'", "inputs", "True"]),
    ("inputs-object", case(inputs={"a": 1}), ["'bad-case'", "inputs"]),
    ("inputs-bad-string", case(inputs=[["1.5", 1.0]]), ["'bad-case'", "inputs", "1.5"]),
    ("inputs-scalar", case(inputs=1.0, targets=1.0), ["'bad-case'", "inputs"]),
    ("ragged", case(inputs=[[0.0, 1.0], [2.0]], targets=[[1.0, 0.0], [1.0]]), ["'bad-case'", "inputs", "ragged"]),
    ("ragged-depth", case(inputs=[[0.0, [1.0]]]), ["'bad-case'", "inputs", "ragged"]),
    ("missing-targets", {"id": "bad-case", "family": "sigmoid", "inputs": [[0.0]]}, ["'bad-case'", "targets"]),
    ("targets-shape", case(targets=[[1.0, 0.0, 1.0]]), ["'bad-case'", "targets", "shape"]),
    ("sparse-targets-shape", sparse_case(targets=[[0, 1]]), ["'bad-case'", "targets", "shape"]),
    ("sparse-float-targets", sparse_case(targets=[0.0, 1.0]), ["'bad-case'", "targets", "integers"]),
    ("sparse-bool-targets", sparse_case(targets=[True, False]), ["'bad-case'", "targets", "integers"]),
    ("sparse-huge-target", sparse_case(targets=[2**70, 0]), ["'bad-case'", "targets", "int64"]),
    ("rowwise-1d", sparse_case(inputs=[0.0, 1.0], targets=0), ["'bad-case'", "inputs", "2-D"]),
    ("no-classes", sparse_case(inputs=[[], []]), ["'bad-case'", "inputs", "no classes"]),
    ("unknown-param", case(params={"temperature": 0.1}), ["'bad-case'", "params.temperature"]),
    ("class-weight-on-sigmoid", case(params={"class_weight": [1.0, 1.0]}), ["'bad-case'", "params.class_weight"]),
    ("params-not-object", case(params=[1]), ["'bad-case'", "params"]),
    ("pos-weight-length", case(params={"pos_weight": [1.0, 2.0, 3.0]}),
     ["'bad-case'", "params.pos_weight", "length 2"]),
    ("class-weight-length", sparse_case(params={"class_weight": [1.0]}), ["'bad-case'", "params.class_weight"]),
    ("weight-shape", case(params={"weight": [1.0, 2.0]}), ["'bad-case'", "params.weight", "shape"]),
    ("bad-reduction", case(params={"reduction": "average"}), ["'bad-case'", "params.reduction", "average"]),
    ("reduction-list", case(params={"reduction": ["mean"]}), ["'bad-case'", "params.reduction"]),
    ("unknown-dtype", case(dtypes=["float8"]), ["'bad-case'", "dtypes"]),
    ("dtypes-empty", case(dtypes=[]), ["'bad-case'", "dtypes"]),
    ("dtypes-string", case(dtypes="float32"), ["'bad-case'", "dtypes"]),
    ("unknown-key", case(comment="hi"), ["'bad-case'", "comment"]),
    ("shape-form-count", case(inputs={"shape": [1, 3], "values": [1.0]}), ["'bad-case'", "inputs", "values"]),
    ("shape-form-keys", case(inputs={"shape": [1, 2]}), ["'bad-case'", "inputs", "shape"]),
    ("id-missing", {"family": "sigmoid", "inputs": [[0.0]], "targets": [[0.0]]}, ["cases[0]", "id"]),
    ("id-not-string", case(id=7), ["cases[0]", "id"]),
    ("newline-in-id", case(id="two\nlines", family="hinge"), ["two\\nlines", "family"]),
]


def one_line(err: CaseFileError) -> str:
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


@pytest.mark.parametrize("obj,fragments", [(o, f) for _, o, f in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_names_case_and_field(obj, fragments):
    with pytest.raises(CaseFileError) as ei:
        parse_cases({"cases": [obj]}, "f.json")
    msg = one_line(ei.value)
    assert msg.startswith("f.json: cases[0]"), msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_duplicate_ids():
    with pytest.raises(CaseFileError) as ei:
        parse_cases({"cases": [case(), case(inputs=[[2.0, 3.0]])]}, "f.json")
    msg = one_line(ei.value)
    assert "cases[1]" in msg and "'bad-case'" in msg and "duplicate" in msg


@pytest.mark.parametrize("doc,fragment", [
    ({"cases": []}, "no cases"),
    ({}, "cases"),
    ([], "cases"),
    ({"cases": {}}, "cases"),
    ({"cases": [case()], "version": 2}, "version"),
    ({"cases": [3]}, "JSON object"),
])
def test_document_errors(doc, fragment):
    with pytest.raises(CaseFileError) as ei:
        parse_cases(doc, "f.json")
    msg = one_line(ei.value)
    assert msg.startswith("f.json") and fragment in msg, msg


def test_bad_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"cases": [\n  {"id": "x",, }\n]}')
    with pytest.raises(CaseFileError) as ei:
        load_cases(p)
    msg = one_line(ei.value)
    assert str(p) in msg and "invalid JSON" in msg and "line 2" in msg


def test_not_utf8_and_missing_file(tmp_path):
    p = tmp_path / "latin1.json"
    p.write_bytes(b'{"cases": [{"id": "caf\xe9"}]}')
    with pytest.raises(CaseFileError) as ei:
        load_cases(p)
    assert "UTF-8" in one_line(ei.value)
    with pytest.raises(CaseFileError) as ei:
        load_cases(tmp_path / "nope.json")
    assert "cannot read" in one_line(ei.value)


@pytest.mark.parametrize("constant,suggest", [("NaN", '"nan"'), ("Infinity", '"inf"'), ("-Infinity", '"-inf"')])
def test_bare_nan_constant(tmp_path, constant, suggest):
    p = tmp_path / "bare.json"
    p.write_text('{"cases": [{"id": "bare", "family": "sigmoid", "inputs": [[0.0, %s]], "targets": [[1.0, 0.0]]}]}'
                 % constant)
    with pytest.raises(CaseFileError) as ei:
        load_cases(p)
    msg = one_line(ei.value)
    assert str(p) in msg and "'bare'" in msg and "inputs" in msg and constant in msg and suggest in msg, msg


def test_bare_constant_in_a_param(tmp_path):
    p = tmp_path / "bare.json"
    p.write_text('{"cases": [{"id": "bare", "family": "sigmoid", "inputs": [[0.0]], "targets": [[1.0]],'
                 ' "params": {"weight": [[NaN]]}}]}')
    with pytest.raises(CaseFileError) as ei:
        load_cases(p)
    msg = one_line(ei.value)
    assert "'bare'" in msg and "params.weight" in msg and "NaN" in msg, msg
