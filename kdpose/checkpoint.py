"""Orbax checkpoints of a stage: named items ``state`` (the TrainState) and ``meta`` (JSON).

Orbax writes each step into a temporary directory and renames it when complete, so a killed
run never leaves a checkpoint that reads as complete; restore takes the latest finished step.
A complete step can still be damaged afterwards (a truncated or overwritten file, a deleted
item): restore then falls back to the step before, and a training run sets the damaged one
aside (``<step>.damaged-<unix time>``, which orbax ignores) so that it can save that step again.
Every process calls save/restore (multi-host); orbax decides who writes what.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from kdpose import files


class DamagedCheckpointError(ValueError):
  """A complete checkpoint step that does not read back (or no step that does)."""


def _first_line(error: Exception, limit: int = 300) -> str:
  """The start of ``error``'s message (tensorstore appends its whole JSON spec)."""
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  return text if len(text) <= limit else text[:limit] + " ..."


def _leaf_name(path) -> str:
  """``state.opt_state[1]`` -> ``"opt_state.1"``: the names orbax gives the saved arrays."""
  return ".".join(str(getattr(key, "name", getattr(key, "key", getattr(key, "idx", key))))
                  for key in path)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {_leaf_name(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(leaf, "shape")}


def layout_differences(saved: Any, abstract_state: Any) -> list[str]:
  """Why ``abstract_state`` cannot be restored from the ``saved`` metadata tree (empty if it
  can): arrays only one side has, arrays of another shape."""
  saved, wanted = _shapes(saved), _shapes(abstract_state)
  return ([f"{k}: saved {saved[k]}, model {wanted[k]}" for k in sorted(saved.keys() & wanted.keys())
           if saved[k] != wanted[k]]
          + [f"{k}: not saved" for k in sorted(wanted.keys() - saved.keys())]
          + [f"{k}: saved, not in the model" for k in sorted(saved.keys() - wanted.keys())])


def has_steps(directory: str) -> bool:
  """Whether ``directory`` holds a complete checkpoint step (readable or not)."""
  if not epath.Path(directory).is_dir():
    return False
  checkpoints = StageCheckpoints(directory, read_only=True)
  steps = checkpoints.all_steps()
  checkpoints.close()
  return bool(steps)


class StageCheckpoints:
  """The checkpoints of one training stage in ``directory``."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, read_only: bool = False):
    self.directory = files.absolute(directory)
    if read_only and not epath.Path(self.directory).is_dir():
      raise FileNotFoundError(f"No checkpoint directory {self.directory}.")
    self._read_only = read_only
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only)
    # Handlers named up front, so that a step's metadata reads before anything is restored.
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    """The newest complete step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves asynchronously; ``wait()`` before relying on it."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores ``step`` into the abstract (sharded) target tree; by default the latest step
    that reads back whole, warning about each damaged one after it.

    Raises ``ValueError`` when a step was written for another model (no fallback: every step
    of the directory would be), ``DamagedCheckpointError`` when ``step`` (or, by default, every
    step) is damaged.
    """
    if step is not None:
      return self._restore(abstract_state, step)
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
    damaged = []
    for candidate in steps:
      try:
        restored = self._restore(abstract_state, candidate)
      except DamagedCheckpointError as error:
        logging.warning("%s; falling back to the step before.", error)
        damaged.append(f"step {candidate}: {_first_line(error.__cause__)}")
        continue
      self._set_aside(steps[:len(damaged)])
      return restored
    raise DamagedCheckpointError(
        f"No checkpoint in {self.directory} reads back ({'; '.join(damaged)}). Refusing to "
        "start over on top of them: move the directory away to train this stage from scratch.")

  def _restore(self, abstract_state: Any, step: int) -> tuple[Any, dict[str, Any]]:
    where = f"Checkpoint {self.directory}/{step}"
    try:
      saved = self._manager.item_metadata(step)
      if "meta" not in saved:
        raise FileNotFoundError("its item 'meta' is missing")
      differences = layout_differences(saved["state"], abstract_state)
    except Exception as error:  # tensorstore reports unreadable bytes in several types
      raise DamagedCheckpointError(f"{where} is damaged: {_first_line(error)}") from error
    if differences:
      raise ValueError(
          f"{where} does not match the model of this config (different sizes, or written by "
          f"another stage): {'; '.join(differences[:5])}"
          + (f" (and {len(differences) - 5} more)." if len(differences) > 5 else "."))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as error:  # a bare Exception for chunks that do not decode
      raise DamagedCheckpointError(f"{where} is damaged: {_first_line(error)}") from error
    return restored["state"], restored["meta"]

  def _set_aside(self, steps: list[int]) -> None:
    """Renames the damaged ``steps`` out of orbax's sight (writable managers only), so that a
    resumed run can save those steps again."""
    if self._read_only or not steps:
      return
    multihost_utils.sync_global_devices("kdpose: damaged checkpoints read")
    if jax.process_index() == 0:
      for step in steps:
        directory = epath.Path(self.directory)
        (directory / str(step)).rename(directory / f"{step}.damaged-{int(time.time())}")
    multihost_utils.sync_global_devices("kdpose: damaged checkpoints set aside")
    self._manager.reload()

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    """Only the JSON metadata of ``step`` (default: latest)."""
    step = self.latest_step() if step is None else step
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
