r"""The distillation ablation: one teacher per seed, then students with each KD variant.

  python tools/ablation.py --config configs/default.py --seeds 3 --workdir runs/ablation
  python tools/ablation.py --config configs/objectnet3d.py --seeds 3 --workdir runs/ablation_on3d \
      --config.dataset.manual_dir=/path/to/ObjectNet3D

Every run lives in ``DIR/seed<S>/<variant>`` and resumes where it stopped (a finished run only
reports). Writes ``DIR/ablation.md`` (mean +- std over seeds of Acc@30 and MedErr on base and
novel categories of the report split (``--report_split``, by default the config's last eval
split), with the runs' 95% shape-bootstrap intervals, teacher
included, with stage-2 train times) and
``DIR/ablation.png`` (bars with error bars), and ``DIR/ablation.json`` with every number.
"""

from __future__ import annotations

import json
import os
import time

import matplotlib
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from kdpose import stages, trainers

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402 (after choosing the backend)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/default.py", "Base training config.")
flags.DEFINE_integer("seeds", 3, "Number of seeds (0 .. seeds-1).")
flags.DEFINE_string("workdir", None, "Directory of the whole study.")
flags.DEFINE_list("variants", None, "Student variants to run (default: all).")
flags.DEFINE_string("report_split", None, "Split of the table (tune on val, report on test); "
                    "default: the config's last eval split.")
flags.mark_flag_as_required("workdir")

# Student variants: the KD terms each switches on (and whether negatives are pose-aware). A term
# that is on keeps the base config's weight, or 1.0 where the base config has it off.
VARIANTS = {
    "baseline": dict(terms=(), pose_aware=False),
    "ckd": dict(terms=("ckd",), pose_aware=False),
    "logit": dict(terms=("logit",), pose_aware=False),
    "ckd+logit": dict(terms=("ckd", "logit"), pose_aware=False),
    "ckd+pose_aware": dict(terms=("ckd",), pose_aware=True),
}
_GROUPS = ("base", "novel")


def apply_variant(student, variant: str) -> None:
  """Sets the KD weights of the ``student`` config block for ``variant`` (see ``VARIANTS``)."""
  terms = VARIANTS[variant]["terms"]
  for name in stages.KD_TERMS:
    weight = student[f"{name}_weight"]
    student[f"{name}_weight"] = (weight or 1.0) if name in terms else 0.0
  student.pose_aware = VARIANTS[variant]["pose_aware"]


def report_split(config, requested: str | None) -> str:
  """The split the table reports: ``requested``, or the last of ``config.dataset.eval_splits``
  (``test`` for synthetic_views, ``val`` for ObjectNet3D). Checked before any training, since
  only the evaluated splits have reports."""
  splits = list(config.dataset.eval_splits)
  if requested is None:
    return splits[-1]
  if requested not in splits:
    raise app.UsageError(f"--report_split={requested!r}, but the config evaluates only {splits} "
                         "(config.dataset.eval_splits); report one of those.")
  return requested


def _timed_run(config, workdir: str) -> dict:
  """Runs (or resumes) one training run; records its first full wall time in ``timing.json``."""
  timing_path = os.path.join(workdir, "timing.json")
  start = time.perf_counter()
  reports = trainers.run(config, workdir)
  if not os.path.exists(timing_path):
    with open(timing_path, "w") as f:
      json.dump({"seconds": time.perf_counter() - start}, f)
  with open(timing_path) as f:
    return {"reports": reports, "seconds": json.load(f)["seconds"]}


def run_study(base, workdir: str, seeds: int, variants: list[str]) -> dict:
  """seed -> {"teacher": run, variant: run} for every seed and variant."""
  results = {}
  for seed in range(seeds):
    config = base.copy_and_resolve_references()
    config.seed = seed
    config.stage = "teacher"
    teacher_dir = os.path.join(workdir, f"seed{seed}", "teacher")
    results[seed] = {"teacher": _timed_run(config, teacher_dir)}
    for variant in variants:
      student = config.copy_and_resolve_references()
      student.stage, student.teacher_workdir = "student", teacher_dir
      apply_variant(student.student, variant)
      results[seed][variant] = _timed_run(student, os.path.join(workdir, f"seed{seed}", variant))
  return results


def summarise(results: dict, split: str) -> dict:
  """row -> {group/metric: (mean, std, values)} over seeds, plus mean train seconds; and where
  every run's report has intervals, {group/metric/interval: (low, high)}: the bounds of the
  runs' 95% shape-bootstrap intervals, averaged over seeds (the spread owed to the test shapes)."""
  rows = {}
  names = list(next(iter(results.values())))
  for name in names:
    stage = "teacher" if name == "teacher" else "student"
    runs = [results[seed][name] for seed in results]
    reports = [r["reports"][stage][split] for r in runs]
    row = {}
    for group in _GROUPS:
      for metric in ("acc30", "med_err"):
        values = [report[group][metric] for report in reports]
        row[f"{group}/{metric}"] = (float(np.mean(values)), float(np.std(values)), values)
        if all(group in report.get("intervals", {}) for report in reports):
          bounds = [[report["intervals"][group][metric][k] for k in ("low", "high")]
                    for report in reports]
          row[f"{group}/{metric}/interval"] = tuple(np.mean(bounds, axis=0).tolist())
    row["seconds"] = float(np.mean([r["seconds"] for r in runs]))
    rows[name] = row
  return rows


def markdown(rows: dict, split: str, seeds: int) -> str:
  lines = [f"Split `{split}`, mean ± std over {seeds} seed(s). Acc@30 in %, MedErr in degrees, "
           "both averaged over categories; `base` = held-out shapes of training categories, "
           "`novel` = categories never seen in training. [low, high]: the runs' 95% "
           "intervals from resampling test shapes (bounds averaged over seeds). Time = wall "
           "time of the run (the teacher row: stage 1; student rows: stage 2).", "",
           "| model | base Acc@30 | novel Acc@30 | base MedErr | novel MedErr | time (s) |",
           "|---|---|---|---|---|---|"]
  for name, row in rows.items():
    cells = [f"{row[k][0]:.1f} ± {row[k][1]:.1f}"
             + (" [{:.1f}, {:.1f}]".format(*row[f"{k}/interval"]) if f"{k}/interval" in row else "")
             for k in ("base/acc30", "novel/acc30", "base/med_err", "novel/med_err")]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def plot(rows: dict, path: str) -> None:
  fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
  x = np.arange(len(rows))
  for offset, group in ((-0.2, "base"), (0.2, "novel")):
    means = [row[f"{group}/acc30"][0] for row in rows.values()]
    stds = [row[f"{group}/acc30"][1] for row in rows.values()]
    ax.bar(x + offset, means, 0.4, yerr=stds, capsize=4, label=group)
  ax.set_xticks(x, list(rows), rotation=20)
  ax.set_ylabel("Acc@30 (%)")
  ax.legend()
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv) -> None:
  del argv
  variants = FLAGS.variants or list(VARIANTS)
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise app.UsageError(f"Unknown variants {unknown}; known: {list(VARIANTS)}.")
  split = report_split(FLAGS.config, FLAGS.report_split)
  results = run_study(FLAGS.config, FLAGS.workdir, FLAGS.seeds, variants)
  rows = summarise(results, split)
  table = markdown(rows, split, FLAGS.seeds)
  with open(os.path.join(FLAGS.workdir, "ablation.md"), "w") as f:
    f.write(table)
  with open(os.path.join(FLAGS.workdir, "ablation.json"), "w") as f:
    json.dump(rows, f, indent=2)
  plot(rows, os.path.join(FLAGS.workdir, "ablation.png"))
  logging.info("\n%s", table)
  print(table)


if __name__ == "__main__":
  app.run(main)
