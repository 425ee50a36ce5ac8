r"""Which angle a trained model gets wrong: per-angle errors of runs on one split.

  python tools/angle_errors.py --stage teacher --split test \
      --workdirs runs/ablation/seed0/teacher,runs/ablation/seed1/teacher
  python tools/angle_errors.py --stage student --workdirs runs/ablation/seed0/baseline

For each run, restores the stage's latest checkpoint, predicts the split and prints a markdown row:
- Acc@30 (%, mean over categories) of the base and novel categories, as ``kdpose.evaluate``;
- the same with the predicted azimuth replaced by the true one ("azimuth right"): what the model
  would score if only its elevation and in-plane rotation counted;
- the median absolute error (degrees, over all samples) of azimuth, elevation and in-plane
  rotation, and the share of samples with the azimuth within 30 degrees.

A random azimuth has a median error of 90 degrees and is within 30 degrees 16.7% of the time.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from kdpose import evaluate, geometry, metrics

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training runs' workdirs.")
flags.DEFINE_enum("stage", "student", ["teacher", "student"], "Which model of each run.")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.mark_flag_as_required("workdirs")

HEADER = ("| run | base Acc@30 | novel Acc@30 | base, azimuth right | novel, azimuth right "
          "| azimuth MedErr | elevation MedErr | in-plane MedErr | azimuth within 30° |\n"
          "|---|---|---|---|---|---|---|---|---|")


def angle_row(name: str, predictions: dict[str, np.ndarray], novel_categories: list[str]) -> str:
  """The markdown row of one run from ``evaluation.evaluate_split``'s predictions: viewpoint and
  target ``[n, 3]`` (degrees), error ``[n]`` (degrees) and category ``[n]``."""
  pred, target = predictions["viewpoint"], predictions["target"]
  with_true_azimuth = np.concatenate([target[:, :1], pred[:, 1:]], axis=1)
  reports = [metrics.viewpoint_report(errors, predictions["category"], novel_categories)
             for errors in (predictions["error"],
                            geometry.rotation_error(with_true_azimuth, target))]
  errors_per_angle = metrics.angle_errors(pred, target)
  med_angle = np.median(errors_per_angle, axis=0)
  azimuth_within = np.mean(errors_per_angle[:, 0] <= metrics.ACC_THRESHOLD_DEG) * 100.0
  cells = [f"{r[group]['acc30']:.1f}" for r in reports for group in ("base", "novel")]
  cells += [f"{m:.0f}°" for m in med_angle] + [f"{azimuth_within:.1f}%"]
  return "| " + " | ".join([name, *cells]) + " |"


def main(argv) -> None:
  del argv
  rows = []
  for workdir in FLAGS.workdirs:
    report, predictions = evaluate.evaluate_checkpoint(workdir, FLAGS.stage, FLAGS.split)
    novel = [name for name, row in report["per_category"].items() if row["novel"]]
    rows.append(angle_row(workdir, predictions, novel))
  print(f"{FLAGS.stage} on {FLAGS.split}\n\n{HEADER}\n" + "\n".join(rows))


if __name__ == "__main__":
  app.run(main)
