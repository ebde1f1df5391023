#!/usr/bin/env bash
# Installs what building marionette needs on a fresh Debian machine with only
# Rust on it, and nothing it already has. Safe to run again: each step checks
# first and says what it does.
#
#   1. the Rust target wasm32-wasip2 (the guest is a wasip2 component);
#   2. a WASI C toolchain for QuickJS's C code (rquickjs-sys, under javy):
#      $WASI_SDK when it is set, otherwise Debian's clang-19, lld-19,
#      libclang-rt-19-dev-wasm32 and wasi-libc, arranged into the layout
#      rquickjs-sys expects (bin/clang, bin/ar, share/wasi-sysroot) under
#      target/wasi-sdk, with bin/clang a wrapper (see step 2);
#   3. with --python, the PyPI package `wasmtime` for the cross-language test.
#
# Prints the WASI_SDK folder to use as its last line.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'bootstrap: %s\n' "$*" >&2; }
want_python=0
for arg in "$@"; do
  case "$arg" in
    --python) want_python=1 ;;
    *) say "unknown option $arg (known: --python)"; exit 2 ;;
  esac
done

# 1. The wasm target.
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  say "rust target wasm32-wasip2: present"
else
  say "rust target wasm32-wasip2: installing with rustup"
  rustup target add wasm32-wasip2 >&2
fi

# 2. The WASI C toolchain.
#
# bin/clang is a wrapper that adds -D__GLIBC__: QuickJS-ng measures an
# allocation with malloc_usable_size only on C libraries it knows (glibc,
# macOS, Windows), and wasi-libc has it too. Without it QuickJS counts every
# allocation as 8 bytes, whatever its size, and neither its heap limit nor
# the pacing of its cycle collector works in the guest. No header of
# wasi-libc tests __GLIBC__; in QuickJS it selects <malloc.h> and
# malloc_usable_size and nothing else.
#
# After the caller's arguments, for QuickJS's speed (fib(25) in the guest
# about 20% faster, see bench/report):
#   -UEMSCRIPTEN  rquickjs-sys defines EMSCRIPTEN for WASI, and QuickJS then
#                 turns DIRECT_DISPATCH (its interpreter's computed goto)
#                 off; nothing else it selects applies to WASI, which
#                 QuickJS tests as __wasi__.
#   -mbulk-memory -mnontrapping-fptoint
#                 memcpy/memset as memory.copy/memory.fill, and double to
#                 integer conversions without a range check around each;
#                 the Rust side of the guest has both already (rustc's
#                 wasm32-wasip2 target enables them), so the component's
#                 requirements do not change.
#
# And one change to QuickJS's source, made on a copy as it is compiled
# (quickjs.c, which rquickjs-sys's build copies into its OUT_DIR, becomes
# quickjs/quickjs.marionette.c in this toolchain's folder, compiled with
# -iquote naming the original's folder so that its includes resolve as
# before): JSON.parse makes each number with js_number, which
# keeps an integer that fits 32 bits as an integer, instead of js_float64,
# which makes every number a double. The value is the same to JavaScript;
# to QuickJS's interpreter it is not: its arithmetic, comparisons and
# calls have fast paths for integers only, and every argument, input and
# host answer the guest parses is JSON. fib(25) called with its argument
# from JSON ran about 1.8x slower than with an integer literal (see
# docs/architecture.md, section 11). Where that line is not found exactly
# once (another QuickJS), the build stops and says so rather than compile
# QuickJS without it. Guarded by the bench crate's
# `direct::tests::json_integers_cost_what_integer_literals_cost` (wasm fuel,
# exact).
#
# The C objects are not rebuilt when only this wrapper changes (cargo does
# not look at the compiler's contents), so a changed wrapper drops the
# guest's built QuickJS: the next build compiles it again.
clang_wrapper() { # $1: the real clang
  cat <<WRAPPER
#!/bin/sh
# Written by scripts/bootstrap.sh (see there why).
json='s->token.u.num.val = js_float64(strtod('
for arg do
  shift
  case "\$arg" in
    */quickjs.c)
      if [ -f "\$arg" ]; then
        found=\$(grep -cF "\$json" "\$arg")
        if [ "\$found" != 1 ]; then
          echo "marionette's clang wrapper: \$arg has \$found lines '\$json', not 1: scripts/bootstrap.sh patches that line; see there" >&2
          exit 1
        fi
        copy="\$(dirname "\$0")/../quickjs/quickjs.marionette.c"
        mkdir -p "\${copy%/*}" || exit 1
        sed 's/s->token.u.num.val = js_float64(strtod(/s->token.u.num.val = js_number(strtod(/' "\$arg" >"\$copy" || exit 1
        set -- "\$@" -iquote "\${arg%/*}"
        arg=\$copy
      fi ;;
  esac
  set -- "\$@" "\$arg"
done
exec $1 -D__GLIBC__ "\$@" -UEMSCRIPTEN -mbulk-memory -mnontrapping-fptoint
WRAPPER
}
write_clang_wrapper() { # $1: folder, $2: the real clang
  local wrapper="$1/bin/clang" want
  want=$(clang_wrapper "$2")
  if [ -L "$wrapper" ] || [ ! -f "$wrapper" ] || [ "$(cat "$wrapper")" != "$want" ]; then
    rm -f "$wrapper"
    printf '%s\n' "$want" >"$wrapper"
    chmod +x "$wrapper"
    rm -rf "$target_dir"/guest/wasm32-wasip2/*/build/rquickjs-sys-* \
      "$target_dir"/guest/wasm32-wasip2/*/.fingerprint/rquickjs-sys-*
    say "WASI C toolchain: $wrapper wraps $2 (QuickJS measures its allocations, dispatches directly, parses JSON integers as integers)"
  fi
}
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
if [ -n "${WASI_SDK:-}" ] && [ "$WASI_SDK" != "$target_dir/wasi-sdk" ]; then
  for f in bin/clang bin/ar share/wasi-sysroot; do
    if [ ! -e "$WASI_SDK/$f" ]; then
      say "WASI_SDK=$WASI_SDK has no $f: point it at a WASI SDK, or unset it to use Debian's packages"
      exit 1
    fi
  done
  sdk=$target_dir/wasi-sdk
  mkdir -p "$sdk/bin" "$sdk/share"
  write_clang_wrapper "$sdk" "$WASI_SDK/bin/clang"
  ln -sfn "$WASI_SDK/bin/ar" "$sdk/bin/ar"
  ln -sfn "$WASI_SDK/share/wasi-sysroot" "$sdk/share/wasi-sysroot"
  say "WASI C toolchain: using WASI_SDK=$WASI_SDK, arranged in $sdk"
else
  pkgs=(clang-19 lld-19 llvm-19 libclang-rt-19-dev-wasm32 wasi-libc)
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
      say "missing ${missing[*]} and there is no apt-get: install a WASI SDK and set WASI_SDK to its folder"
      exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "WASI C toolchain: installing Debian packages ${missing[*]}"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2 || {
      say "apt-get could not install ${missing[*]}; install them by hand, or set WASI_SDK to a WASI SDK folder"
      exit 1
    }
  else
    say "WASI C toolchain: Debian packages present (${pkgs[*]})"
  fi
  sdk=$target_dir/wasi-sdk
  mkdir -p "$sdk/bin" "$sdk/share/wasi-sysroot/include" "$sdk/share/wasi-sysroot/lib"
  write_clang_wrapper "$sdk" /usr/bin/clang-19
  ln -sfn /usr/bin/llvm-ar-19 "$sdk/bin/ar"
  for triple in wasm32-wasi wasm32-wasip1 wasm32-wasip2; do
    ln -sfn /usr/include/wasm32-wasi "$sdk/share/wasi-sysroot/include/$triple"
    ln -sfn /usr/lib/wasm32-wasi "$sdk/share/wasi-sysroot/lib/$triple"
  done
  say "WASI C toolchain: arranged in $sdk"
fi

# 3. Python's wasmtime, for the cross-language test.
if [ "$want_python" -eq 1 ]; then
  if python3 -c 'import wasmtime.component' 2>/dev/null; then
    say "python wasmtime: present"
  else
    say "python wasmtime: installing from PyPI with pip"
    python3 -m pip install --quiet --disable-pip-version-check 'wasmtime>=50,<51' >&2
  fi
fi

echo "$sdk"
