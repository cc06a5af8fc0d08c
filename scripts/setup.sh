# Shared by scripts/serve.sh and scripts/test.sh (sourced): installs the system packages the
# build needs when they are missing, then builds smallfirst in release.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# bindgen needs libclang itself, not only the clang driver.
# (libclang-cpp is a different library and does not count.)
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
  || compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null \
  || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null \
  || need+=(libclang-dev)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The ledger's tests run on a PostgreSQL server of their own (scripts/test.sh starts it).
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
# The eval report's test opens the page in a real browser.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "error: missing ${need[*]} (hint: sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found (hint: install Rust with rustup, then run this again)" >&2
  exit 1
fi

echo "building smallfirst (release; the first build compiles llama.cpp, ~10 minutes on 2 cores)" >&2
cargo build --release --locked -p smallfirst-cli
SMALLFIRST="$root/target/release/smallfirst"
export SMALLFIRST
