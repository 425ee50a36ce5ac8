"""The tiny teacher stage as ``python -m kdpose.main`` in subprocesses, for the tests that kill
runs and split them over processes: how to start one, and what it leaves in its workdir.

Every run compiles at XLA's -O0 with one compilation cache per test session: about half the
compile time cold, none warm, and the same programs in every run of a test (so the comparisons
between runs compare the training logic, not two compilations).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import threading

import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = 4  # of the whole job: 1 process x 4, or 2 x 2 (tools/launch_local.py)
STAGE = "teacher"


def command(workdir: str, data_dir: str) -> list[str]:
  """The training command: 4 steps, a checkpoint every 2, a loss logged every step."""
  return [sys.executable, "-m", "kdpose.main", "--config", "configs/default.py:tiny",
          f"--workdir={workdir}", f"--config.stage={STAGE}",
          f"--config.dataset.data_dir={data_dir}", f"--config.{STAGE}.log_every=1"]


def env(cache_dir: str) -> dict[str, str]:
  """The environment of a run: 4 CPU devices, -O0, the session's compilation cache."""
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES} "
              "--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu",
              JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


class Run:
  """A started subprocess whose output lines a thread collects (``lines``) as they come."""

  def __init__(self, args: list[str], cache_dir: str):
    self.process = subprocess.Popen(args, cwd=REPO, env=env(cache_dir), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
    self.lines: list[str] = []
    self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout))
    self._reader.start()

  def wait(self, timeout: float) -> int:
    """The return code once the process and its output have ended."""
    try:
      code = self.process.wait(timeout)
    except subprocess.TimeoutExpired:
      self.process.kill()
      raise
    finally:
      self._reader.join()
    return code

  def text(self) -> str:
    return "".join(self.lines)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, STAGE, "checkpoints")


def writing_checkpoint(workdir: str) -> list[str]:
  """The checkpoint steps orbax is writing (``<step>.orbax-checkpoint-tmp*``) in the workdir."""
  return glob.glob(os.path.join(checkpoint_dir(workdir), "*.orbax-checkpoint-tmp*"))


def complete_steps(workdir: str) -> list[int]:
  """The steps whose checkpoint is complete (orbax renamed it to the bare step number)."""
  directory = checkpoint_dir(workdir)
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(name) for name in names if name.isdigit())


def final_state(workdir: str) -> dict:
  """The latest complete checkpoint's train state as a tree of numpy arrays (restored as such:
  the devices that wrote it, e.g. another process's, need not exist here)."""
  import jax

  path = os.path.join(checkpoint_dir(workdir), str(complete_steps(workdir)[-1]), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  saved = checkpointer.metadata(path).item_metadata.tree
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def scalars(workdir: str) -> dict[str, dict[int, float]]:
  """Tag -> step -> value in the run's TensorBoard files (a later file's value wins)."""
  import tensorflow as tf

  values = {}
  files = sorted(glob.glob(os.path.join(workdir, "tensorboard", STAGE, "events.out.tfevents.*")))
  for path in files:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          values.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def event_file_pids(workdir: str) -> list[int]:
  """The process ids in the names of the run's TensorBoard files (``...<host>.<pid>.<n>.v2``)."""
  files = glob.glob(os.path.join(workdir, "tensorboard", STAGE, "events.out.tfevents.*"))
  return sorted(int(re.search(r"\.(\d+)\.\d+\.v2$", path).group(1)) for path in files)


def records_read(log: str, step: int) -> list[int]:
  """The records a process logged reading for ``step`` (``loop._log_shard``)."""
  found = re.findall(rf"reads records \[([\d, ]+)\] of step {step}'s global batch", log)
  assert len(found) == 1, f"{len(found)} shard lines for step {step} in the log"
  return [int(x) for x in found[0].split(",")]


def assert_trees_equal(actual, expected, atol: float = 0.0) -> float:
  """Asserts that two trees of arrays are equal (exactly, or within ``atol``); returns the
  largest absolute difference of any float leaf."""
  import jax

  largest = [0.0]

  def check(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if atol:
      np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    else:
      np.testing.assert_array_equal(a, b)
    if a.dtype.kind == "f" and a.size:
      largest[0] = max(largest[0], float(np.max(np.abs(a.astype(np.float64) - b))))

  jax.tree.map(check, actual, expected)
  return largest[0]
