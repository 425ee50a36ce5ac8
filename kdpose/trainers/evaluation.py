"""Evaluation of a model on a split: predictions gathered over hosts, then the viewpoint report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from kdpose import metrics, sharding
from kdpose.data import pipeline

# What the eval step reads from a batch.
_EVAL_KEYS = ("image", "box", "viewpoint", "points")


def predict_split(eval_step: Callable, variables: Any, data: pipeline.SplitData, *,
                  global_batch_size: int, mesh: Mesh) -> dict[str, np.ndarray]:
  """Runs the jitted ``eval_step(variables, batch)`` over every kept record of ``data``.

  Returns numpy arrays in record order: viewpoint ``[n, 3]`` and confidence ``[n, 3]`` of the
  predictions, error ``[n]`` (degrees), and the labels ``target [n, 3]`` (degrees).
  """
  loader = pipeline.BatchLoader(data)
  outputs = []
  try:
    for batch in pipeline.eval_batches(
        loader, global_batch_size=global_batch_size, process_index=jax.process_index(),
        process_count=jax.process_count()):
      global_batch = sharding.host_to_global({k: batch[k] for k in _EVAL_KEYS}, mesh)
      out = eval_step(variables, global_batch)
      out["target"] = global_batch["viewpoint"]
      outputs.append(multihost_utils.process_allgather(out, tiled=True))
  finally:
    loader.close()
  num_records = len(data.indices)
  return {key: np.concatenate([o[key] for o in outputs])[:num_records] for key in outputs[0]}


def evaluate_split(eval_step: Callable, variables: Any, data: pipeline.SplitData, *,
                   global_batch_size: int, mesh: Mesh) -> tuple[dict, dict[str, np.ndarray]]:
  """The ``metrics.viewpoint_report`` of ``data`` and the predictions behind it (the
  ``predict_split`` arrays and ``category [n]``, the records' category names)."""
  predictions = predict_split(eval_step, variables, data, global_batch_size=global_batch_size,
                              mesh=mesh)
  predictions["category"] = data.categories
  report = metrics.viewpoint_report(predictions["error"], data.categories,
                                    novel_categories=data.novel_categories)
  return report, predictions


def report_scalars(report: dict, prefix: str) -> dict[str, float]:
  """Headline numbers of a report as flat scalars, e.g. ``eval/test/novel/acc30``."""
  return {f"{prefix}/{group}/{key}": report[group][key]
          for group in ("mean", "base", "novel", "pooled") for key in ("acc30", "med_err")
          if np.isfinite(report[group][key])}


def report_path(workdir: str, stage: str, split: str) -> str:
  return os.path.join(workdir, "eval", f"{stage}_{split}.json")


def write_report(report: dict, path: str) -> None:
  """Writes the JSON report atomically (process 0 only): never a half-written file."""
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial = path + ".partial"
  with open(partial, "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
  os.replace(partial, path)
