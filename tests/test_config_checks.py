"""Bad config values and unusable workdirs fail before anything is built, naming the key."""

import pytest

from configs import default
from kdpose import config_checks, sharding, trainers

BAD_VALUES = {
    "log_every": (lambda c: c.teacher.update(log_every=0), r"config.teacher.log_every=0 must"),
    "checkpoint_every": (lambda c: c.student.update(checkpoint_every=-2),
                         r"config.student.checkpoint_every=-2 must be > 0"),
    "num_steps": (lambda c: c.teacher.update(num_steps=0), r"config.teacher.num_steps=0 must"),
    "align temperature": (lambda c: c.teacher.update(align_temperature=0.0),
                          r"config.teacher.align_temperature=0.0 must be > 0"),
    "ckd temperature": (lambda c: c.student.update(ckd_temperature=-0.1),
                        r"config.student.ckd_temperature=-0.1 must be > 0"),
    "dropout 1": (lambda c: c.student.update(teacher_dropout=1.0),
                  r"config.student.teacher_dropout=1.0 must lie in \[0, 1\)"),
    "dropout < 0": (lambda c: c.student.update(teacher_dropout=-0.1),
                    r"config.student.teacher_dropout=-0.1"),
    "decay_at 1": (lambda c: c.teacher.optimizer.update(decay_at=(0.5, 1.0)),
                   r"config.teacher.optimizer.decay_at has 1.0: fractions"),
    "decay_at 0": (lambda c: c.student.optimizer.update(decay_at=(0.0,)),
                   r"config.student.optimizer.decay_at has 0.0"),
    "batch": (lambda c: c.teacher.update(batch_size=12),
              r"config.teacher.batch_size: Global batch size 12 is not divisible by the 8"),
    "eval batch": (lambda c: c.update(eval_batch_size=20),
                   r"config.eval_batch_size: Global batch size 20"),
    "stage": (lambda c: c.update(stage="both"), r"config.stage='both'; expected one of"),
    "loader threads": (lambda c: c.dataset.update(loader_threads=-1),
                       r"config.dataset.loader_threads=-1 must be >= 0"),
    "loader workers": (lambda c: c.dataset.update(loader_workers=-2),
                       r"config.dataset.loader_workers=-2 must be >= 0"),
}


def _bad(edit):
  config = default.get_config("tiny")
  edit(config)
  return config


@pytest.mark.parametrize("edit, message", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_value_is_named(edit, message):
  with pytest.raises(ValueError, match=message):
    config_checks.validate(_bad(edit), sharding.make_mesh())


def test_shipped_tiny_config_is_valid_and_every_bad_value_is_listed():
  mesh = sharding.make_mesh()
  config_checks.validate(default.get_config("tiny"), mesh)
  config = _bad(lambda c: c.teacher.update(log_every=0, align_temperature=0.0))
  with pytest.raises(ValueError, match=r"log_every=0 must be > 0; .*align_temperature=0.0"):
    config_checks.validate(config, mesh)


def test_values_of_a_stage_that_does_not_run_are_not_checked():
  config = _bad(lambda c: c.student.update(log_every=0))
  config.stage = "teacher"
  config_checks.validate(config, sharding.make_mesh())


def test_unwritable_workdir_is_named(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(OSError, match=f"Workdir {blocker}/run is not writable"):
    config_checks.check_workdir(str(blocker / "run"))
  config_checks.check_workdir(str(tmp_path / "new" / "run"))
  assert (tmp_path / "new" / "run").is_dir()


@pytest.mark.parametrize("workdir_in_a_file", [False, True])
def test_run_checks_before_loading_data(tmp_path, workdir_in_a_file):
  config = default.get_config("tiny")
  config.dataset.data_dir = str(tmp_path / "no_data_yet")
  (tmp_path / "a_file").write_text("")
  if workdir_in_a_file:
    workdir, error, message = str(tmp_path / "a_file" / "run"), OSError, "is not writable"
  else:
    config.student.teacher_dropout = 1.5
    workdir, error, message = str(tmp_path / "run"), ValueError, "teacher_dropout=1.5"
  with pytest.raises(error, match=message):
    trainers.run(config, workdir)
  assert not (tmp_path / "no_data_yet").exists()
