#!/usr/bin/env bash
# Checks that $PYTHON (default python3) can make kdpose's virtual environment, before
# `make setup` runs `$PYTHON -m venv`: Python >= 3.11 (jax, flax and orbax need it), and its venv
# module with ensurepip, which Debian and Ubuntu ship apart (python3.X-venv). A missing venv
# package is installed with apt-get (through sudo when not root), as `make system-deps` installs
# the mesh packages; where that cannot be done, the error says what to run.
#
#   PYTHON=python3.12 tools/ensure_python_venv.sh
set -euo pipefail

PYTHON=${PYTHON:-python3}
MIN_MAJOR=3
MIN_MINOR=11

fail() {
  echo "error: $*" >&2
  exit 1
}

# Written for any Python, so that an old one reaches the version message instead of a syntax error.
version_of() {
  "$PYTHON" -c 'import sys; print("%d %d" % sys.version_info[:2])' 2> /dev/null
}

has_venv() {
  "$PYTHON" -c 'import ensurepip, venv' > /dev/null 2>&1
}

# Prints the command prefix that runs as root ("" or "sudo"); fails when there is none.
root_prefix() {
  if [ "$(id -u)" = 0 ]; then
    echo ""
  elif command -v sudo > /dev/null 2>&1; then
    echo "sudo"
  else
    return 1
  fi
}

command -v "$PYTHON" > /dev/null 2>&1 || fail "$PYTHON not found. kdpose needs Python" \
  ">= $MIN_MAJOR.$MIN_MINOR: install it (Debian: apt-get install python3 python3-venv) or" \
  "name one with make PYTHON=/path/to/python3.11."
version=$(version_of) || fail "$PYTHON does not run: $PYTHON -c 'import sys' failed."
read -r major minor <<< "$version"
if [ "$major" -lt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
  fail "$PYTHON is Python $major.$minor; kdpose needs Python >= $MIN_MAJOR.$MIN_MINOR (jax, flax" \
    "and orbax do). Install a newer one (Debian 12 has 3.11) and run make PYTHON=python3.11 ..."
fi

has_venv && exit 0
package="python$major.$minor-venv"
if ! command -v apt-get > /dev/null 2>&1; then
  fail "$PYTHON (Python $major.$minor) has no venv/ensurepip module, and there is no apt-get" \
    "to install it: install the venv module for that Python (Debian/Ubuntu: $package)."
fi
if ! sudo_prefix=$(root_prefix); then
  fail "$PYTHON (Python $major.$minor) has no venv/ensurepip module. Run:" \
    "apt-get install $package (as root), then make again."
fi
echo "$PYTHON has no venv module: installing $package." >&2
$sudo_prefix apt-get update -qq
# Through env: sudo would drop a plain variable assignment.
$sudo_prefix env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "$package"
has_venv || fail "$PYTHON still has no venv/ensurepip module after installing $package."
