"""Pretrained encoders are the same networks as their PyTorch originals.

The reference outputs in ``tests/fixtures/pretrained`` were computed once with torch by
``tools/make_pretrained_fixtures.py``; these tests read them without torch.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from kdpose import models, optimizers, state
from kdpose.models import pretrained, resnet, torch_file

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pretrained")
TOLERANCE = 1e-4


def _fixture(name: str):
  return np.load(os.path.join(FIXTURES, name))


def _variables(net, images):
  return jax.eval_shape(lambda: net.init(jax.random.key(0), images, train=False))


@functools.cache
def _lite_weights(name: str):
  module = pretrained.WEIGHT_PACKAGES[name][0]
  if importlib.util.find_spec(module) is None:
    pytest.skip(f"weight package {module} not installed")
  net = models.get_image_encoder(name)(num_classes=1000)
  images = jnp.asarray(_fixture("inputs.npz")["images"], jnp.float32) / 255.0
  target = _variables(net, images)
  return net, images, pretrained.load_encoder(name, "package", target)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1",
                                  "efficientnet_lite2"])
def test_lite_logits_and_features_equal_the_torch_reference(name):
  net, images, variables = _lite_weights(name)
  reference = _fixture("efficientnet_lite_reference.npz")
  logits = net.apply(variables, images, train=False)
  np.testing.assert_allclose(logits, reference[f"{name}/logits"], atol=TOLERANCE, rtol=0)
  trunk = net.clone(num_classes=0)
  features = trunk.apply({"params": {k: v for k, v in variables["params"].items()
                                     if k != "classifier"},
                          "batch_stats": variables["batch_stats"]}, images, train=False)
  np.testing.assert_allclose(features, reference[f"{name}/features"], atol=TOLERANCE, rtol=0)
  # The real photo in the fixture is recognised: both crops agree on the top class.
  assert np.argmax(logits[0]) == np.argmax(reference[f"{name}/logits"][0])


RESNETS = {
    "basic": ("resnet_basic.pth", functools.partial(
        resnet.ResNet, stage_sizes=(1, 1, 1, 1), stage_widths=(8, 16, 32, 64))),
    "bottleneck": ("resnet_bottleneck_moco.pth", functools.partial(
        resnet.ResNet, stage_sizes=(1, 2, 1, 1), stage_widths=(8, 16, 16, 32),
        block="bottleneck")),
}


@pytest.mark.parametrize("kind", sorted(RESNETS))
def test_resnet_features_equal_the_torchvision_layout_reference(kind):
  # basic: torch's zip format; bottleneck: a MoCo-style legacy file (module.encoder_q., fc).
  file, build = RESNETS[kind]
  reference = _fixture("resnet_reference.npz")
  images = jnp.asarray(reference["images"], jnp.float32) / 255.0
  net = build()
  variables = pretrained.convert(torch_file.load_state_dict(os.path.join(FIXTURES, file)),
                                 "resnet", _variables(net, images), file)
  features = net.apply(variables, images, train=False)
  np.testing.assert_allclose(features, reference[f"{kind}/features"], atol=TOLERANCE, rtol=0)


def test_mismatching_checkpoints_are_named_with_key_and_shapes():
  file, build = RESNETS["basic"]
  state_dict = torch_file.load_state_dict(os.path.join(FIXTURES, file))
  target = _variables(build(stage_widths=(8, 16, 32, 128)), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"resnet_basic.pth: 'layer4.0.bn1.bias' has shape "
                                       r"\(64,\).*needs \(128,\)"):
    pretrained.convert(state_dict, "resnet", target, file)
  deeper = _variables(build(stage_sizes=(1, 1, 1, 2)), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"no key 'layer4.1.bn1.bias'"):
    pretrained.convert(state_dict, "resnet", deeper, file)
  shallower = _variables(build(stage_sizes=(1, 1, 1), stage_widths=(8, 16, 32)),
                         jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"keys \['layer4.0.bn1.bias'.*different architecture"):
    pretrained.convert(state_dict, "resnet", shallower, file)


def test_weight_sources_that_do_not_exist():
  with pytest.raises(FileNotFoundError, match="/no/such.pth.*never downloaded"):
    pretrained.weight_file("resnet50", "/no/such.pth")
  with pytest.raises(ValueError, match="resnet50.*no weight package"):
    pretrained.weight_file("resnet50", "package")


def _lite_student_config():
  config = models.student_config("lite0")
  config.pretrained = "package"
  return config


def test_a_fresh_state_takes_the_package_weights_and_keeps_the_rest():
  _lite_weights("efficientnet_lite0")  # skips without the package
  config = _lite_student_config()
  model = models.build_student(config)
  tx = optax.adam(1e-3)
  init = functools.partial(state.init_train_state, model=model, tx=tx,
                           example_inputs=(jnp.zeros((1, 32, 32, 3)),))
  fresh = jax.jit(init)(jax.random.key(0))
  loaded = state.with_pretrained_encoder(fresh, config)
  file = pretrained.weight_file("efficientnet_lite0", "package")
  weights = torch_file.load_state_dict(file)
  np.testing.assert_array_equal(loaded.params["image_encoder"]["stem_conv"]["kernel"],
                                weights["_conv_stem.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded.batch_stats["image_encoder"]["head_norm"]["var"],
                                weights["_bn1.running_var"])
  np.testing.assert_array_equal(loaded.params["mlp"]["Dense_0"]["kernel"],
                                fresh.params["mlp"]["Dense_0"]["kernel"])
  assert state.with_pretrained_encoder(fresh, models.student_config("lite0")) is fresh


def test_fine_tuning_optimizer_scales_pretrained_and_freezes_stages():
  config = _lite_student_config()
  config.frozen_stages = 2
  params = {"image_encoder": {"stem_conv": {"kernel": jnp.ones(3)},
                              "stage0_block0": {"kernel": jnp.ones(3)},
                              "stage1_block0": {"kernel": jnp.ones(3)}},
            "mlp": {"kernel": jnp.ones(3)}}
  assert optimizers.parameter_labels(params, config) == {
      "image_encoder": {"stem_conv": {"kernel": "frozen"}, "stage0_block0": {"kernel": "frozen"},
                        "stage1_block0": {"kernel": "pretrained"}},
      "mlp": {"kernel": "new"}}
  opt = dict(name="adam", learning_rate=0.1, weight_decay=0.5, schedule="constant",
             warmup_steps=0, decay_at=(), decay_factor=0.1, grad_clip_norm=0.0,
             pretrained_lr_multiplier=0.1)
  tx, _ = optimizers.make_optimizer(ConfigDict(opt), 10, config)
  grads = jax.tree.map(lambda x: 2.0 * x, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is -lr * g / |g| (+ the L2 term inside g): -0.1 new, -0.01 pretrained, and
  # exactly nothing for frozen parameters, weight decay included.
  np.testing.assert_allclose(updates["mlp"]["kernel"], -0.1, rtol=1e-5)
  np.testing.assert_allclose(updates["image_encoder"]["stage1_block0"]["kernel"], -0.01,
                             rtol=1e-5)
  np.testing.assert_array_equal(updates["image_encoder"]["stem_conv"]["kernel"], 0.0)
  np.testing.assert_array_equal(updates["image_encoder"]["stage0_block0"]["kernel"], 0.0)
  # Without fine-tuning options the optimizer (and its checkpointed state) is the plain one.
  plain, _ = optimizers.make_optimizer(ConfigDict(opt), 10, models.student_config("small"))
  assert jax.tree.structure(plain.init(params)) != jax.tree.structure(tx.init(params))
