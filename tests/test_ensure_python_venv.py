"""make setup's first check (tools/ensure_python_venv.sh) against fake pythons, apt-get and sudo.

Every command the script may run is a shim on a PATH that holds nothing else, so nothing is
installed: the fake apt-get logs its arguments and "installs" the venv module by creating a file
that the fake python looks for.
"""

import os
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "ensure_python_venv.sh")
BASH = "/bin/bash"

# $FAKE_VERSION is "major minor"; the venv module exists once $SHIMS/venv_installed does.
_FAKE_PYTHON = """#!/bin/bash
case "$2" in
  *version_info*) echo "$FAKE_VERSION" ;;
  *ensurepip*) [ -e "$SHIMS/venv_installed" ] ;;
esac
"""
_FAKE_APT = """#!/bin/bash
echo "apt-get $*" >> "$SHIMS/log"
if [ "$1" = install ]; then : > "$SHIMS/venv_installed"; fi
"""
_FAKE_SUDO = """#!/bin/bash
echo "sudo" >> "$SHIMS/log"
exec "$@"
"""
_FAKE_ID = """#!/bin/bash
echo "$FAKE_UID"
"""


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def _run(tmp_path, version="3 11", has_venv=False, uid=1000, sudo=True, apt=True):
  """Runs the script with PYTHON=python3 (the fake); returns (exit code, stderr, apt/sudo log)."""
  shims = tmp_path / "bin"
  shims.mkdir()
  _write(shims / "python3", _FAKE_PYTHON)
  _write(shims / "id", _FAKE_ID)
  os.symlink("/usr/bin/env", shims / "env")
  if sudo:
    _write(shims / "sudo", _FAKE_SUDO)
  if apt:
    _write(shims / "apt-get", _FAKE_APT)
  if has_venv:
    (shims / "venv_installed").touch()
  environment = {"PATH": str(shims), "PYTHON": "python3", "SHIMS": str(shims),
                 "FAKE_VERSION": version, "FAKE_UID": str(uid)}
  result = subprocess.run([BASH, SCRIPT], env=environment, capture_output=True, text=True,
                          timeout=30)
  log = (shims / "log").read_text().splitlines() if (shims / "log").exists() else []
  return result.returncode, result.stderr, log


def test_a_good_python_installs_nothing(tmp_path):
  assert _run(tmp_path, has_venv=True) == (0, "", [])


@pytest.mark.parametrize("version", ["3 9", "2 7"])
def test_a_too_old_python_is_refused_before_any_install(tmp_path, version):
  code, error, log = _run(tmp_path, version=version)
  assert code == 1 and log == []
  assert f"python3 is Python {version.replace(' ', '.')}; kdpose needs Python >= 3.11" in error


def test_a_missing_python_says_what_to_install(tmp_path):
  (tmp_path / "bin").mkdir()
  result = subprocess.run([BASH, SCRIPT], env={"PATH": str(tmp_path / "bin"), "PYTHON": "nope"},
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 1 and "nope not found" in result.stderr


@pytest.mark.parametrize("uid, expected", [
    (0, ["apt-get update -qq", "apt-get install -y -qq --no-install-recommends python3.12-venv"]),
    (1000, ["sudo", "apt-get update -qq", "sudo",
            "apt-get install -y -qq --no-install-recommends python3.12-venv"]),
])
def test_a_missing_venv_module_is_installed_with_sudo_when_not_root(tmp_path, uid, expected):
  assert _run(tmp_path, version="3 12", uid=uid) == (
      0, "python3 has no venv module: installing python3.12-venv.\n", expected)


@pytest.mark.parametrize("sudo, apt, message", [
    (False, True, "Run: apt-get install python3.11-venv (as root)"),
    (True, False, "there is no apt-get to install it"),
])
def test_a_missing_venv_module_that_cannot_be_installed_says_what_to_run(tmp_path, sudo, apt,
                                                                         message):
  code, error, log = _run(tmp_path, sudo=sudo, apt=apt)
  assert code == 1 and log == [] and message in error
