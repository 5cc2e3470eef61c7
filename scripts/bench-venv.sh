#!/usr/bin/env bash
# Makes the benchmark's virtualenv (BENCH_VENV) on the distribution's CPython, the interpreter a sidecar runs
# on in production: Debian's python3 and the python:3.11 images are built with profile-guided optimisation
# and link-time optimisation, which a default source build (pyenv, plain ./configure) is not, and the
# per-request cost of the proxies differs by 15-20 % between the two (bench/README.md). The project is installed into it by
# the main venv's pip (`pip --python`), so the interpreter needs neither ensurepip nor python3-venv's pip.
# Without a usable distribution interpreter the benchmark venv is made from the main venv's interpreter.
# Usage: scripts/bench-venv.sh MAIN_VENV BENCH_VENV [BENCH_PYTHON]
set -euo pipefail
main=${1:?main venv}
bench=${2:?benchmark venv}
python=${3:-/usr/bin/python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
  echo "bench-venv: $python is missing or older than 3.11; the benchmark runs on $main's interpreter" >&2
  python="$main/bin/python"
fi
rm -rf "$bench"
if ! "$python" -m venv --without-pip "$bench" 2>/dev/null; then
  # Debian without python3-venv: the venv module is there, but stdlib's ensurepip is not; --without-pip
  # avoids it. Any other failure is a real one.
  echo "bench-venv: could not create $bench with $python" >&2
  exit 1
fi
"$main/bin/pip" --python "$bench/bin/python" install --quiet -e '.[dev]'
echo "bench-venv: $bench on $("$bench/bin/python" -c 'import sys; print(sys.version.split()[0], sys._base_executable)')" >&2
