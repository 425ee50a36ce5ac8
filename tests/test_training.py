"""End to end: the tiny config trains both stages, writes checkpoints, logs, reports; resumes."""

import glob
import itertools
import json
import logging
import os
import re
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from configs import default
from kdpose import checkpoint, sharding, stages, trainers
from kdpose import state as state_lib
from kdpose.data import pipeline
from kdpose.trainers import preemption
from kdpose.trainers import progress as progress_lib


def _config(data_dir, arg="tiny"):
  config = default.get_config(arg)
  config.dataset.data_dir = data_dir
  return config


def _params(workdir, stage):
  ckpt_dir = os.path.join(workdir, stage, "checkpoints")
  steps = checkpoint.StageCheckpoints(ckpt_dir, read_only=True)
  step = steps.latest_step()
  steps.close()
  path = os.path.join(ckpt_dir, str(step), "state")
  return step, path


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory):
  """One uninterrupted tiny run of both stages, shared by the tests below."""
  workdir = str(tmp_path_factory.mktemp("run"))
  return workdir, trainers.run(_config(data_dir), workdir)


def test_tiny_run_trains_both_stages_and_reports(data_dir, tiny_run):
  workdir, reports = tiny_run
  for stage in ("teacher", "student"):
    assert _params(workdir, stage)[0] == 4
    for split in ("val", "test"):
      with open(os.path.join(workdir, "eval", f"{stage}_{split}.json")) as f:
        saved = json.load(f)
      assert saved["step"] == 4 and saved == json.loads(json.dumps(reports[stage][split]))
      assert saved["novel"]["num_categories"] >= 1 and saved["base"]["num_categories"] >= 1
    assert glob.glob(os.path.join(workdir, "tensorboard", stage, "events.out.tfevents.*"))
  assert os.path.exists(os.path.join(workdir, "config.json"))
  # A rerun of a finished run trains nothing: no checkpoint or event file touched, no new
  # checkpoint file (each launch opens a new, empty TensorBoard events file), same numbers.
  def written():
    paths = [p for pattern in ("*/checkpoints/**/*", "tensorboard/**/*")
             for p in glob.glob(os.path.join(workdir, pattern), recursive=True)]
    return {p: os.stat(p).st_mtime_ns for p in paths if os.path.isfile(p)}

  before = written()
  assert any("tfevents" in p for p in before) and any("checkpoints" in p for p in before)
  again = trainers.run(_config(data_dir), workdir)
  after = written()
  assert {p: after[p] for p in before} == before
  assert not [p for p in set(after) - set(before) if "tfevents" not in p]
  assert again == json.loads(json.dumps(reports))


def test_resume_refuses_a_config_that_changes_the_result(data_dir, tiny_run):
  workdir, _ = tiny_run
  with open(os.path.join(workdir, "config.json")) as f:
    before = f.read()
  config = _config(data_dir)
  config.student.ckd_temperature = 0.2
  with pytest.raises(ValueError, match=r"student.ckd_temperature: 0.1 -> 0.2"):
    trainers.run(config, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == before


def test_training_excludes_novel_categories(data_dir):
  from kdpose.trainers import inputs
  config = _config(data_dir)
  train, evals = inputs.load_data(config)
  assert train.novel_categories and not set(train.categories) & set(train.novel_categories)
  assert set(evals["test"].categories) & set(train.novel_categories)


def test_more_points_than_the_dataset_stores_is_refused_naming_it(data_dir):
  from kdpose.trainers import inputs
  config = _config(data_dir)
  stored = inputs.load_data(config)[0].num_points
  config.num_points = stored + 1
  with pytest.raises(ValueError, match=f"config.num_points={stored + 1}, but dataset "
                     rf"synthetic_views \(synthetic_views/tiny/.*\) stores {stored} points"):
    inputs.load_data(config)


def _run_killed_after_step_2(config, workdir: str, monkeypatch) -> None:
  """Trains ``config`` into ``workdir`` until its batch loader dies after steps 1-2 were
  trained and checkpointed (the "machine dies"), then leaves the loader as it was."""
  original = pipeline.BatchLoader._load
  calls = {"n": 0}

  def dying_load(self, positions):
    calls["n"] += 1
    if calls["n"] > 3:
      raise KeyboardInterrupt("killed")
    return original(self, positions)

  monkeypatch.setattr(pipeline.BatchLoader, "_load", dying_load)
  with pytest.raises(KeyboardInterrupt):
    trainers.run(config, workdir)
  monkeypatch.setattr(pipeline.BatchLoader, "_load", original)


def _assert_same_final_state(workdir_a: str, workdir_b: str, stage: str,
                             keys=("params",)) -> None:
  """The ``keys`` of the stage's latest checkpoints in both workdirs are bit-identical."""
  import orbax.checkpoint as ocp
  a = ocp.PyTreeCheckpointer().restore(_params(workdir_a, stage)[1])
  b = ocp.PyTreeCheckpointer().restore(_params(workdir_b, stage)[1])
  for key in keys:
    jax.tree.map(np.testing.assert_array_equal, a[key], b[key])


def test_killed_run_resumes_bit_identically(data_dir, tiny_run, tmp_path, monkeypatch):
  config = _config(data_dir)
  config.stage = "teacher"
  straight, _ = tiny_run
  interrupted = str(tmp_path / "interrupted")
  _run_killed_after_step_2(config, interrupted, monkeypatch)
  assert _params(interrupted, "teacher")[0] == 2
  trainers.run(config, interrupted)
  _assert_same_final_state(straight, interrupted, "teacher")


def test_killed_student_stage_resumes_bit_identically(data_dir, tiny_run, tmp_path, monkeypatch):
  straight, _ = tiny_run
  config = _config(data_dir)
  config.stage, config.teacher_workdir = "student", straight  # the finished run's teacher
  workdir = str(tmp_path / "student")
  _run_killed_after_step_2(config, workdir, monkeypatch)
  assert _params(workdir, "student")[0] == 2
  assert not os.path.exists(os.path.join(workdir, "teacher"))  # stage 2 never saves a teacher
  trainers.run(config, workdir)
  _assert_same_final_state(straight, workdir, "student", ("params", "batch_stats", "opt_state"))


def test_student_refuses_an_unfinished_teacher(data_dir, tiny_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(os.path.join(tiny_run[0], "teacher", "checkpoints"),
                  os.path.join(workdir, "teacher", "checkpoints"))
  config = _config(data_dir)
  config.stage, config.teacher.num_steps = "student", 8  # its teacher stopped at step 4 of 8
  with pytest.raises(ValueError, match=r"teacher/checkpoints is at step 4 of 8: finish stage 1 "
                     "first"):
    trainers.run(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "student", "checkpoints"))


def _not_caught(number, frame):
  raise RuntimeError(f"{signal.Signals(number).name} reached the test: training did not catch it")


def test_sigterm_saves_the_current_step_and_the_rerun_ends_bit_identically(
    data_dir, tiny_run, tmp_path, monkeypatch):
  config = _config(data_dir)
  config.stage = "teacher"
  workdir = str(tmp_path / "preempted")
  original = progress_lib.StageProgress.__call__
  sent = []

  def terminating(self, step):  # the scheduler's SIGTERM comes during step 3 (not a save step)
    if step == 3 and not sent:
      sent.append(time.monotonic())
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, step)

  monkeypatch.setattr(progress_lib.StageProgress, "__call__", terminating)
  before = signal.signal(signal.SIGTERM, _not_caught)
  try:
    with pytest.raises(preemption.Preempted, match="stopped by SIGTERM after saving step 3"):
      trainers.run(config, workdir)
    seconds = time.monotonic() - sent[0]
    assert signal.getsignal(signal.SIGTERM) is _not_caught  # the handler from before is back
  finally:
    signal.signal(signal.SIGTERM, before)
  saved = _params(workdir, "teacher")[0]
  print(f"SIGTERM -> Preempted out of trainers.run: {seconds:.2f} s; steps lost: {3 - saved}")
  assert saved == 3
  monkeypatch.undo()
  trainers.run(config, workdir)
  import orbax.checkpoint as ocp
  a = ocp.PyTreeCheckpointer().restore(_params(tiny_run[0], "teacher")[1])
  b = ocp.PyTreeCheckpointer().restore(_params(workdir, "teacher")[1])
  jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
  jax.tree.map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])


def test_non_finite_loss_stops_with_the_step_and_saves_nothing_after(data_dir, tmp_path):
  config = _config(data_dir)
  config.stage = "teacher"
  config.teacher.optimizer.learning_rate = 1e30
  workdir = str(tmp_path / "nan")
  with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step \d") as error:
    trainers.run(config, workdir)
  failing = int(re.search(r"at step (\d+)", str(error.value)).group(1))
  ckpt_dir = os.path.join(workdir, "teacher", "checkpoints")
  steps = checkpoint.StageCheckpoints(ckpt_dir, read_only=True).all_steps()
  # Nothing at or after the step the error names; the error names the last one kept.
  assert all(step < failing for step in steps), (steps, failing)
  assert f"the last checkpoint is step {max(steps, default=None)}" in str(error.value)


@pytest.mark.parametrize("skip", [True, False])
def test_a_nan_batch_is_skipped_with_skip_nonfinite_else_stops_the_run(data_dir, tmp_path,
                                                                       monkeypatch, caplog, skip):
  config = _config(data_dir)
  config.stage, config.teacher.skip_nonfinite = "teacher", skip
  original, calls = pipeline.BatchLoader._load, itertools.count(1)

  def poisoned_load(self, positions):  # one training batch gets NaN points: a NaN loss
    poisoned = next(calls) == 3  # (loads run in threads: count before loading)
    batch = original(self, positions)
    if poisoned:
      batch["points"] = np.full_like(batch["points"], np.nan)
    return batch

  monkeypatch.setattr(pipeline.BatchLoader, "_load", poisoned_load)
  workdir = str(tmp_path / "run")
  if not skip:
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step \d"):
      trainers.run(config, workdir)
    return
  with caplog.at_level(logging.WARNING):
    trainers.run(config, workdir)
  assert len(re.findall(r"teacher stage: step \d skipped its update \(loss nan", caplog.text)) == 1
  step, path = _params(workdir, "teacher")
  import orbax.checkpoint as ocp
  saved = ocp.PyTreeCheckpointer().restore(path)
  assert step == 4 and int(saved["opt_state"]["total_notfinite"]) == 1
  for leaf in jax.tree.leaves({k: saved[k] for k in ("params", "batch_stats")}):
    assert np.isfinite(leaf).all()


def test_student_without_teacher_fails_clearly(data_dir, tmp_path):
  config = _config(data_dir)
  config.stage = "student"
  with pytest.raises(FileNotFoundError, match="Stage 2 needs a trained teacher"):
    trainers.run(config, str(tmp_path / "no_teacher"))


def test_student_refuses_a_teacher_trained_on_other_inputs(data_dir, tiny_run, tmp_path):
  workdir, _ = tiny_run
  config = _config(data_dir)
  config.stage, config.teacher_workdir = "student", workdir
  config.image_size, config.num_points = 48, 32
  expected = r"image_size: teacher 32, student 48; num_points: teacher 64, student 32\)"
  with pytest.raises(ValueError, match=expected):
    trainers.run(config, str(tmp_path / "student"))
  assert not os.path.exists(tmp_path / "student" / "student" / "checkpoints")


def test_trains_a_few_steps_on_the_objectnet3d_raw_layout(tmp_path):
  import raw_fixtures

  manual_dir = str(tmp_path / "ObjectNet3D")
  raw_fixtures.make_objectnet3d(manual_dir)
  config = default.get_config("tiny")
  config.dataset.update(dict(name="objectnet3d", config_name="small", manual_dir=manual_dir,
                             data_dir=str(tmp_path / "tfds"), pad_size=128, eval_splits=("val",)))
  config.teacher.num_steps = config.student.num_steps = 2
  config.teacher.batch_size = config.student.batch_size = 8
  config.eval_batch_size = 8
  reports = trainers.run(config, str(tmp_path / "run"))
  report = reports["student"]["val"]
  # The one evaluable bed (novel: held out of training) is truncated and occluded: the headline
  # filter drops it, the all-views report beside it keeps it.
  assert "bed" not in report["per_category"] and report["novel"]["num_categories"] == 0
  all_views = report["all_views"]
  assert all_views["novel"]["num_categories"] == 1 and all_views["per_category"]["bed"]["novel"]
  assert all_views["pooled"]["count"] >= 3 > report["pooled"]["count"]


def test_evaluate_reproduces_the_saved_report(tiny_run):
  from kdpose import evaluate

  workdir, reports = tiny_run
  report, predictions = evaluate.evaluate_checkpoint(workdir, "student", "test")
  saved = reports["student"]["test"]
  assert report["step"] == saved["step"] == 4
  assert report["mean"]["acc30"] == pytest.approx(saved["mean"]["acc30"])
  assert report["pooled"]["med_err"] == pytest.approx(saved["pooled"]["med_err"], abs=1e-3)
  assert predictions["viewpoint"].shape == (saved["pooled"]["count"], 3)
  counts = dict(zip(*np.unique(predictions["category"], return_counts=True), strict=True))
  assert counts == {name: row["count"] for name, row in saved["per_category"].items()}
  for name in ("acc_by_category", "errors", "worst_best"):
    assert os.path.getsize(os.path.join(workdir, "eval", f"student_test_{name}.png")) > 1000


def test_final_evaluation_reports_all_views_and_saves_pairable_predictions(tiny_run):
  from kdpose import evaluate
  from kdpose.trainers import evaluation

  workdir, reports = tiny_run
  report = reports["student"]["test"]
  assert report["intervals"]["unit"] == "shape" and report["intervals"]["resamples"] == 1000
  mean = report["intervals"]["mean"]["med_err"]
  assert mean["point"] == pytest.approx(report["mean"]["med_err"])
  assert mean["low"] < mean["point"] < mean["high"]
  # The headline drops occluded views (the tiny split has some); all of them are reported beside.
  assert report["all_views"]["pooled"]["count"] > report["pooled"]["count"]
  assert "intervals" in report["all_views"]
  saved = evaluation.load_predictions(os.path.join(workdir, "eval", "student_test.npz"))
  assert saved["error"].size == report["pooled"]["count"]
  assert len(set(saved["shape_id"].tolist())) > len(report["per_category"])
  # The saved predictions against a fresh evaluation of the same checkpoint: no difference.
  fresh, path = evaluate.run_predictions(workdir, "student", "test", step=4)
  assert path.endswith("student_synthetic_views_test_step4.npz") and os.path.exists(path)
  paired = evaluation.compare_predictions(saved, fresh, ("saved", "fresh"))
  assert paired["mean"]["acc30"]["diff"] == {"point": 0.0, "low": 0.0, "high": 0.0}
  assert abs(paired["mean"]["med_err"]["diff"]["point"]) < 1e-3


def _truncate(step_dir):
  """Cuts the step's array data (the OCDBT data files of its ``state`` item) in half."""
  files = glob.glob(os.path.join(step_dir, "state", "d", "*"))
  assert files, f"no OCDBT data files in {step_dir}/state/d: has orbax's layout changed?"
  for path in files:
    os.truncate(path, os.path.getsize(path) // 2)


def _delete_meta(step_dir):
  shutil.rmtree(os.path.join(step_dir, "meta"))


def _garbage(step_dir):
  """Overwrites the step's array data with random bytes of the same length."""
  files = glob.glob(os.path.join(step_dir, "state", "d", "*"))
  assert files, f"no OCDBT data files in {step_dir}/state/d: has orbax's layout changed?"
  for path in files:
    with open(path, "wb") as f:
      f.write(np.random.default_rng(0).bytes(os.path.getsize(path)))


def _copy_teacher_run(tiny_run, destination):
  """The tiny run's config.json and teacher checkpoints (steps 2 and 4) in ``destination``."""
  os.makedirs(destination)
  shutil.copy(os.path.join(tiny_run[0], "config.json"), destination)
  shutil.copytree(os.path.join(tiny_run[0], "teacher", "checkpoints"),
                  os.path.join(destination, "teacher", "checkpoints"))
  return os.path.join(destination, "teacher", "checkpoints")


def _teacher_abstract(data_dir):
  init_fn = stages.build_teacher(_config(data_dir))[3]
  return state_lib.abstract_state(init_fn, sharding.make_mesh())[0]


@pytest.mark.parametrize("damage", [_truncate, _delete_meta, _garbage])
def test_damaged_latest_checkpoint_falls_back_to_the_step_before(data_dir, tiny_run, tmp_path,
                                                                 damage, caplog):
  ckpt_dir = _copy_teacher_run(tiny_run, str(tmp_path / "run"))
  damage(os.path.join(ckpt_dir, "4"))
  checkpoints = checkpoint.StageCheckpoints(ckpt_dir, read_only=True)
  with caplog.at_level(logging.WARNING):
    restored, meta = checkpoints.restore(_teacher_abstract(data_dir))
  checkpoints.close()
  assert int(restored.step) == 2 and meta == {"stage": "teacher", "step": 2}
  assert f"Checkpoint {ckpt_dir}/4 is damaged" in caplog.text


def test_resume_sets_a_damaged_checkpoint_aside_and_trains_its_steps_again(data_dir, tiny_run,
                                                                          tmp_path):
  workdir = str(tmp_path / "run")
  ckpt_dir = _copy_teacher_run(tiny_run, workdir)
  _truncate(os.path.join(ckpt_dir, "4"))
  config = _config(data_dir)
  config.stage = "teacher"
  trainers.run(config, workdir)
  assert len(glob.glob(os.path.join(ckpt_dir, "4.damaged-*"))) == 1
  import orbax.checkpoint as ocp
  a = ocp.PyTreeCheckpointer().restore(_params(tiny_run[0], "teacher")[1])
  b = ocp.PyTreeCheckpointer().restore(_params(workdir, "teacher")[1])
  jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(data_dir, tiny_run, tmp_path):
  workdir = str(tmp_path / "run")
  ckpt_dir = _copy_teacher_run(tiny_run, workdir)
  _garbage(os.path.join(ckpt_dir, "4"))
  _truncate(os.path.join(ckpt_dir, "2"))
  checkpoints = checkpoint.StageCheckpoints(ckpt_dir, read_only=True)
  with pytest.raises(checkpoint.DamagedCheckpointError, match=r"No checkpoint in .* reads back "
                     r"\(step 4: .*; step 2: .*\)\. Refusing to start over"):
    checkpoints.restore(_teacher_abstract(data_dir))
  checkpoints.close()
  config = _config(data_dir)
  config.stage = "teacher"
  with pytest.raises(checkpoint.DamagedCheckpointError, match="Refusing to start over"):
    trainers.run(config, workdir)
  assert sorted(os.listdir(ckpt_dir)) == ["2", "4"]


def test_the_exported_student_predicts_the_errors_its_final_evaluation_saved(
    data_dir, tiny_run, tmp_path):
  """Train (tiny_run) -> export -> ``kdpose.predict`` on the test records' own images and boxes
  gives, record by record, the errors that the run's final evaluation saved."""
  from kdpose import export, geometry, predict
  from kdpose.trainers import evaluation, inputs

  workdir, _ = tiny_run
  saved = evaluation.load_predictions(os.path.join(workdir, "eval", "student_test.npz"))
  test = inputs.load_data(_config(data_dir))[1]["test"]
  examples = [test.source[int(i)] for i in saved["index"]]
  arrays = [pipeline.example_arrays(example, test.pad_size) for example in examples]
  images = [np.asarray(example["image"]) for example in examples]  # the photos, unpadded
  predictor = predict.Predictor(export.export_student(workdir, str(tmp_path / "export")))
  viewpoints = predictor(images, [a["box"] for a in arrays])
  truth = np.stack([a["viewpoint"] for a in arrays])
  symmetry = test.category_symmetry[[a["category"] for a in arrays]]
  errors = geometry.symmetric_rotation_error(viewpoints.astype(np.float64), truth, symmetry)
  assert len(errors) == len(saved["error"]) > 10
  np.testing.assert_allclose(errors, saved["error"], atol=0.05)  # degrees
