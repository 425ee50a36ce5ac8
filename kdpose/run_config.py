"""A run's config on disk: ``workdir/config.json``, what evaluation and export rebuild from."""

from __future__ import annotations

import json
import os

import ml_collections

CONFIG_FILE = "config.json"


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``workdir/config.json`` atomically (call on process 0 only)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".partial", "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + ".partial", path)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with; a clear error when ``workdir`` is not a run."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a kdpose training workdir.")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON ({error}).") from error
