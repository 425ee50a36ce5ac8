"""Pictures of an evaluation, written beside its JSON report (and returned for TensorBoard).

  acc_by_category: Acc@30 per category, bars coloured base / novel, with each group's mean.
  errors: histogram and cumulative share of the geodesic errors, base vs novel.
  worst_best: the worst and the best predictions, predicted axes solid, ground truth dashed.

Matplotlib draws on its Agg canvas directly (no pyplot, no global backend state).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from kdpose import augment, files, visualize
from kdpose.data import pipeline

DPI = 100
GROUP_COLORS = {"base": "#4c72b0", "novel": "#dd8452", "all": "#4c72b0"}
NUM_EXAMPLES = 8  # worst and best predictions shown.
DISPLAY_SIZE = 128  # pixels; example crops are resized to this before the axes are drawn.
_HIST_BINS = np.arange(0.0, 185.0, 5.0)  # degrees.


class Plot(NamedTuple):
  """A written picture: its PNG path and its pixels, uint8 ``[H, W, 3]``."""

  path: str
  image: np.ndarray


def _pixels(figure: Figure) -> np.ndarray:
  """The figure rendered to uint8 ``[H, W, 3]`` (figsize x DPI pixels)."""
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def acc_by_category_figure(report: dict[str, Any]) -> np.ndarray:
  """Bars of Acc@30 (%) per category, base categories first, and the base / novel means."""
  rows = sorted(report["per_category"].items(), key=lambda kv: (kv[1]["novel"], kv[0]))
  figure = Figure(figsize=(max(6.0, 0.3 * len(rows) + 2.0), 4.5), dpi=DPI, layout="constrained")
  ax = figure.add_subplot()
  positions = np.arange(len(rows))
  groups = ["novel" if row["novel"] else "base" for _, row in rows]
  ax.bar(positions, [row["acc30"] for _, row in rows],
         color=[GROUP_COLORS[g] for g in groups])
  for group in ("base", "novel"):
    if report[group]["num_categories"]:
      ax.axhline(report[group]["acc30"], color=GROUP_COLORS[group], linestyle="--",
                 label=f"{group} mean {report[group]['acc30']:.1f}% "
                       f"({report[group]['num_categories']} categories)")
  ax.set_xticks(positions, [name for name, _ in rows], rotation=90, fontsize=8)
  ax.set_xlim(-0.6, len(rows) - 0.4)
  ax.set_ylim(0.0, 118.0)  # Headroom: the legend must not cover bars near 100%.
  ax.set_yticks(np.arange(0, 101, 20))
  ax.set_ylabel("Acc@30 (%)")
  ax.set_title(f"Acc@30 per category (mean {report['mean']['acc30']:.1f}%)")
  ax.legend(loc="upper right", fontsize=8)
  return _pixels(figure)


def _novel_names(report: dict[str, Any]) -> list[str]:
  return [name for name, row in report["per_category"].items() if row["novel"]]


def _error_groups(errors: np.ndarray, categories: np.ndarray, report: dict[str, Any]
                  ) -> dict[str, np.ndarray]:
  is_novel = np.isin(categories, _novel_names(report))
  if not is_novel.any():
    return {"all": errors}
  return {name: errors[mask] for name, mask in (("base", ~is_novel), ("novel", is_novel))
          if mask.any()}


def errors_figure(errors: np.ndarray, categories: np.ndarray, report: dict[str, Any]
                  ) -> np.ndarray:
  """Histogram (% of each group per 5 degree bin) and CDF of geodesic errors in degrees."""
  figure = Figure(figsize=(10.0, 4.0), dpi=DPI, layout="constrained")
  hist_ax, cdf_ax = figure.subplots(1, 2)
  for group, values in _error_groups(errors, categories, report).items():
    color, label = GROUP_COLORS[group], f"{group} (n={values.size})"
    hist_ax.hist(values, bins=_HIST_BINS, weights=np.full(values.size, 100.0 / values.size),
                 histtype="step", linewidth=1.5, color=color, label=label)
    ordered = np.sort(values)
    cdf_ax.plot(ordered, np.arange(1, values.size + 1) * 100.0 / values.size, color=color,
                label=f"{label}: Acc@30 {np.mean(values <= 30.0) * 100:.1f}%")
  for ax in (hist_ax, cdf_ax):
    ax.axvline(30.0, color="gray", linestyle=":", linewidth=1)
    ax.set_xlim(0.0, 180.0)
    ax.set_xlabel("geodesic error (degrees)")
    ax.legend(fontsize=8)
  hist_ax.set_ylabel("% of samples per 5° bin")
  hist_ax.set_title("Error histogram")
  cdf_ax.set_ylim(0.0, 100.0)
  cdf_ax.set_ylabel("% of samples with error ≤ x")
  cdf_ax.set_title("Cumulative share")
  return _pixels(figure)


def _example(image: np.ndarray, predicted, target) -> np.ndarray:
  picture = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB").resize(
      (DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.BILINEAR)
  return visualize.draw_viewpoint_axes(np.asarray(picture), predicted, reference=target)


def worst_best_figure(predictions: dict[str, np.ndarray], categories: np.ndarray,
                      report: dict[str, Any], images_fn: Callable[[int], np.ndarray],
                      count: int = NUM_EXAMPLES) -> np.ndarray:
  """Two rows: the ``count`` largest errors, then the ``count`` smallest, each captioned with
  its category and error (degrees); predicted axes solid, ground truth dashed."""
  errors = np.asarray(predictions["error"])
  novel = set(_novel_names(report))
  count = min(count, errors.size)
  order = np.argsort(errors, kind="stable")
  figure = Figure(figsize=(1.6 * count + 0.4, 4.4), dpi=DPI, layout="constrained")
  for subfigure, title, picks in zip(
      figure.subfigures(2, 1), ("Worst predictions", "Best predictions"),
      (order[::-1][:count], order[:count]), strict=True):
    subfigure.suptitle(f"{title} (solid: predicted, dashed: ground truth)", fontsize=9)
    for ax, k in zip(np.atleast_1d(subfigure.subplots(1, count)), picks, strict=True):
      ax.imshow(_example(images_fn(int(k)), predictions["viewpoint"][k],
                         predictions["target"][k]))
      tag = " (novel)" if categories[k] in novel else ""
      ax.set_title(f"{categories[k]}{tag}\n{errors[k]:.1f}°", fontsize=8)
      ax.axis("off")
  return _pixels(figure)


def _save_png(image: np.ndarray, path: str) -> None:
  """Atomically: a reader never sees half a PNG."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  files.write_atomically(path, buffer.getvalue())


def write_evaluation_plots(report: dict[str, Any], predictions: dict[str, np.ndarray],
                           images_fn: Callable[[int], np.ndarray], out_dir: str, prefix: str, *,
                           categories: Sequence[str]) -> dict[str, Plot]:
  """Writes ``out_dir/<prefix>_<name>.png`` for each picture of the module docstring.

  Args:
    report: ``metrics.viewpoint_report`` of the predictions.
    predictions: ``evaluation.predict_split`` output in record order: viewpoint ``[n, 3]``,
      target ``[n, 3]`` (degrees), error ``[n]`` (degrees).
    images_fn: record index -> uint8 ``[H, W, 3]`` picture of that record, centred on the object
      (the axes start at its centre), e.g. ``record_crops(data)``.
    out_dir: directory (created if needed), usually ``workdir/eval``.
    prefix: file name prefix, e.g. ``student_test``.
    categories: ``[n]`` category name of each record (``SplitData.categories``).

  Returns:
    name -> ``Plot(path, image)``; the images can go to ``writer.write_images``.
  """
  errors = np.asarray(predictions["error"], np.float64)
  categories = np.asarray(categories).astype(str)
  if categories.shape != errors.shape:
    raise ValueError(f"kdpose/plots.py: {errors.size} predictions but {categories.size} "
                     "categories.")
  images = {
      "acc_by_category": acc_by_category_figure(report),
      "errors": errors_figure(errors, categories, report),
      "worst_best": worst_best_figure(predictions, categories, report, images_fn),
  }
  plots = {}
  for name, image in images.items():
    path = os.path.join(out_dir, f"{prefix}_{name}.png")
    _save_png(image, path)
    plots[name] = Plot(path, image)
  return plots


def record_crops(data: pipeline.SplitData, size: int = DISPLAY_SIZE
                 ) -> Callable[[int], np.ndarray]:
  """``images_fn`` for a split: record ``k`` (position in ``data.indices``) -> its exact box
  crop, uint8 ``[size, size, 3]`` (as evaluation crops it, at display resolution)."""

  def crop(k: int) -> np.ndarray:
    arrays = pipeline.example_arrays(data.source[int(data.indices[k])], data.pad_size)
    crops = augment.crop_images(arrays["image"][None], arrays["box"][None], size)
    return augment.to_uint8(crops)[0]

  return crop
