"""Head warm-up (LP-FT): the layers after a pretrained encoder learn on its frozen features,
which are the encoder's own inference-mode outputs; the encoder is untouched; cached once."""

import functools
import logging
import os

import jax
import numpy as np
import pytest

from configs import default
from kdpose import augment, losses, models, stages, state
from kdpose.data import pipeline
from kdpose.models import resnet
from kdpose.trainers import frozen_features, head_warmup, inputs

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "pretrained", "resnet_basic.pth")
# The fixture checkpoint's layout (tests/fixtures/pretrained/README.md).
FIXTURE_RESNET = functools.partial(resnet.ResNet, stage_sizes=(1, 1, 1, 1),
                                   stage_widths=(8, 16, 32, 64))


@pytest.fixture
def config(tmp_path_factory, monkeypatch, data_dir):
  monkeypatch.setitem(models.IMAGE_ENCODERS, "resnet_fixture", FIXTURE_RESNET)
  config = default.get_config("tiny")
  config.dataset.data_dir = data_dir  # the session's tiny dataset (tests/conftest.py)
  for stage in ("teacher", "student"):
    config[stage].model.update(dict(image_encoder="resnet_fixture", pretrained=FIXTURE))
    config[stage].head_warmup.update(dict(steps=40, batch_size=64, learning_rate=3e-3,
                                          cache_dir=str(tmp_path_factory.getbasetemp() / "fc")))
  return config


def _fresh(stage, config):
  model, _, _, init_fn = stages.BUILDERS[stage](config)
  fresh = jax.jit(init_fn)(jax.random.key(0))
  return model, state.with_pretrained_encoder(fresh, config[stage].model)


def _pose_loss(model, variables, train, stage):
  extra = (train["points"],) if stage == "teacher" else ()
  out = model.apply(variables, None, *extra, train=False, trunk=train["features"])
  return float(losses.pose_loss(out["pose"], train["viewpoint"], 15.0, train["symmetry"])[0])


@pytest.mark.parametrize("stage", ["student", "teacher"])
def test_warm_up_trains_the_heads_on_the_encoders_own_features(config, stage, caplog):
  train_data, _ = inputs.load_data(config)
  model, fresh = _fresh(stage, config)
  options = stages.STEP_OPTIONS[stage](config)
  with caplog.at_level(logging.INFO):
    warmed = head_warmup.warm_up(fresh, model, stage, config, train_data, options)
  # Its progress is logged like a stage's, the last step always.
  assert f"{stage} head warm-up: step 40/40 (100%)" in caplog.text
  # The encoder is untouched; every layer after it that the stage's warm-up loss reaches moved
  # (the student's pose loss does not reach its projector, the CKD embedding).
  still = {"image_encoder"} | ({"projector"} if stage == "student" else set())
  for name in ("params", "batch_stats"):
    for key in still & set(getattr(fresh, name)):
      jax.tree.map(np.testing.assert_array_equal, getattr(warmed, name)[key],
                   getattr(fresh, name)[key])
  heads = lambda params: jax.tree.leaves({k: v for k, v in params.items() if k not in still})
  assert all(not np.allclose(a, b)
             for a, b in zip(heads(warmed.params), heads(fresh.params), strict=True))
  # The cached features are what the model's encoder computes on the exact crops.
  train = head_warmup.training_features(config, stage, train_data, options.num_points
                                        if stage == "teacher" else 0)
  n = len(train_data.indices)
  assert len(train["features"]) == 2 * n
  loader = pipeline.BatchLoader(train_data)
  batch = next(loader.iterate([np.arange(8)]))
  loader.close()
  crops = augment.crop_images(batch["image"], batch["box"], config.image_size)
  encoder = FIXTURE_RESNET()
  variables = {k: getattr(fresh, k)["image_encoder"] for k in ("params", "batch_stats")}
  np.testing.assert_allclose(encoder.apply(variables, crops, train=False),
                             train["features"][:8], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(encoder.apply(variables, crops[:, :, ::-1], train=False),
                             train["features"][n:n + 8], rtol=1e-4, atol=1e-5)
  # The pose loss on those features fell.
  assert (_pose_loss(model, warmed.variables(), train, stage)
          < _pose_loss(model, fresh.variables(), train, stage) - 0.5)


def test_features_are_extracted_once_and_warm_up_needs_a_pretrained_encoder(config, monkeypatch):
  train_data, _ = inputs.load_data(config)
  calls = []
  make = frozen_features.make_extractor

  def counting(*args, **kwargs):
    extract = make(*args, **kwargs)
    return lambda *a: calls.append(1) or extract(*a)

  monkeypatch.setattr(frozen_features, "make_extractor", counting)
  config.student.head_warmup.cache_dir = str(config.student.head_warmup.cache_dir) + "_once"
  first = head_warmup.training_features(config, "student", train_data, 0)
  extracted = len(calls)
  assert extracted == -(-len(train_data.indices) // 64)
  again = head_warmup.training_features(config, "student", train_data, 0)
  assert len(calls) == extracted
  np.testing.assert_array_equal(first["features"], again["features"])
  model, fresh = _fresh("student", config)
  config.student.model.pretrained = ""
  with pytest.raises(ValueError, match="head_warmup.steps=40 needs a pretrained encoder"):
    head_warmup.warm_up(fresh, model, "student", config, train_data,
                        stages.student_step_options(config))
