"""The run's progress line: seconds per step from the first step run, stage and run ETAs."""

from kdpose.trainers import progress


def test_format_duration():
  assert progress.format_duration(7) == "7s"
  assert progress.format_duration(125) == "2m05s"
  assert progress.format_duration(3725) == "1h02m"
  assert progress.format_duration(-3) == "0s"


def test_reports_every_interval_and_at_the_last_step_with_both_etas():
  now, written = [100.0], []
  report = progress.StageProgress("teacher", num_steps=10, later_steps=20,
                                  write_scalars=lambda step, values: written.append((step, values)),
                                  every_secs=30.0, clock=lambda: now[0])
  lines = []
  for step in range(3, 11):  # resumed at step 2: the first step run only starts the clock.
    lines.append(report(step))
    now[0] += 10.0  # 10 s per step
  # Step 3 starts the clock at t=100; step 6 runs at t=130: 30 s over 3 steps.
  assert lines[:3] == [None, None, None]
  assert lines[3] == ("teacher: step 6/10 (60%), 10.00 s/step, stage ETA 40s, run ETA 4m00s "
                      "(later stages: 20 steps)")
  assert lines[4:7] == [None, None, "teacher: step 9/10 (90%), 10.00 s/step, stage ETA 10s, "
                        "run ETA 3m30s (later stages: 20 steps)"]
  assert lines[7].startswith("teacher: step 10/10 (100%), 10.00 s/step, stage ETA 0s, run ETA")
  assert written == [(6, {"steps_per_sec": 0.1}), (9, {"steps_per_sec": 0.1}),
                     (10, {"steps_per_sec": 0.1})]


def test_last_stage_has_no_run_eta():
  now = [0.0]
  # No scalar writer (the head warm-up): log lines only.
  report = progress.StageProgress("student", 4, 0, None, every_secs=0.0, clock=lambda: now[0])
  report(1)
  now[0] = 6.0
  assert report(3) == "student: step 3/4 (75%), 3.00 s/step, stage ETA 3s"
