#!/usr/bin/env bash
# Builds the browser package: the library for wasm32-unknown-unknown (release), then the
# wasm-bindgen JS glue for ES modules into www/pkg/ (gitignored).
#
#   scripts/build-wasm.sh            # release build
#   CARGO_TARGET_DIR=... scripts/build-wasm.sh
#
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli 0.2.130 (the crate pins
# wasm-bindgen =0.2.130; the two must agree). wasm-opt is not run: Debian's binaryen breaks
# this output (see docs/TOOLCHAIN.md). Fails loudly on every missing piece.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

die() { echo "build-wasm: $*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found"
command -v wasm-bindgen >/dev/null \
  || die "wasm-bindgen not found: cargo install wasm-bindgen-cli --version 0.2.130"
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -qx wasm32-unknown-unknown \
    || die "target missing: rustup target add wasm32-unknown-unknown"
fi

want="$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)"
have="$(wasm-bindgen --version | awk '{print $2}')"
[ -n "$want" ] || die "Cargo.toml does not pin wasm-bindgen (= version)"
[ "$want" = "$have" ] \
  || die "wasm-bindgen-cli is $have but the crate pins $want: cargo install wasm-bindgen-cli --version $want"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
echo "build-wasm: cargo build --release --target wasm32-unknown-unknown --lib (target dir $target_dir)"
cargo build --release --target wasm32-unknown-unknown --lib

wasm="$target_dir/wasm32-unknown-unknown/release/moegraft.wasm"
[ -f "$wasm" ] || die "expected $wasm after the build"

out="$root/www/pkg"
rm -rf "$out"
mkdir -p "$out"
echo "build-wasm: wasm-bindgen --target web --out-dir www/pkg"
wasm-bindgen --target web --out-dir "$out" --out-name moegraft "$wasm"

for f in moegraft.js moegraft_bg.wasm; do
  [ -s "$out/$f" ] || die "wasm-bindgen did not write www/pkg/$f"
done
size="$(stat -c %s "$out/moegraft_bg.wasm")"
echo "build-wasm: www/pkg/moegraft_bg.wasm ($((size / 1024)) KiB) and www/pkg/moegraft.js written"
