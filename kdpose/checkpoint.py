"""Orbax checkpoints of a stage: named items ``state`` (the TrainState) and ``meta`` (JSON).

Orbax writes each step into a temporary directory and renames it when complete, so a killed
run never leaves a checkpoint that reads as complete; restore takes the latest finished step.
Every process calls save/restore (multi-host); orbax decides who writes what.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class StageCheckpoints:
  """The checkpoints of one training stage in ``directory``."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(f"No checkpoint directory {self.directory}.")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

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
    """Restores ``step`` (default: latest) into the abstract (sharded) target tree."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, FileNotFoundError) as error:
      raise ValueError(
          f"Checkpoint {self.directory}/{step} does not match the model of this config "
          f"(different sizes, or written by another stage): {error}") from error
    return restored["state"], restored["meta"]

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    """Only the JSON metadata of ``step`` (default: latest)."""
    step = self.latest_step() if step is None else step
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
