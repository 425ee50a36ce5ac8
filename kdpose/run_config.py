"""A run's config on disk: ``workdir/config.json``, what evaluation and export rebuild from.

A resumed run must go on computing what it started computing: ``record_config`` refuses a
launch whose config changes the result, unless ``allow_config_change`` (then the change is
appended to ``workdir/config_changes.jsonl``).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

import ml_collections
from etils import epath

from kdpose import files

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
# Keys a resumed run may change: how often it logs, evaluates and saves, how many checkpoints
# it keeps, where its data (and its feature cache) lives, how many threads and processes read
# its batches (the batches are the same), the size of evaluation batches (every record is
# evaluated once whatever it is), which stages this launch runs, and the switch itself.
FREE_KEYS = frozenset(
    [f"{stage}.{key}" for stage in ("teacher", "student")
     for key in ("log_every", "eval_every", "checkpoint_every", "max_to_keep",
                 "head_warmup.cache_dir")]
    + ["dataset.data_dir", "dataset.manual_dir", "dataset.loader_threads",
       "dataset.loader_workers", "eval_batch_size", "stage", "allow_config_change"])


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``workdir/config.json`` atomically (call on process 0 only)."""
  files.write_atomically(os.path.join(workdir, CONFIG_FILE),
                         config.to_json_best_effort(indent=2, sort_keys=True))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with; a clear error when ``workdir`` is not a run."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"{path} not found: {workdir} is not a kdpose training workdir.")
  try:
    return ml_collections.ConfigDict(json.loads(epath.Path(path).read_text()))
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON ({error}).") from error


def _flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Dotted key -> value of every leaf, in JSON form (tuples as lists)."""
  def walk(tree, prefix):
    for key, value in tree.items():
      if isinstance(value, dict):
        yield from walk(value, f"{prefix}{key}.")
      else:
        yield f"{prefix}{key}", value
  return dict(walk(json.loads(config.to_json_best_effort()), ""))


def config_changes(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict
                   ) -> dict[str, tuple[Any, Any]]:
  """Dotted key -> (saved, new) value for each key of both configs (``FREE_KEYS`` aside) whose
  value differs. Keys only one of them has (added or dropped by the code since) are not
  compared: ``record_config`` logs them."""
  old, new = _flat(saved), _flat(config)
  return {key: (old[key], new[key]) for key in sorted(old.keys() & new.keys())
          if key not in FREE_KEYS and old[key] != new[key]}


def record_config(config: ml_collections.ConfigDict, workdir: str, *, resuming: bool,
                  write: bool = True) -> None:
  """Saves ``workdir/config.json``; on a resume (``resuming``: the workdir has checkpoints),
  first compares ``config`` with the saved one.

  A change of what the run computes is refused with a ValueError naming each key (old -> new),
  unless ``config.allow_config_change``: then it is appended to ``workdir/config_changes.jsonl``
  (a line: time, key -> [old, new]). Every process checks; only the one with ``write`` writes.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if resuming and epath.Path(path).is_file():
    saved = load_run_config(workdir)
    unmatched = sorted(_flat(saved).keys() ^ _flat(config).keys())
    if unmatched:
      logging.warning("%s and this config differ in which keys they have (not compared): %s",
                      path, unmatched)
    changes = config_changes(saved, config)
    listing = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    if changes and not config.get("allow_config_change", False):
      raise ValueError(
          f"{path}: resuming this run with another config would change its result ({listing}). "
          "Rerun with the saved values, use a new --workdir, or pass --config.allow_config_change"
          f"=True to go on with the change (recorded in {CHANGES_FILE}).")
    if changes and write:
      logging.warning("%s: the run goes on with a changed config: %s", path, listing)
      # Read and rewritten whole (buckets do not append).
      changes_path = epath.Path(workdir) / CHANGES_FILE
      earlier = changes_path.read_text() if changes_path.exists() else ""
      files.write_atomically(str(changes_path), earlier + json.dumps(
          {"time": datetime.datetime.now().astimezone().isoformat(),
           "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
  if write:
    save_config(config, workdir)
