r"""One markdown table of finished runs: Acc@30 with shape intervals per group, and wall time.

  python tools/run_table.py --split val --out tools/results/recipe_search.md \
      "full fine-tune, 300 steps=/tmp/exp/b_ft300" "head warm-up + grid 2=/tmp/exp/b_lp"

Each argument is ``label=workdir``; a row per stage that has ``eval/<stage>_<split>.json``.
Wall time is from the files: ``config.json`` (written at launch) to the stage's report, so a
resumed run counts from its last launch.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from kdpose import run_config
from kdpose.trainers import evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("split", "val", "The evaluation split to tabulate.")
flags.DEFINE_string("out", "", "Markdown file to write (printed when empty).")
flags.DEFINE_string("title", "", "Heading of the table.")

GROUPS = ("mean", "base", "novel", "asymmetric", "symmetric")


def _cell(report: dict, group: str) -> str:
  """Acc@30 of ``group`` with its interval where the report has one (mean, base, novel)."""
  if group in report["intervals"]:
    acc = report["intervals"][group]["acc30"]
    return f"{acc['point']:.1f} [{acc['low']:.1f}, {acc['high']:.1f}]"
  return f"{report[group]['acc30']:.1f}" if group in report else "–"


def rows(label: str, workdir: str, split: str) -> list[str]:
  """The table rows of one run (one per stage with a report of ``split``)."""
  config = run_config.load_run_config(workdir)
  started = os.path.getmtime(os.path.join(workdir, run_config.CONFIG_FILE))
  out = []
  for stage in ("teacher", "student"):
    path = evaluation.report_path(workdir, stage, split)
    if not os.path.exists(path):
      continue
    with open(path) as f:
      report = json.load(f)
    base_med = report.get("base", {}).get("med_err", float("nan"))
    minutes = (os.path.getmtime(path) - started) / 60.0
    out.append("| " + " | ".join([label, stage, str(config[stage].num_steps),
                                  *(_cell(report, g) for g in GROUPS),
                                  f"{base_med:.1f}", f"{minutes:.1f}"]) + " |")
    started = os.path.getmtime(path)  # the next stage's time starts here
  return out


def table(runs: list[tuple[str, str]], split: str, title: str = "") -> str:
  header = ["run", "stage", "steps", *(f"{g} Acc@30" for g in GROUPS), "base MedErr",
            "wall min"]
  lines = ([f"# {title}", ""] if title else []) + [
      "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label, workdir in runs:
    lines += rows(label, workdir, split)
  return "\n".join(lines) + "\n"


def main(argv) -> None:
  runs = []
  for arg in argv[1:]:
    label, sep, workdir = arg.rpartition("=")
    if not sep or not label:
      raise app.UsageError(f"{arg!r}: expected label=workdir.")
    runs.append((label, workdir))
  text = table(runs, FLAGS.split, FLAGS.title)
  text += f"\nSplit `{FLAGS.split}`, headline filter; 95% intervals by bootstrap over shapes.\n"
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text)
  sys.stdout.write(text)


if __name__ == "__main__":
  app.run(main)
