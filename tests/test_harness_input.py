"""Bad input to the harness (M6): every malformed case file, option or environment gives exactly
one line "xentc: error: ..." on stderr naming the problem, exit status 2, and no output (the --out
directory is not created, or nothing is written into it). Case files are data: nothing in them
is evaluated, and their ids cannot place files outside the output directory or break the report.

tests/test_cli.py and tests/test_casefile.py cover the first cases of each kind (invalid JSON,
unknown family, ragged inputs, softmax targets of the wrong shape, unknown framework/dtype, an
output directory under a file, and parse_cases' messages); this module goes through the command
line with the rest, and fuzzes parse_cases and load_cases with mutated valid documents and bytes.
Most cases call harness.cli.main in-process (a subprocess costs ~1.5 s of imports); the
environment variable XENTC_ADAPTERS is read when `adapters` is imported, so those go through
subprocesses.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adapters
import faulty_adapter as fa
from harness import casefile, cli, runner
from harness.casefile import CaseFileError, MAX_FILE_BYTES, dump_cases, load_cases, parse_cases
from harness.spec import DTYPES, PARAM_KINDS

VALID = {"id": "good", "family": "sigmoid", "inputs": [[0.5, -1.0]], "targets": [[1.0, 0.0]]}
VALID_SPARSE = {"id": "good-sparse", "family": "sparse_softmax", "inputs": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
                "targets": [2, 0]}
VALID_SOFTMAX = {"id": "good-softmax", "family": "softmax", "inputs": [[0.0, 1.0], [2.0, 3.0]],
                 "targets": [[1.0, 0.0], [0.5, 0.5]]}


def case(base=VALID, **over) -> dict:
    c = copy.deepcopy(base)
    c.update(over)
    return c


def doc(*cases) -> str:
    return json.dumps({"cases": list(cases)})


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """harness.cli.main in-process: (exit status, stderr, stdout). An exception escaping main is
    what `xentc` shows as a traceback with status 1: it fails the test."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"xentc raised {type(e).__name__}: {e} (a traceback, not one line and exit 2)")
    cap = capsys.readouterr()
    return rc, cap.err, cap.out


def one_error_line(rc, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("xentc: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def no_output(out) -> None:
    assert not os.path.exists(out) or os.listdir(out) == [], os.listdir(out)


# --- case files through the command line ---------------------------------------------------------
BAD_FILES = [
    # (test id, file content (str or bytes), fragments the error line must hold)
    ("json-trailing-comma", '{"cases": [1,]}', ["invalid JSON", "line 1"]),
    ("json-truncated", doc(VALID)[:-9], ["invalid JSON"]),
    ("json-empty-file", "", ["invalid JSON"]),
    ("json-two-documents", doc(VALID) + doc(VALID), ["invalid JSON"]),
    ("json-null", "null", ['{"cases": [...]}']),
    ("json-top-level-list", json.dumps([VALID]), ['{"cases": [...]}']),
    ("json-cases-not-a-list", json.dumps({"cases": VALID}), ['{"cases": [...]}']),
    ("not-utf8-latin1", doc(VALID).encode().replace(b"good", b"caf\xe9"), ["not UTF-8"]),
    ("not-utf8-utf16", doc(VALID).encode("utf-16"), ["not UTF-8"]),
    ("not-utf8-binary", bytes(range(256)) * 4, ["not UTF-8"]),
    ("family-null", doc(case(family=None)), ["'good'", "family"]),
    ("family-wrong-case", doc(case(family="Sigmoid")), ["'good'", "family", "Sigmoid"]),
    ("string-where-number", doc(case(inputs=[["abc", 1.0]])), ["'good'", "inputs", "abc"]),
    ("number-where-list", doc(case(inputs=5.0, targets=1.0)), ["'good'", "inputs"]),
    ("list-where-number", doc(case(params={"label_smoothing": [0.1]})), ["'good'", "params.label_smoothing"]),
    ("object-where-array", doc(case(targets={"a": 1})), ["'good'", "targets"]),
    ("bool-where-int", doc(case(VALID_SPARSE, params={"ignore_index": True})),
     ["'good-sparse'", "params.ignore_index"]),
    ("bool-where-axis", doc(case(VALID_SOFTMAX, params={"axis": False})), ["'good-softmax'", "params.axis"]),
    ("float-where-int", doc(case(VALID_SPARSE, params={"ignore_index": 1.5})),
     ["'good-sparse'", "params.ignore_index"]),
    ("bool-where-number", doc(case(params={"label_smoothing": True})), ["'good'", "params.label_smoothing"]),
    ("bool-in-array", doc(case(targets=[[True, 0.0]])), ["'good'", "targets"]),
    ("number-where-string", doc(case(id=12)), ["cases[0]", "id"]),
    ("number-where-reduction", doc(case(params={"reduction": 1})), ["'good'", "params.reduction"]),
    ("float-index-targets", doc(case(VALID_SPARSE, targets=[2.0, 0.0])), ["'good-sparse'", "targets", "integers"]),
    ("string-dtypes", doc(case(dtypes="float32")), ["'good'", "dtypes"]),
    ("ragged-targets", doc(case(inputs=[[0.0, 1.0], [2.0, 3.0]], targets=[[1.0, 0.0], [1.0]])),
     ["'good'", "targets", "ragged"]),
    ("ragged-param", doc(case(params={"weight": [[1.0], [1.0, 2.0]]})), ["'good'", "params.weight", "ragged"]),
    ("ragged-shape-form", doc(case(inputs={"shape": [1, 2], "values": [[0.5, -1.0]]})), ["'good'", "inputs", "flat"]),
    ("shape-form-negative", doc(case(inputs={"shape": [-1, 2], "values": [0.5, -1.0]})), ["'good'", "inputs", "shape"]),
    ("targets-transposed", doc(case(targets=[[1.0], [0.0]])), ["'good'", "targets", "shape"]),
    ("index-targets-2d", doc(case(VALID_SPARSE, targets=[[2], [0]])), ["'good-sparse'", "targets", "shape"]),
    ("index-targets-short", doc(case(VALID_SPARSE, targets=[2])), ["'good-sparse'", "targets", "shape"]),
    ("class-weight-length", doc(case(VALID_SOFTMAX, params={"class_weight": [1.0, 2.0, 3.0]})),
     ["'good-softmax'", "params.class_weight", "length 2"]),
    ("sample-weight-shape", doc(case(VALID_SOFTMAX, params={"sample_weight": [1.0, 2.0, 3.0]})),
     ["'good-softmax'", "params.sample_weight", "shape"]),
    ("pos-weight-2d", doc(case(params={"pos_weight": [[1.0, 2.0]]})), ["'good'", "params.pos_weight"]),
    ("where-shape", doc(case(VALID_SOFTMAX, params={"where": [True, False, True]})),
     ["'good-softmax'", "params.where"]),
    ("weight-shape", doc(case(params={"weight": [[1.0, 2.0, 3.0]]})), ["'good'", "params.weight", "shape"]),
    ("unknown-case-field", doc(case(note="x")), ["'good'", "'note'"]),
    ("unknown-top-field", json.dumps({"cases": [VALID], "version": 2}), ["'version'"]),
    ("unknown-param", doc(case(params={"temperature": 2.0})), ["'good'", "params.temperature"]),
    ("param-of-another-family", doc(case(params={"class_weight": [1.0, 1.0]})), ["'good'", "params.class_weight"]),
    ("duplicate-ids", doc(VALID, case(inputs=[[1.0, 2.0]])), ["cases[1]", "'good'", "duplicate"]),
    ("empty-case-list", doc(), ["no cases"]),
    ("bare-nan", doc(VALID).replace("0.5", "NaN"), ["'good'", "inputs", "NaN", '"nan"']),
    ("bare-infinity-in-param", doc(case(params={"weight": [[1.0, 2.0]]})).replace("2.0]]", "-Infinity]]"),
     ["'good'", "params.weight", "-Infinity", '"-inf"']),
    ("deep-json", '{"cases": ' + "[" * 100_000 + "]" * 100_000 + "}", ["nested too deeply"]),
    ("array-of-70-dimensions", doc(case(inputs=json.loads("[" * 70 + "0.5" + "]" * 70),
                                        targets=json.loads("[" * 70 + "1.0" + "]" * 70))), ["'good'", "inputs"]),
    ("shape-form-of-70-dimensions", doc(case(inputs={"shape": [1] * 70, "values": [0.5]},
                                             targets={"shape": [1] * 70, "values": [1.0]})), ["'good'", "inputs"]),
    ("integer-beyond-float64", doc(case(inputs=[[10**400, 1.0]])), ["'good'", "inputs"]),
    ("integer-beyond-int-str-limit", doc(VALID).replace("0.5", "1" * 5000), []),  # json raises a plain ValueError
    ("hex-float-beyond-float64", doc(case(inputs=[["0x1p99999", 1.0]])), ["'good'", "inputs", "0x1p99999"]),
    ("code-in-a-number", doc(case(inputs=[["__import__('os').system('touch PWNED')", 1.0]])),
     ["'good'", "inputs", "__import__"]),
    ("lone-surrogate-id", doc(case(id="x\ud800")), ["cases[0]", "id"]),
]


@pytest.mark.parametrize("content,needles", [(c, n) for _, c, n in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_case_file(tmp_path, monkeypatch, capsys, content, needles):
    fa.register(monkeypatch)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cases.json"
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    out = tmp_path / "out"
    rc, err, _ = run_cli(["run", "--frameworks", "faulty", "--cases", path, "--out", out, "-q"], capsys)
    line = one_error_line(rc, err, *needles)
    assert str(path) in line  # names the file
    no_output(out)
    assert sorted(os.listdir(tmp_path)) == ["cases.json"]  # nothing else written, nothing executed


def test_huge_case_file_is_refused_before_it_is_read(tmp_path, monkeypatch, capsys):
    fa.register(monkeypatch)
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:  # sparse: no disk used
        f.truncate(MAX_FILE_BYTES + 1)
    out = tmp_path / "out"
    rc, err, _ = run_cli(["run", "--frameworks", "faulty", "--cases", path, "--out", out], capsys)
    one_error_line(rc, err, str(path), str(MAX_FILE_BYTES), "limit")
    no_output(out)


@pytest.mark.parametrize("kind", ["directory", "missing", "dangling-link"])
def test_case_file_that_is_not_a_file(tmp_path, monkeypatch, capsys, kind):
    fa.register(monkeypatch)
    path = tmp_path / "cases.json"
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling-link":
        path.symlink_to(tmp_path / "nowhere.json")
    out = tmp_path / "out"
    rc, err, _ = run_cli(["run", "--frameworks", "faulty", "--cases", path, "--out", out], capsys)
    one_error_line(rc, err, str(path))
    no_output(out)


# --- options ----------------------------------------------------------------------------------------
BAD_OPTIONS = [
    (["--frameworks", "torch,mxnet"], ["unknown framework mxnet"]),
    (["--frameworks", ","], ["unknown framework"]),
    (["--frameworks", "faulty", "--apis", "nothing.matches.*"], ["--apis", "nothing.matches.*"]),
    (["--frameworks", "faulty", "--apis", "torch.*"], ["--apis", "torch.*"]),  # an API of another framework
    (["--frameworks", "faulty", "--dtypes", "float32,float128"], ["unknown dtype float128"]),
    (["--frameworks", "faulty", "--call-timeout", "0"], ["--call-timeout"]),
    (["--frameworks", "faulty", "--call-timeout", "-1"], ["--call-timeout"]),
    (["--frameworks", "faulty", "--call-timeout", "nan"], ["--call-timeout"]),
    (["--frameworks", "faulty", "--call-timeout", "abc"], ["--call-timeout", "abc"]),
    (["--frameworks", "faulty", "--seed", "one"], ["--seed", "one"]),
    (["--frameworks", "faulty", "--no-such-option"], ["--no-such-option"]),
]


@pytest.mark.parametrize("args,needles", [pytest.param(a, n, id=" ".join(a)) for a, n in BAD_OPTIONS])
def test_bad_option(tmp_path, monkeypatch, capsys, args, needles):
    fa.register(monkeypatch)
    cases = tmp_path / "cases.json"
    cases.write_text(doc(VALID))
    out = tmp_path / "out"
    rc, err, _ = run_cli(["run", *args, "--cases", cases, "--out", out, "-q"], capsys)
    one_error_line(rc, err, *needles)
    no_output(out)


def test_output_directory_that_is_a_file(tmp_path, monkeypatch, capsys):
    fa.register(monkeypatch)
    cases = tmp_path / "cases.json"
    cases.write_text(doc(VALID))
    out = tmp_path / "out"
    out.write_text("a file")
    rc, err, _ = run_cli(["run", "--frameworks", "faulty", "--cases", cases, "--out", out, "-q"], capsys)
    one_error_line(rc, err, "cannot create output directory", str(out))
    assert out.read_text() == "a file"


def test_resume_of_a_file_that_is_no_journal(tmp_path, monkeypatch, capsys):
    fa.register(monkeypatch)
    cases = tmp_path / "cases.json"
    cases.write_text(doc(VALID))
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.jsonl").write_text("this is not a journal\n")
    rc, err, _ = run_cli(["run", "--frameworks", "faulty", "--cases", cases, "--out", out, "--resume", "-q"], capsys)
    one_error_line(rc, err, "cannot resume", "not a journal")
    assert (out / "journal.jsonl").read_text() == "this is not a journal\n"
    assert not (out / "results.parquet").exists()


# --- XENTC_ADAPTERS: read at import, so in a subprocess ------------------------------------------------
BAD_ADAPTERS = [
    ("faulty", ["faulty"], "XENTC_ADAPTERS"),  # no '='
    ("=faulty_adapter", ["faulty"], "XENTC_ADAPTERS"),
    ("faulty=", ["faulty"], "XENTC_ADAPTERS"),
    ("x=xentc_no_such_adapter_module", ["x"], "xentc_no_such_adapter_module"),  # a module that is not there
    ("x=json", ["x"], "json"),  # a module that is no adapter
    ("torch=faulty_adapter", ["torch"], "torch"),  # a built-in name taken by another module
]


@pytest.mark.parametrize("value,frameworks,needle", BAD_ADAPTERS, ids=[b[0] for b in BAD_ADAPTERS])
def test_malformed_xentc_adapters(tmp_path, value, frameworks, needle):
    cases = tmp_path / "cases.json"
    cases.write_text(doc(VALID))
    out = tmp_path / "out"
    r = fa.xentc("run", "--frameworks", ",".join(frameworks), "--cases", cases, "--out", out, "-q",
                 extra_env={"XENTC_ADAPTERS": value}, timeout=120)
    one_error_line(r.returncode, r.stderr, needle)
    no_output(out)


def test_malformed_xentc_adapters_in_xentc_list(tmp_path):
    r = fa.xentc("list", extra_env={"XENTC_ADAPTERS": "x=xentc_no_such_adapter_module"}, timeout=120)
    one_error_line(r.returncode, r.stderr, "xentc_no_such_adapter_module")


# --- case files are data ----------------------------------------------------------------------------
EVIL_IDS = ["../../escape", "/abs/path", "a/b\\c", "<script>alert(1)</script>/x", "x|y`z/case", "a\\|b/case",
            "two\nlines", "carriage\rreturn/x", "__import__('os').system('touch PWNED')", "$(touch PWNED)",
            "ключ/✓ snowman ☃"]


@pytest.mark.xdist_group("faults")
def test_ids_stay_data_in_a_real_run(tmp_path):
    """Hostile ids in a real run whose rows fail (raised, so repro files are written): no file
    outside OUT, safe repro names, the report escapes them and its tables keep their columns."""
    from harness.report import md

    work = tmp_path / "work"
    work.mkdir()
    cases = [{"id": cid, "family": "sigmoid", "inputs": [[0.5, fa.RAISE]], "targets": [[1.0, 0.0]],
              "dtypes": ["float32"]} for cid in EVIL_IDS]
    cases.append({"id": "plain", "family": "sigmoid", "inputs": [[0.5, -1.0]], "targets": [[1.0, 0.0]],
                  "dtypes": ["float32"]})
    (work / "cases.json").write_text(json.dumps({"cases": cases}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = fa.xentc("run", "--frameworks", "faulty", "--cases", "cases.json", "--out", "deep/out", "-q", cwd=work,
                 timeout=180)
    assert r.returncode == 0, r.stderr
    out = work / "deep" / "out"
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    assert new and all(str(p).startswith(os.path.join("work", "deep")) for p in new), new
    assert not list(tmp_path.rglob("PWNED")) and not os.path.exists("/abs/path")
    df = pd.read_parquet(out / "results.parquet")
    assert sorted(set(df.case_id)) == sorted(EVIL_IDS + ["plain"])  # kept exactly, as data
    loss = df[df.quantity == "loss"].set_index("case_id").status
    assert (loss[EVIL_IDS] == "raised").all() and (loss[["plain"]] == "match").all()
    repros = os.listdir(out / "repro")
    assert repros and all(re.fullmatch(r"[A-Za-z0-9._-]+\.py", n) for n in repros), repros
    text = (out / "report.md").read_bytes().decode("utf-8")  # no newline translation: a raw \r stays
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "x\\|y&#96;z" in text and "x|y`z" not in text
    assert "two lines" in text and "two\nlines" not in text
    for cid in EVIL_IDS:  # each failing case is named in its group, escaped
        assert md(cid) in text, cid
    assert "\r" not in text  # a line ending of CommonMark's inside a cell or heading breaks it
    for table in markdown_tables(text):
        assert len(table) >= 2 and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", table[1]), table
        assert all(row.rstrip().endswith("|") for row in table), table
        widths = {len(cells(row)) for row in table}
        assert len(widths) == 1, table


def markdown_tables(text: str) -> list[list[str]]:
    tables, cur = [], []
    for ln in re.split(r"\r\n|\r|\n", text):  # CommonMark's line endings
        if ln.startswith("|"):
            cur.append(ln)
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


def cells(row: str) -> list[str]:
    """A Markdown table row's cells: split on the pipes not escaped with a backslash."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def test_code_in_any_number_field_is_refused_not_run(tmp_path, monkeypatch, capsys):
    fa.register(monkeypatch)
    monkeypatch.chdir(tmp_path)
    payload = "__import__('os').system('touch PWNED')"
    fields = [{"inputs": [[payload, 1.0]]}, {"targets": [[payload, 0.0]]},
              {"params": {"label_smoothing": payload}}, {"params": {"weight": [[1.0, payload]]}},
              {"params": {"pos_weight": payload}}]
    for over in fields:
        (tmp_path / "cases.json").write_text(doc(case(**over)))
        with pytest.raises(CaseFileError) as ei:
            load_cases(tmp_path / "cases.json")
        assert payload in str(ei.value) and len(str(ei.value).splitlines()) == 1
        rc, err, _ = run_cli(["run", "--frameworks", "faulty", "--cases", "cases.json", "--out", "out"], capsys)
        one_error_line(rc, err, "'good'")
    assert sorted(os.listdir(tmp_path)) == ["cases.json"]


# --- fuzz: parse_cases and load_cases never raise anything but a one-line CaseFileError ---------------
@functools.lru_cache(maxsize=None)
def seed_docs() -> tuple[dict, ...]:
    """Small valid case documents: corpus cases of at most 16 input elements, one per document
    (built when the fuzz first draws, not at collection)."""
    from cases.generator import build_corpus

    docs = [{"cases": [c.to_json()]} for c in build_corpus(0, exhaustive=False, found=False) if c.inputs.size <= 16]
    return tuple(docs[::3])


@st.composite
def seed_doc(draw) -> dict:
    docs = seed_docs()
    return copy.deepcopy(docs[draw(st.integers(0, len(docs) - 1))])
KEYS = sorted(casefile.CASE_KEYS | {"cases", "shape", "values"} | set(PARAM_KINDS))
LEAVES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 0, -1, 1, 2, 3]),
    st.floats(allow_nan=False),  # a JSON number (1e400 reads as inf)
    st.text(max_size=8),
    st.sampled_from(["inf", "-inf", "nan", "-0.0", "0x1p-149", "0x1p99999", "1e400", "", "sigmoid", "softmax",
                     "sparse_softmax", "nce", "mean", "none", "sum", "float32", "bfloat16", "int_inputs",
                     "\ud800", "x\u2028y"]),
    st.sampled_from([casefile.BareConstant("NaN"), casefile.BareConstant("Infinity"),
                     casefile.BareConstant("-Infinity")]),
)
JSONISH = st.recursive(LEAVES, lambda kids: st.lists(kids, max_size=4)
                       | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), kids, max_size=4),
                       max_leaves=10)
TRIED = {"documents": 0, "documents accepted": 0, "files": 0, "files accepted": 0}


@pytest.fixture(scope="module", autouse=True)
def _print_fuzz_counts():
    yield
    if TRIED["documents"] or TRIED["files"]:  # run with -s to see it
        print(f"\nfuzzed case-file inputs: {TRIED}")


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def _set(root, path, value):
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _retype(draw, v):
    """v as a value of another JSON type, near what it was."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return draw(st.sampled_from([str(v), [v], True, None]))
    if isinstance(v, str):
        return draw(st.sampled_from([1.0, [v], {v: v}, True]))
    if isinstance(v, list):
        return draw(st.sampled_from([v[0] if v else None, {"shape": [len(v)], "values": v}, {"values": v}]))
    if isinstance(v, dict):
        return list(v.values())
    return 0


@st.composite
def mutated_docs(draw):
    root = draw(seed_doc())
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(root))
        path = draw(st.sampled_from(paths))
        node = _get(root, path)
        op = draw(st.sampled_from(["delete", "replace", "retype", "truncate", "nest", "duplicate", "rename"]))
        if op == "delete" and path:
            parent = _get(root, path[:-1])
            del parent[path[-1]]
        elif op == "replace":
            root = _set(root, path, draw(JSONISH))
        elif op == "retype":
            root = _set(root, path, _retype(draw, node))
        elif op == "truncate" and isinstance(node, list) and node:
            del node[draw(st.integers(0, len(node) - 1)):]
        elif op == "nest":
            for _ in range(draw(st.sampled_from([1, 2, 3, 30, 63, 64, 65, 80]))):
                node = [node]
            root = _set(root, path, node)
        elif op == "duplicate" and isinstance(node, list) and node:
            node.append(copy.deepcopy(node[draw(st.integers(0, len(node) - 1))]))
        elif op == "rename" and path and isinstance(_get(root, path[:-1]), dict):
            parent = _get(root, path[:-1])
            parent[draw(st.sampled_from(KEYS))] = parent.pop(path[-1])
    return root


DEFAULT_APIS = adapters.all_apis(adapters.DEFAULT_FRAMEWORKS)


def _accepted(cases) -> None:
    """What parse_cases accepts can be planned and written back and read again."""
    assert cases and all(isinstance(c, casefile.Case) for c in cases)
    runner.plan(cases, DEFAULT_APIS, DTYPES)
    again = parse_cases(json.loads(dump_cases(cases)))
    assert [c.id for c in again] == [c.id for c in cases]


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                    HealthCheck.filter_too_much])
@given(mutated_docs())
def test_fuzz_parse_cases(d):
    TRIED["documents"] += 1
    try:
        cases = parse_cases(d, "fuzz.json")
    except CaseFileError as e:
        msg = str(e)
        assert msg.startswith("fuzz.json") and len(msg.splitlines()) == 1, msg
        return
    TRIED["documents accepted"] += 1
    _accepted(cases)


def _text_of(d) -> str:
    return json.dumps(d, default=repr, allow_nan=True)


@st.composite
def mutated_bytes(draw):
    data = bytearray(_text_of(draw(seed_doc() | mutated_docs())).encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "bare", "encode"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"[", b"]", b"{", b"}", b",", b'"', b"\\", b"NaN", b"-Infinity", b"1e999",
                                              b"\xff", b"\xc3", b"\x00", b"\\ud800", b"\xef\xbb\xbf", b"9" * 30]))
        elif op == "truncate":
            del data[i:]
        elif op == "bare":
            data = bytearray(data.replace(b'"nan"', b"NaN").replace(b'"inf"', b"Infinity"))
        elif op == "encode":
            codec = draw(st.sampled_from(["utf-16", "latin-1", "utf-8-sig"]))
            data = bytearray(bytes(data).decode("utf-8", "replace").encode(codec, "replace"))
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=mutated_bytes())
def test_fuzz_load_cases_bytes(fuzz_dir, data):
    TRIED["files"] += 1
    path = fuzz_dir / "fuzz.json"
    path.write_bytes(data)
    try:
        cases = load_cases(path)
    except CaseFileError as e:
        msg = str(e)
        assert msg.startswith(str(path)) and len(msg.splitlines()) == 1, msg
        return
    TRIED["files accepted"] += 1
    _accepted(cases)
