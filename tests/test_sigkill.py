"""SIGKILL at random moments: each relaunch of the same command resumes, and the run ends with
the state and reports of an uninterrupted one, bit for bit.

SIGKILL cannot be caught: nothing is saved on the way out, so this tests what is on disk at any
moment (orbax's temporary step directories, the atomic reports) rather than the SIGTERM path.
"""

import json
import os
import re
import signal
import time

import cli_runs
import numpy as np

SEED = 14


def _lines_after(event, count: int):
  """A kill moment: ``count`` lines of output after ``event(workdir)`` first holds."""
  seen = []

  def moment(workdir: str, run: cli_runs.Run) -> bool:
    if not seen and event(workdir):
      seen.append(len(run.lines))
    return bool(seen) and len(run.lines) >= seen[0] + count

  return moment


def _moments(rng: np.random.Generator) -> list:
  """The kill moments of the launches, in order: while orbax writes the first checkpoint; a
  random number of lines after checkpoint 2 is complete (steps 3-4, the write of checkpoint 4,
  or the final evaluation: a later launch resumes); a random number of lines into a launch
  (start-up, the restore)."""
  return [lambda workdir, _: cli_runs.writing_checkpoint(workdir),
          _lines_after(lambda workdir: 2 in cli_runs.complete_steps(workdir), rng.integers(60)),
          _lines_after(lambda workdir: True, rng.integers(1, 40))]


def _kill_when(run: cli_runs.Run, ready, timeout: float = 300) -> str:
  """SIGKILLs the run as soon as ``ready()``; returns the last log line before the kill."""
  deadline = time.monotonic() + timeout
  while not ready():
    assert run.process.poll() is None, f"the run ended before the kill:\n{run.text()[-3000:]}"
    assert time.monotonic() < deadline, "no kill moment within the timeout"
    time.sleep(0.002)
  run.process.send_signal(signal.SIGKILL)
  last = run.lines[-1].strip() if run.lines else "(no output yet)"
  assert run.wait(timeout=60) == -signal.SIGKILL
  return last


def _resumed_from(run: cli_runs.Run) -> int:
  """The step the launch resumed from (0: it started afresh)."""
  found = re.findall(r"teacher: resumed from step (\d+)", run.text())
  return int(found[0]) if found else 0


def test_random_sigkills_then_resume_end_bit_identically(reference_cli_run, data_dir, cli_cache,
                                                         tmp_path):
  reference, _ = reference_cli_run
  workdir = str(tmp_path / "killed")
  args = cli_runs.command(workdir, data_dir)
  resumed, kills = [], []
  for index, moment in enumerate(_moments(np.random.default_rng(SEED))):
    run = cli_runs.Run(args, cli_cache)
    last_line = _kill_when(run, lambda moment=moment, run=run: moment(workdir, run))
    resumed.append(_resumed_from(run))
    kills.append(f"kill {index + 1}: checkpoints {cli_runs.complete_steps(workdir)}, "
                 f"writing {len(cli_runs.writing_checkpoint(workdir))}, last line "
                 f"{last_line[:150]!r}")
    if index == 0:  # killed mid-write: the step is left in orbax's temporary directory
      assert cli_runs.writing_checkpoint(workdir) and cli_runs.complete_steps(workdir) == []
  run = cli_runs.Run(args, cli_cache)
  assert run.wait(timeout=300) == 0, run.text()[-3000:]
  resumed.append(_resumed_from(run))
  print("\n".join(kills) + f"\nlaunches resumed from steps {resumed}")
  assert resumed[-1] in (2, 4)
  assert cli_runs.complete_steps(workdir)[-1] == cli_runs.complete_steps(reference)[-1] == 4
  cli_runs.assert_trees_equal(cli_runs.final_state(workdir), cli_runs.final_state(reference))
  for split in ("val", "test"):
    reports = []
    for run_dir in (workdir, reference):
      with open(os.path.join(run_dir, "eval", f"teacher_{split}.json")) as f:
        reports.append(json.load(f))
    assert reports[0] == reports[1]
