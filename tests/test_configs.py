"""Every shipped config loads, builds its models and its optimizers."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import pytest

from kdpose import models, optimizers

CONFIGS = [("default", None), ("default", "tiny"), ("default", "fast"),
           ("default", "pretrained"), ("default", "pretrained,baseline"), ("objectnet3d", None),
           ("pascal3d", None), ("pix3d_eval", None), ("synthetic_gpu", None)]


@pytest.mark.parametrize("name, arg", CONFIGS)
def test_shipped_config_builds_its_models(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  size = config.image_size
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  points = jax.ShapeDtypeStruct((2, config.num_points, 3), jnp.float32)
  teacher = models.build_teacher(config.teacher.model, config.bin_size)
  student = models.build_student(config.student.model, config.bin_size)
  teacher_vars = jax.eval_shape(lambda x, p: teacher.init(jax.random.key(0), x, p, train=False),
                                images, points)
  student_vars = jax.eval_shape(lambda x: student.init(jax.random.key(0), x, train=False),
                                images)
  for stage, variables in (("teacher", teacher_vars), ("student", student_vars)):
    cfg = config[stage]
    tx, schedule = optimizers.make_optimizer(cfg.optimizer, cfg.num_steps, cfg.model)
    jax.eval_shape(tx.init, variables["params"])
    assert float(schedule(cfg.num_steps // 2)) > 0.0
  out = jax.eval_shape(lambda v, x: student.apply(v, x, train=False), student_vars, images)
  assert out["embedding"].shape == (2, config.student.model.embedding_dim)


def test_pretrained_variant_puts_lite0_under_both_stages():
  from configs import default

  config = default.get_config("pretrained")
  assert config.image_size == 128
  for stage in ("teacher", "student"):
    assert config[stage].model.image_encoder == "efficientnet_lite0"
    assert config[stage].model.pretrained == "package"
  assert models.input_normalization(config.student.model)["std"] == [128 / 255] * 3


def test_unknown_variant_lists_the_known_ones():
  from configs import default

  with pytest.raises(ValueError, match="known: tiny, baseline, fast, pretrained"):
    default.get_config("huge")
