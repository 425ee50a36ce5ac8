"""Test set-up: 8 fake CPU devices so sharding tests run anywhere (set before jax is imported);
the prelude that hides the training stack from a subprocess."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

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
  built by the first run that needs it."""
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
