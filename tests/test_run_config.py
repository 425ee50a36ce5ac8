"""config.json on a resume: result-changing edits are refused or, when allowed, recorded."""

import json
import os

import pytest

from configs import default
from kdpose import run_config


@pytest.fixture
def workdir(tmp_path):
  """A workdir whose run started with the tiny config."""
  run_config.save_config(default.get_config("tiny"), str(tmp_path))
  return str(tmp_path)


def _changed(edit):
  config = default.get_config("tiny")
  edit(config)
  return config


def _saved(workdir):
  return run_config.load_run_config(workdir)


FREE_EDITS = {
    "intervals": lambda c: c.teacher.update(log_every=7, eval_every=3, checkpoint_every=9,
                                            max_to_keep=5),
    "student intervals": lambda c: c.student.update(log_every=7, checkpoint_every=9),
    "data moved": lambda c: c.dataset.update(data_dir="/elsewhere", manual_dir="/raw"),
    "loader": lambda c: c.dataset.update(loader_threads=1, loader_workers=2),
    "eval batch": lambda c: c.update(eval_batch_size=64),
    "stage": lambda c: c.update(stage="student"),
}


@pytest.mark.parametrize("edit", FREE_EDITS.values(), ids=FREE_EDITS.keys())
def test_resume_takes_changes_that_leave_the_result_silently(workdir, edit):
  config = _changed(edit)
  run_config.record_config(config, workdir, resuming=True)
  assert json.loads(_saved(workdir).to_json()) == json.loads(config.to_json_best_effort())
  assert not os.path.exists(os.path.join(workdir, run_config.CHANGES_FILE))


RESULT_EDITS = {
    "seed": (lambda c: c.update(seed=3), "seed: 0 -> 3"),
    "learning rate": (lambda c: c.teacher.optimizer.update(learning_rate=0.01),
                      "teacher.optimizer.learning_rate: 0.001 -> 0.01"),
    "schedule": (lambda c: c.student.update(num_steps=8), "student.num_steps: 4 -> 8"),
    "loss weight": (lambda c: c.student.update(ckd_weight=0.5), "student.ckd_weight: 1.0 -> 0.5"),
    "model": (lambda c: c.teacher.model.update(embedding_dim=64),
              "teacher.model.embedding_dim: 32 -> 64"),
    "data": (lambda c: c.dataset.update(eval_splits=("test",)),
             "dataset.eval_splits: ['val', 'test'] -> ['test']"),
}


@pytest.mark.parametrize("edit, listed", RESULT_EDITS.values(), ids=RESULT_EDITS.keys())
def test_resume_refuses_a_change_of_the_result_naming_old_and_new(workdir, edit, listed):
  before = _saved(workdir)
  with pytest.raises(ValueError, match="would change its result") as error:
    run_config.record_config(_changed(edit), workdir, resuming=True)
  assert listed in str(error.value)
  assert _saved(workdir) == before


def test_allowed_change_is_recorded_and_saved(workdir):
  config = _changed(lambda c: c.update(seed=3, allow_config_change=True))
  config.teacher.log_every = 7  # free: not recorded
  run_config.record_config(config, workdir, resuming=True)
  assert _saved(workdir).seed == 3
  with open(os.path.join(workdir, run_config.CHANGES_FILE)) as f:
    (line,) = f.readlines()
  record = json.loads(line)
  assert record["changes"] == {"seed": [0, 3]} and record["time"][:2] == "20"


def test_a_run_without_checkpoints_takes_any_config(workdir):
  run_config.record_config(_changed(lambda c: c.update(seed=3)), workdir, resuming=False)
  assert _saved(workdir).seed == 3


def test_keys_new_since_the_run_began_are_not_compared(workdir):
  path = os.path.join(workdir, run_config.CONFIG_FILE)
  with open(path) as f:
    saved = json.load(f)
  del saved["teacher"]["log_every"], saved["flip_test"]
  with open(path, "w") as f:
    json.dump(saved, f)
  run_config.record_config(_changed(lambda c: c.update(flip_test=True)), workdir, resuming=True)
  assert _saved(workdir).flip_test
