"""Viewpoint metrics: Acc@30 and median geodesic error, per category, then averaged.

Host-side numpy (float64); the training loop feeds it predictions gathered from the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdpose import geometry

ACC_THRESHOLD_DEG = 30.0


def _summary(errors: np.ndarray, threshold: float) -> dict[str, float]:
  """Acc@threshold in percent, median error in degrees and the count of ``errors [n]``."""
  return {
      "acc30": float(np.mean(errors <= threshold) * 100.0),
      "med_err": float(np.median(errors)),
      "count": int(errors.size),
  }


def _mean_over(per_category: dict[str, dict[str, float]], names: Sequence[str]) -> dict:
  """Unweighted mean of Acc@30 and MedErr over the named categories (empty -> NaN)."""
  if not names:
    return {"acc30": float("nan"), "med_err": float("nan"), "num_categories": 0}
  return {
      "acc30": float(np.mean([per_category[n]["acc30"] for n in names])),
      "med_err": float(np.mean([per_category[n]["med_err"] for n in names])),
      "num_categories": len(names),
  }


def angle_errors(pred, target) -> np.ndarray:
  """Absolute error of each angle, ``[n, 3]`` in degrees, between viewpoints ``pred`` and
  ``target`` ``[n, 3]`` (degrees; in the order of ``geometry.ANGLE_NAMES``). Azimuth and
  in-plane errors are taken on the circle, in [0, 180]."""
  diff = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
  return np.abs(np.stack([geometry.wrap_degrees(diff[..., 0]), diff[..., 1],
                          geometry.wrap_degrees(diff[..., 2])], -1))


def viewpoint_report(
    errors,
    categories,
    novel_categories: Sequence[str] = (),
    threshold: float = ACC_THRESHOLD_DEG,
) -> dict:
  """Summarises geodesic errors per category.

  Args:
    errors: ``[n]`` geodesic rotation errors in degrees.
    categories: ``[n]`` category names of the samples.
    novel_categories: names of categories held out of training.
    threshold: accuracy threshold in degrees (30 for Acc@30).

  Returns:
    ``{"per_category": {name: {acc30 (%), med_err (deg), count, novel}}, "mean": headline
    numbers averaged over categories, "pooled": over all samples, "base": mean over base
    categories, "novel": mean over novel categories}``.
  """
  errors = np.asarray(errors, dtype=np.float64).reshape(-1)
  categories = np.asarray(categories).reshape(-1).astype(str)
  if errors.shape != categories.shape:
    raise ValueError(f"{errors.size} errors but {categories.size} categories.")
  if errors.size == 0:
    raise ValueError("viewpoint_report needs at least one sample.")
  if not np.all(np.isfinite(errors)):
    raise ValueError(f"{np.sum(~np.isfinite(errors))} non-finite errors.")
  novel = set(novel_categories)
  per_category = {}
  for name in sorted(set(categories.tolist())):
    per_category[name] = _summary(errors[categories == name], threshold)
    per_category[name]["novel"] = name in novel
  names = list(per_category)
  return {
      "per_category": per_category,
      "mean": _mean_over(per_category, names),
      "pooled": _summary(errors, threshold),
      "base": _mean_over(per_category, [n for n in names if n not in novel]),
      "novel": _mean_over(per_category, [n for n in names if n in novel]),
  }


def format_report(report: dict, title: str = "") -> str:
  """A plain-text table of a ``viewpoint_report``: one row per category, then the means."""
  lines = [title] if title else []
  lines.append(f"{'category':<20} {'n':>6} {'Acc@30':>8} {'MedErr':>8}")
  for name, row in report["per_category"].items():
    tag = " (novel)" if row["novel"] else ""
    lines.append(f"{name + tag:<20} {row['count']:>6} {row['acc30']:>8.2f} {row['med_err']:>8.2f}")
  for key in ("mean", "base", "novel", "pooled"):
    row = report[key]
    if row.get("num_categories", 1):
      lines.append(f"{'[' + key + ']':<20} {'':>6} {row['acc30']:>8.2f} {row['med_err']:>8.2f}")
  return "\n".join(lines)
