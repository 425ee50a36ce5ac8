"""A workdir in a bucket: every file kdpose writes there goes through etils.epath.

``gs://bucket/...`` is mapped onto ``tmp_path/bucket/...`` with ``epath.testing.mock_epath``;
a plain ``os``/``open`` call on such a path would instead create ``./gs:/bucket/...`` in the
working directory (``tmp_path``), which each test checks does not exist.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from etils.epath import gpath
from etils.epath import testing as epath_testing

from configs import default
from kdpose import checkpoint, config_checks, files, run_config
from kdpose.data import registry
from kdpose.trainers import evaluation

BUCKET = "gs://bucket"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """``tmp_path/bucket``, standing for ``gs://bucket`` while the test runs."""
  monkeypatch.chdir(tmp_path)
  local = tmp_path / "bucket"
  local.mkdir()

  def here(value):
    return value.replace(BUCKET, str(local), 1) if isinstance(value, str) else value

  def redirect(original, path, *args, **kwargs):
    return original(here(os.fspath(path)), *(here(os.fspath(a)) if isinstance(a, (str, os.PathLike))
                                             else a for a in args), **kwargs)

  # With TensorFlow importable, epath sends gs:// to gfile whatever mock_epath patched.
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  names = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove",
           "rename", "replace", "rmtree", "stat", "walk")
  with epath_testing.mock_epath(**{name: redirect for name in names}):
    yield local
  assert not (tmp_path / "gs:").exists(), "a local file call took the URL for a path"


def test_absolute_keeps_urls_and_anchors_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert files.absolute("gs://b/run") == "gs://b/run"
  assert files.absolute("run") == str(tmp_path / "run")


def test_workdir_check_config_and_changes_in_a_bucket(bucket):
  workdir = f"{BUCKET}/run"
  config_checks.check_workdir(workdir)
  assert (bucket / "run").is_dir() and os.listdir(bucket / "run") == []  # the probe is gone

  config = default.get_config("tiny")
  run_config.record_config(config, workdir, resuming=False)
  saved = json.loads((bucket / "run" / run_config.CONFIG_FILE).read_text())
  assert saved["teacher"]["num_steps"] == config.teacher.num_steps
  assert run_config.load_run_config(workdir).seed == config.seed

  # Two allowed changes: the log is rewritten whole (buckets do not append), one line each.
  for steps in (5, 6):
    changed = default.get_config("tiny")
    changed.teacher.num_steps, changed.allow_config_change = steps, True
    run_config.record_config(changed, workdir, resuming=True)
  lines = (bucket / "run" / run_config.CHANGES_FILE).read_text().splitlines()
  assert [json.loads(line)["changes"]["teacher.num_steps"] for line in lines] == [[4, 5], [5, 6]]
  assert not list(bucket.rglob("*.partial"))


def test_reports_and_predictions_round_trip_in_a_bucket(bucket):
  path = evaluation.report_path(f"{BUCKET}/run", "student", "test")
  evaluation.write_report({"mean": {"acc30": 0.25}, "step": 3}, path)
  assert json.loads((bucket / "run" / "eval" / "student_test.json").read_text())["step"] == 3
  predictions = {"error": np.array([10.0, 50.0]), "category": np.array([1, 2]),
                 "shape_id": np.array(["a", "b"]), "index": np.array([0, 1]),
                 "novel": np.array([False, True])}
  evaluation.write_predictions(predictions, evaluation.predictions_path(path))
  assert (bucket / "run" / "eval" / "student_test.npz").is_file()
  loaded = evaluation.load_predictions(evaluation.predictions_path(path))
  for key, value in predictions.items():
    np.testing.assert_array_equal(loaded[key], value)


def test_checkpoint_lookup_in_a_bucket_does_not_touch_the_disk(bucket):
  assert not checkpoint.has_steps(f"{BUCKET}/run/teacher/checkpoints")
  with pytest.raises(FileNotFoundError, match="No checkpoint directory gs://bucket/run/teacher"):
    checkpoint.StageCheckpoints(f"{BUCKET}/run/teacher/checkpoints", read_only=True)


def test_a_dataset_in_a_bucket_is_refused_with_the_reason():
  config = default.get_config("tiny").dataset
  config.data_dir = "gs://bucket/tfds"
  with pytest.raises(ValueError, match=r"data_dir=gs://bucket/tfds: ArrayRecord files are read "
                     r"from local disks only \(google/array_record#120\)"):
    registry.get_builder(config)


def test_an_export_to_a_bucket_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  from kdpose import export

  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match="Export to gs://bucket/export: an export is written to a "
                     "local directory"):
    export.write_export("gs://bucket/export", {}, {}, image_size=32, bin_size=15.0, source={})
  assert os.listdir(tmp_path) == []
