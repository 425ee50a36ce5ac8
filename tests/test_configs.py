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


def test_the_default_is_the_pretrained_recipe_and_tiny_is_not():
  from configs import common, default

  config = default.get_config()
  assert config.to_dict() == default.get_config("pretrained").to_dict()
  assert (config.image_size, config.num_points) == (128, 256)
  for stage in ("teacher", "student"):
    model = config[stage].model
    assert (model.image_encoder, model.pretrained) == ("efficientnet_lite0", "package")
    assert (model.pool_grid, model.frozen_stages, model.frozen_norm) == (2, 4, True)
    warmup = (config[stage].head_warmup.steps, config[stage].head_warmup.batch_size)
    assert warmup == ((600, 128) if stage == "teacher" else (1500, 256))
    strong = default.get_config("strong_teacher")[stage].head_warmup
    assert (strong.steps, strong.batch_size) == (1500, 256)
    tiny = default.get_config("tiny")[stage]
    assert (tiny.model.pretrained, tiny.head_warmup.steps) == ("", 0)
  assert models.input_normalization(config.student.model)["std"] == [128 / 255] * 3
  assert config.teacher.align_stop_gradient  # the pretrained recipe only
  assert not common.base_config("small").teacher.align_stop_gradient


def test_unknown_variant_lists_the_known_ones():
  from configs import default

  with pytest.raises(ValueError, match="known: tiny, baseline, fast, pretrained, strong_teacher"):
    default.get_config("huge")
