"""Tests of the image encoders' parts: the depthwise implementations, EfficientNet-Lite's layout,
input normalisation, frozen stages and frozen BatchNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdpose import models, sharding
from kdpose.models import depthwise, efficientnet, encoder_parts


def _param_count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("kernel_size, strides, size", [(3, 1, 9), (3, 2, 8), (5, 2, 9),
                                                        (5, 1, 6)])
def test_shifted_depthwise_equals_the_grouped_convolution_and_its_gradients(
    kernel_size, strides, size):
  rng = np.random.default_rng(kernel_size * 10 + strides)
  x = jnp.asarray(rng.normal(size=(2, size, size, 5)), jnp.float32)
  shifted = depthwise.DepthwiseConv(kernel_size, strides, implementation="shifted")
  grouped = depthwise.DepthwiseConv(kernel_size, strides, implementation="grouped")
  variables = shifted.init(jax.random.key(0), x)
  assert variables["params"]["kernel"].shape == (kernel_size, kernel_size, 1, 5)
  # TF "same": ceil(size / stride) outputs per side.
  out = shifted.apply(variables, x)
  assert out.shape == (2, -(-size // strides), -(-size // strides), 5)
  np.testing.assert_allclose(out, grouped.apply(variables, x), atol=1e-5)
  # The library's grouped convolution with the same padding is the outside reference.
  reference = jax.lax.conv_general_dilated(
      x, variables["params"]["kernel"], (strides, strides), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5)
  np.testing.assert_allclose(out, reference, atol=1e-5)
  weights = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
  loss = lambda module: lambda v, inputs: jnp.sum(module.apply(v, inputs) * weights)
  grads_shifted = jax.grad(loss(shifted), argnums=(0, 1))(variables, x)
  grads_grouped = jax.grad(loss(grouped), argnums=(0, 1))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), grads_shifted,
               grads_grouped)


def _kernel_grads(x, sharded_batch=None):
  """d sum(out * w) / d kernel of the shifted and the grouped 3x3 depthwise conv of ``x``."""
  shifted, grouped = (depthwise.DepthwiseConv(3, 1, implementation=impl)
                      for impl in ("shifted", "grouped"))
  variables = shifted.init(jax.random.key(0), x[:1])
  weights = jnp.asarray(np.random.default_rng(3).normal(size=x.shape), jnp.float32)
  grad = lambda module: jax.jit(jax.grad(
      lambda v, inputs, w: jnp.sum(module.apply(v, inputs) * w)))
  if sharded_batch is not None:
    x, weights = jax.device_put((x, weights), sharded_batch)
  return [grad(m)(variables, x, weights)["params"]["kernel"] for m in (shifted, grouped)], (
      grad(shifted).lower(variables, x, weights).compile().as_text())


def test_shifted_kernel_gradient_sums_every_chunk_of_a_batch_of_several_chunks():
  # 48 images: 3 iterations of 16 (the existing test's batch of 2 runs one).
  x = jnp.asarray(np.random.default_rng(2).normal(size=(48, 6, 6, 4)), jnp.float32)
  (shifted, grouped), _ = _kernel_grads(x)
  np.testing.assert_allclose(shifted, grouped, rtol=1e-4, atol=1e-4)
  # Planted-bug check: dropping one image changes the kernel gradient far beyond the tolerance.
  (partial, _), _ = _kernel_grads(x.at[47].set(0.0))
  assert np.abs(np.asarray(partial) - np.asarray(grouped)).max() > 1e-2


def test_shifted_kernel_gradient_keeps_a_sharded_batch_on_its_devices():
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8
  x = jnp.asarray(np.random.default_rng(4).normal(size=(64, 6, 6, 4)), jnp.float32)
  (shifted, grouped), hlo = _kernel_grads(x, sharding.batch_sharding(mesh))
  np.testing.assert_allclose(shifted, grouped, rtol=1e-4, atol=1e-4)
  # Only the [3, 3, 1, 4] kernel gradient crosses devices (one all-reduce), no activation.
  assert "all-gather" not in hlo
  assert "all-reduce" in hlo


def test_depthwise_implementation_by_backend_and_unknown_names():
  assert depthwise._implementation("auto") == (
      "shifted" if jax.default_backend() == "cpu" else "grouped")
  with pytest.raises(ValueError, match="'fast'.*auto"):
    depthwise._implementation("fast")


@pytest.mark.parametrize("kernel_size, strides", [(5, 2), (3, 1)])
def test_lite_block_is_the_same_with_either_depthwise_implementation(kernel_size, strides):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 10, 10, 8)), jnp.float32)
  blocks = [efficientnet.MBConv(kernel_size, strides, 6, 8, depthwise=impl)
            for impl in ("shifted", "grouped")]
  variables = blocks[0].init(jax.random.key(0), x, train=False)

  def loss(block, params, inputs):
    out, _ = block.apply({"params": params, "batch_stats": variables["batch_stats"]}, inputs,
                         train=True, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(out))

  values = [jax.value_and_grad(lambda p, i, b=b: loss(b, p, i), argnums=(0, 1))(
      variables["params"], x) for b in blocks]
  np.testing.assert_allclose(values[0][0], values[1][0], rtol=1e-5)
  relative = jax.tree.map(lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)),
                          values[0][1], values[1][1])
  assert max(jax.tree.leaves(relative)) < 1e-4, relative  # float32 sums in other orders


@pytest.mark.parametrize("name, blocks, params", [
    ("efficientnet_lite0", 16, 4_652_008), ("efficientnet_lite1", 21, 5_416_680),
    ("efficientnet_lite2", 21, 6_092_072)])
def test_lite_layouts(name, blocks, params):
  net = models.get_image_encoder(name)(num_classes=1000)
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=False), images)
  assert sum(n.startswith("stage") for n in variables["params"]) == blocks
  assert _param_count(variables["params"]) == params
  assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 32)
  assert variables["params"]["head_conv"]["kernel"].shape[-1] == 1280


def test_round_filters_follows_the_tf_rule():
  # int(f * w + 4) // 8 * 8, raised by 8 when that loses more than 10%.
  assert [efficientnet.round_filters(f, 1.1) for f in (32, 16, 24, 40, 80, 112, 192, 320)] == [
      32, 16, 24, 48, 88, 120, 208, 352]
  assert efficientnet.round_filters(7, 1.0) == 8


def test_encoders_normalise_their_input_with_their_own_constants():
  images = jnp.asarray([[[[0.0, 127 / 255, 1.0]]]], jnp.float32)
  lite = encoder_parts.normalize(images, encoder_parts.LITE_MEAN, encoder_parts.LITE_STD,
                                 jnp.float32)
  np.testing.assert_allclose(lite[0, 0, 0], [-127 / 128, 0.0, 1.0], atol=1e-6)
  assert models.input_normalization({"image_encoder": "efficientnet_lite0"}) == {
      "mean": [127 / 255] * 3, "std": [128 / 255] * 3}
  assert models.input_normalization({"image_encoder": "resnet50"}) == {
      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.mark.parametrize("name", ["resnet_tiny", "efficientnet_lite0"])
def test_frozen_stages_get_no_gradient_and_keep_their_statistics(name):
  images = jnp.asarray(np.random.default_rng(2).uniform(size=(4, 32, 32, 3)), jnp.float32)
  # (Lite: the library depthwise convolution, which XLA compiles several times faster than
  # the shifted sums; freezing does not depend on it.)
  options = {"depthwise": "grouped"} if name.startswith("efficientnet") else {}
  free = models.get_image_encoder(name)(**options)
  frozen = models.get_image_encoder(name)(frozen_stages=2, **options)
  variables = jax.jit(lambda x: free.init(jax.random.key(0), x, train=False))(images)

  def grads_and_stats(net):
    def loss(params):
      out, updated = net.apply({"params": params, "batch_stats": variables["batch_stats"]},
                               images, train=True, mutable=["batch_stats"])
      return jnp.sum(out ** 2), updated["batch_stats"]
    return jax.device_get(jax.jit(jax.grad(loss, has_aux=True))(variables["params"]))

  grads, stats = grads_and_stats(frozen)
  free_grads, _ = grads_and_stats(free)
  variables = jax.device_get(variables)
  norm = lambda tree, module: float(sum(np.sum(np.abs(g)) for g in jax.tree.leaves(tree[module])))
  for module in variables["params"]:
    if encoder_parts.stage_index(module) < 2:  # stem (0) and the first stage (1)
      assert norm(grads, module) == 0.0 and norm(free_grads, module) > 0.0, module
      if module in stats:
        jax.tree.map(np.testing.assert_array_equal, stats[module],
                     variables["batch_stats"][module])
    else:
      assert norm(grads, module) > 0.0, module
  later = [m for m in variables["batch_stats"] if encoder_parts.stage_index(m) >= 2]
  assert any(not np.array_equal(jax.tree.leaves(stats[m])[0],
                                jax.tree.leaves(variables["batch_stats"][m])[0]) for m in later)


def test_frozen_norm_keeps_every_running_statistic():
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(4, 32, 32, 3)), jnp.float32)
  net = models.get_image_encoder("efficientnet_lite0")(frozen_norm=True, depthwise="grouped")
  variables = jax.jit(lambda x: net.init(jax.random.key(0), x, train=False))(images)
  out, updated = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, images)
  jax.tree.map(np.testing.assert_array_equal, updated["batch_stats"], variables["batch_stats"])
  # Frozen BatchNorm in training computes exactly what inference computes.
  inferred = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, images)
  np.testing.assert_allclose(out, inferred, rtol=1e-6)


def test_stage_index_of_encoder_names():
  assert [encoder_parts.stage_index(n) for n in ("stem_conv", "stem_norm", "stage0_block0",
                                                  "stage6_block0", "head_conv")] == [
      0, 0, 1, 7, encoder_parts.LAST_STAGE]
