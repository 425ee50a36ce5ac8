"""The ablation tool: variant weights, mean +- std over seeds, and a resumable tiny study."""

import json
import os

import pytest
from absl import app

from configs import default, objectnet3d
from tools import ablation


def test_variants_switch_terms_on_at_the_configured_weight():
  student = default.get_config().student
  student.ckd_weight, student.logit_weight, student.feature_weight = 0.5, 0.0, 0.2
  ablation.apply_variant(student, "ckd+logit")
  assert (student.ckd_weight, student.logit_weight, student.feature_weight) == (0.5, 1.0, 0.0)
  assert not student.pose_aware
  ablation.apply_variant(student, "ckd+pose_aware")
  assert (student.ckd_weight, student.logit_weight, student.pose_aware) == (0.5, 0.0, True)
  ablation.apply_variant(student, "baseline")
  assert (student.ckd_weight, student.logit_weight, student.feature_weight) == (0.0, 0.0, 0.0)
  assert not student.pose_aware


def test_report_split_defaults_to_the_last_evaluated_split():
  assert ablation.report_split(default.get_config(), None) == "test"
  assert ablation.report_split(objectnet3d.get_config(), None) == "val"  # it evaluates only val.
  assert ablation.report_split(default.get_config(), "val") == "val"
  with pytest.raises(app.UsageError, match=r"--report_split='test', but the config evaluates "
                     r"only \['val'\]"):
    ablation.report_split(objectnet3d.get_config(), "test")


def _run(acc_base, acc_novel, err, seconds):
  group = lambda acc: {"acc30": acc, "med_err": err}
  return {"reports": {"test": {"base": group(acc_base), "novel": group(acc_novel)}},
          "seconds": seconds}


def test_summary_is_mean_and_population_std_over_seeds():
  results = {0: {"teacher": {"reports": {"teacher": _run(30, 20, 40, 100)["reports"]},
                             "seconds": 100},
                 "ckd": {"reports": {"student": _run(10, 14, 80, 50)["reports"]}, "seconds": 50}},
             1: {"teacher": {"reports": {"teacher": _run(34, 24, 44, 120)["reports"]},
                             "seconds": 120},
                 "ckd": {"reports": {"student": _run(20, 18, 60, 70)["reports"]}, "seconds": 70}}}
  rows = ablation.summarise(results, "test")
  assert rows["teacher"]["base/acc30"][:2] == (32.0, 2.0)
  assert rows["ckd"]["novel/acc30"][:2] == (16.0, 2.0)
  assert rows["ckd"]["base/med_err"][:2] == (70.0, 10.0)
  assert rows["ckd"]["seconds"] == 60.0
  table = ablation.markdown(rows, "test", 2)
  assert "| ckd | 15.0 ± 5.0 | 16.0 ± 2.0 | 70.0 ± 10.0 | 70.0 ± 10.0 | 60 |" in table


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
  config = default.get_config("tiny")
  config.dataset.data_dir = data_dir  # the session's tiny dataset (tests/conftest.py)
  workdir = str(tmp_path_factory.mktemp("ablation"))
  return config, workdir, ablation.run_study(config, workdir, 1, ["baseline", "ckd"])


def test_tiny_study_trains_a_teacher_per_seed_and_each_variant(study):
  config, workdir, results = study
  assert list(results[0]) == ["teacher", "baseline", "ckd"]
  for name, stage in (("teacher", "teacher"), ("baseline", "student"), ("ckd", "student")):
    with open(os.path.join(workdir, "seed0", name, "config.json")) as f:
      saved = json.load(f)
    assert saved["stage"] == stage
    assert set(results[0][name]["reports"][stage]) == set(config.dataset.eval_splits)
    if stage == "student":
      assert saved["student"]["ckd_weight"] == (1.0 if name == "ckd" else 0.0)
      assert saved["teacher_workdir"] == os.path.join(workdir, "seed0", "teacher")
  rows = ablation.summarise(results, "test")
  assert list(rows) == ["teacher", "baseline", "ckd"]
  assert all(row["base/acc30"][1] == 0.0 for row in rows.values())  # one seed: no spread.
  ablation.plot(rows, os.path.join(workdir, "ablation.png"))
  assert os.path.getsize(os.path.join(workdir, "ablation.png")) > 1000


def test_rerun_study_resumes_without_training(study):
  config, workdir, results = study
  timing = os.path.join(workdir, "seed0", "ckd", "timing.json")
  before = os.path.getmtime(timing)
  again = ablation.run_study(config, workdir, 1, ["baseline", "ckd"])
  assert os.path.getmtime(timing) == before
  assert json.loads(json.dumps(again)) == json.loads(json.dumps(results))
