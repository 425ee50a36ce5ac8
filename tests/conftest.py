"""Test set-up, before jax is imported, inherited by the tests' subprocesses: the CPU platform
with 8 fake devices, so sharding tests run the same on any machine (a GPU, or the user's own
``XLA_FLAGS`` with another device count, cannot shrink the mesh); XLA:CPU's backend (LLVM)
optimisation level 0 unless ``XLA_FLAGS`` sets one, as the programs are tiny and compiling
them is most of the suite's time (XLA's HLO passes, fusion included, run as at the default
level 3; ``XLA_FLAGS=--xla_backend_optimization_level=3 make test`` tests that level); jax's
persistent compilation cache in a directory of this session, so the many runs that compile the
same programs (tiny runs in-process and in subprocesses) compile each once; the prelude that
hides the training stack from a subprocess."""

import atexit
import os
import shutil
import tempfile

import pytest  # (not jax: it must come after the environment below)

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
OPTIMIZATION_FLAG = "--xla_backend_optimization_level"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
_xla_flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
              if not flag.startswith(DEVICE_COUNT_FLAG)]
if not any(flag.startswith(OPTIMIZATION_FLAG) for flag in _xla_flags):
  _xla_flags.append(f"{OPTIMIZATION_FLAG}=0")
os.environ["XLA_FLAGS"] = " ".join([*_xla_flags, f"{DEVICE_COUNT_FLAG}=8"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="kdpose-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

# Python code that makes the training stack unimportable, as in an install of kdpose's core
# dependencies without the `train` extra; put it first in a `python -c` program. A None entry in
# sys.modules makes `import` raise ModuleNotFoundError and `importlib.util.find_spec` (how etils
# and others probe for TensorFlow) answer None, as for a package that is not installed.
_WITHOUT_TRAINING_STACK = """
import sys
for name in ("tensorflow", "tensorflow_datasets", "clu"):
  sys.modules[name] = None
"""


@pytest.fixture
def without_training_stack() -> str:
  """The prelude of a subprocess's program that hides tensorflow, tensorflow_datasets and clu."""
  return _WITHOUT_TRAINING_STACK


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """The TFDS data_dir of the tests' tiny synthetic_views dataset (configs/default.py:tiny),
  built once per session by the first test or run that needs it (each build takes seconds of
  rendering): every test of that dataset reads this one."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> str:
  """The JAX compilation cache of the session's ``python -m kdpose.main`` runs (cli_runs.py)."""
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="session")
def reference_cli_run(tmp_path_factory, data_dir, cli_cache) -> tuple[str, str]:
  """One uninterrupted ``python -m kdpose.main`` run of the tiny teacher stage, 1 process x 4
  devices: (workdir, its log)."""
  import cli_runs

  workdir = str(tmp_path_factory.mktemp("reference_run"))
  run = cli_runs.Run(cli_runs.command(workdir, data_dir), cli_cache)
  code = run.wait(timeout=600)
  assert code == 0, run.text()[-3000:]
  return workdir, run.text()
