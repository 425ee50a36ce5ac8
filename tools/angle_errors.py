r"""Which angle a trained model gets wrong: per-angle errors of runs on one split.

  python tools/angle_errors.py --stage teacher --split test \
      --workdirs runs/ablation/seed0/teacher,runs/ablation/seed1/teacher
  python tools/angle_errors.py --stage student --workdirs runs/ablation/seed0/baseline

For each run, restores the stage's latest checkpoint, predicts the split and prints a markdown row:
- Acc@30 (%, mean over categories) of the base and novel categories, as ``kdpose.evaluate``;
- the same with the predicted azimuth replaced by a random one ("azimuth random", the mean over
  azimuths evenly spaced around the circle): the chance level of this model's elevation and
  in-plane predictions;
- the same with the predicted azimuth replaced by the true one ("azimuth right"): what the model
  would score if only its elevation and in-plane rotation counted;
- the median absolute error (degrees, over all samples) of azimuth, elevation and in-plane
  rotation, and the share of samples with the azimuth within 30 degrees.

Every error is taken up to the category's symmetry about its vertical axis (the report's
``symmetry`` per category, as ``kdpose.evaluate`` scores them): a two-fold symmetric sample's
azimuth error is ``min(e, 180 - e)``, and continuously symmetric samples, whose every azimuth is
right, are left out of the azimuth columns.

A random azimuth has a median error of 90 degrees and is within 30 degrees 16.7% of the time
(45 degrees and 33.3% for two-fold symmetric objects).
``--swap_shapes`` scores a teacher on other samples' shapes: what it owes to the shape it sees.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from kdpose import evaluate, geometry, metrics

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training runs' workdirs.")
flags.DEFINE_enum("stage", "student", ["teacher", "student"], "Which model of each run.")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.DEFINE_bool("swap_shapes", False, "Teacher only: give each sample the point cloud of the "
                  "sample half an eval batch away (does the teacher use the shape?).")
flags.mark_flag_as_required("workdirs")

# Azimuths that stand for a random one: offsets from the true azimuth every RANDOM_AZIMUTH_STEP
# degrees around the circle, starting half a step off it (so that no offset lands on 30 degrees).
RANDOM_AZIMUTH_STEP = 5.0
HEADER = ("| run | base Acc@30 | novel Acc@30 | base, azimuth random | novel, azimuth random "
          "| base, azimuth right | novel, azimuth right | azimuth MedErr | elevation MedErr "
          "| in-plane MedErr | azimuth within 30° |\n|" + "---|" * 11)


def _acc30(errors, categories, novel_categories) -> np.ndarray:
  """Acc@30 (%) of base and novel categories ``[2]``, each a mean over categories."""
  report = metrics.viewpoint_report(errors, categories, novel_categories)
  return np.array([report["base"]["acc30"], report["novel"]["acc30"]])


def _with_azimuth(pred: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
  return np.concatenate([azimuth[:, None], pred[:, 1:]], axis=1)


def _sample_symmetry(report: dict, categories: np.ndarray) -> np.ndarray:
  """``[n]`` int symmetry codes (``geometry.SYMMETRY_NAMES``) of samples of ``categories [n]``,
  from the report's per-category symmetry."""
  return np.array([geometry.SYMMETRY_NAMES.index(report["per_category"][c]["symmetry"])
                   for c in categories], np.int32)


def angle_row(name: str, report: dict, predictions: dict[str, np.ndarray]) -> str:
  """The markdown row of one run from ``evaluation.evaluate_split``'s report and predictions:
  viewpoint and target ``[n, 3]`` (degrees) and category ``[n]``."""
  pred, target = predictions["viewpoint"], predictions["target"]
  categories = predictions["category"]
  symmetry = _sample_symmetry(report, categories)
  novel_categories = [c for c, row in report["per_category"].items() if row["novel"]]
  acc = [report["base"]["acc30"], report["novel"]["acc30"]]
  error_with_azimuth = lambda azimuth: geometry.symmetric_rotation_error(
      _with_azimuth(pred, azimuth), target, symmetry)
  acc_random_azimuth = np.mean(
      [_acc30(error_with_azimuth(target[:, 0] + offset), categories, novel_categories)
       for offset in np.arange(RANDOM_AZIMUTH_STEP / 2, 360.0, RANDOM_AZIMUTH_STEP)], axis=0)
  acc_true_azimuth = _acc30(error_with_azimuth(target[:, 0]), categories, novel_categories)
  errors_per_angle = metrics.angle_errors(pred, target, symmetry)
  med_angle = np.nanmedian(errors_per_angle, axis=0)
  azimuth = errors_per_angle[:, 0][np.isfinite(errors_per_angle[:, 0])]
  azimuth_within = np.mean(azimuth <= metrics.ACC_THRESHOLD_DEG) * 100.0
  cells = [f"{value:.1f}" for value in (*acc, *acc_random_azimuth, *acc_true_azimuth)]
  cells += [f"{m:.0f}°" for m in med_angle] + [f"{azimuth_within:.1f}%"]
  return "| " + " | ".join([name, *cells]) + " |"


def main(argv) -> None:
  del argv
  rows = []
  for workdir in FLAGS.workdirs:
    report, predictions = evaluate.evaluate_checkpoint(workdir, FLAGS.stage, FLAGS.split,
                                                       swap_shapes=FLAGS.swap_shapes)
    rows.append(angle_row(workdir, report, predictions))
  swapped = ", shapes swapped" if FLAGS.swap_shapes else ""
  print(f"{FLAGS.stage} on {FLAGS.split}{swapped}\n\n{HEADER}\n" + "\n".join(rows))


if __name__ == "__main__":
  app.run(main)
