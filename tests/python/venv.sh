#!/usr/bin/env bash
# Creates (or refreshes) the Python venv the test harness runs tools from: .venv-tests at the
# repository root, with tests/python/requirements.txt installed. Idempotent: when the stamp
# (hash of the requirements file and the interpreter's version) matches, it does nothing.
# `make test` runs it, and so does the harness (tests/it/support/s3.rs) before starting moto,
# so a bare `cargo test` works too. Concurrent runs are serialised by a lock on the
# requirements file. PYTHON picks the interpreter (default python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
req="$root/tests/python/requirements.txt"
venv="${FLUXBASE_TEST_VENV:-$root/.venv-tests}"
python="${PYTHON:-python3}"

command -v "$python" >/dev/null 2>&1 || {
  echo "error: $python not found; the tests need python3 (3.9+) with venv and pip" >&2
  exit 1
}
exec 9<"$req"
flock 9
want="$( { sha256sum <"$req"; "$python" --version 2>&1; } | sha256sum | cut -d' ' -f1)"
if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$want" ] && [ -x "$venv/bin/moto_server" ]; then
  exit 0
fi
echo "tests/python/venv.sh: installing tests/python/requirements.txt into $venv" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
# Written last: an interrupted install leaves no stamp and is redone next time.
echo "$want" >"$venv/.stamp"
