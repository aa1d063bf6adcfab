# Two commands on a fresh machine: `make report` and `make test`.
# Both create .venv (pinned by requirements.lock) on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONHASHSEED := 0

.PHONY: all venv report test test-fast clean

all: test

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	@touch $(STAMP)

venv: $(STAMP)

## Full default run: every framework, built-in corpus, every dtype -> reports/latest/,
## its site -> reports/latest/site/, and the committed copy of the site -> reports/published/
report: $(STAMP)
	$(BIN)/xentc run --out reports/latest
	$(BIN)/xentc report reports/latest
	$(BIN)/xentc report reports/latest --out reports/published

## Unit tests of the reference and harness, then the conformance suite.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

clean:
	rm -rf reports/latest reports/browser .pytest_cache .hypothesis
