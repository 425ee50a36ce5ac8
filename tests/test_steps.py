"""Train/eval steps of both stages on tiny models: learning signals, frozen teacher, sharding."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from configs import default
from kdpose import checkpoint, geometry, losses, sharding, stages, state, steps

BATCH, PAD = 16, 40


def _config():
  return default.get_config("tiny")


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "image": rng.integers(0, 255, (BATCH, PAD, PAD, 3), dtype=np.uint8),
      "box": np.tile(np.array([4.0, 6.0, 36.0, 30.0], np.float32), (BATCH, 1)),
      "viewpoint": np.stack([rng.uniform(0, 360, BATCH), rng.uniform(-30, 60, BATCH),
                             rng.uniform(-20, 20, BATCH)], -1).astype(np.float32),
      "points": rng.normal(size=(BATCH, 128, 3)).astype(np.float32),
      "symmetry": np.arange(BATCH, dtype=np.int32) % 3,  # none, two-fold, continuous, ...
  }


def _mesh(num_devices):
  return Mesh(np.asarray(jax.devices()[:num_devices]), (sharding.DATA_AXIS,))


def _first_moment(train_state):
  """Adam's first moment after one step from zero: (1 - b1) * (gradient + L2 term), so equal
  moments mean equal gradients (the parameters after one Adam step, about lr * sign(g), do not
  show a gradient wrong by a constant factor)."""
  return jax.device_get(optax.tree_utils.tree_get(train_state.opt_state, "mu"))


def _assert_same_step(metrics1, metrics8, state1, state8, keys):
  for key in (*keys, "grad_norm"):
    assert metrics8[key] == pytest.approx(metrics1[key], rel=1e-4, abs=1e-6), key
  moments1, moments8 = _first_moment(state1), _first_moment(state8)
  assert jax.tree.structure(moments1) == jax.tree.structure(moments8)
  largest = max(np.abs(m).max() for m in jax.tree.leaves(moments1))
  assert largest > 0
  # Summation order differs across devices, and some gradients are zero up to rounding (a bias
  # before a BatchNorm): the tolerance is relative, plus 1e-4 of the largest gradient.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * largest),
               moments1, moments8)
  # (Not the parameters: Adam's first step moves each by about lr * sign(gradient), so a
  # gradient that is zero up to rounding moves by +-lr on one side and not on the other.)


def _teacher_state(config, mesh):
  _, _, _, init_fn = stages.build_teacher(config)
  return state.create_sharded_state(init_fn, jax.random.key(0), mesh)


def _run_student_step(config, mesh, batch):
  teacher_state, _, _ = _teacher_state(config, mesh)
  model, tx, schedule, init_fn = stages.build_student(config)
  student_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(1), mesh)
  step = stages.jit_train_step(functools.partial(
      steps.student_train_step, model=model,
      teacher=stages.build_teacher(config)[0], tx=tx, schedule=schedule,
      options=stages.student_step_options(config)), init_fn, mesh, num_frozen=1)
  new_state, metrics = step(student_state, teacher_state.variables(),
                            sharding.host_to_global(batch, mesh), jax.random.key(2))
  return new_state, jax.device_get(metrics)


def _run_teacher_step(config, mesh, batch):
  model, tx, schedule, init_fn = stages.build_teacher(config)
  train_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(0), mesh)
  step = stages.jit_train_step(functools.partial(
      steps.teacher_train_step, model=model, tx=tx, schedule=schedule,
      options=stages.teacher_step_options(config)), init_fn, mesh)
  params_before = jax.tree.map(np.asarray, train_state.params)
  new_state, metrics = step(train_state, sharding.host_to_global(batch, mesh),
                            jax.random.key(3))
  return params_before, new_state, jax.device_get(metrics)


def test_teacher_step_updates_params_and_reports_terms():
  params_before, new_state, metrics = _run_teacher_step(_config(), _mesh(1), _batch())
  assert int(new_state.step) == 1
  assert set(metrics) >= {"loss", "pose", "pose_cls", "pose_reg", "align", "grad_norm",
                          "learning_rate", "acc30"}
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  assert metrics["loss"] == pytest.approx(metrics["pose"] + 0.5 * metrics["align"], rel=1e-5)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, np.asarray(b)), params_before,
                         new_state.params)
  # Everything with a gradient moves (inside residual blocks, the zero-initialised last
  # BatchNorm scale blocks the first step's gradient to the layers before it).
  for group in ("pose_heads", "point_encoder", "fusion", "projector", "image_feature"):
    assert all(jax.tree.leaves(changed[group])), group


def test_teacher_step_has_the_same_loss_and_gradients_on_1_and_8_devices():
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"
  config, batch = _config(), _batch(4)
  _, state1, metrics1 = _run_teacher_step(config, _mesh(1), batch)
  _, state8, metrics8 = _run_teacher_step(config, _mesh(8), batch)
  _assert_same_step(metrics1, metrics8, state1, state8, ("loss", "pose", "align"))


def test_student_step_matches_across_device_counts():
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"
  config = _config()
  batch = _batch(1)
  state1, metrics1 = _run_student_step(config, _mesh(1), batch)
  assert {"kd/ckd", "kd/retrieval_acc", "pose"} <= set(metrics1)
  state8, metrics8 = _run_student_step(config, _mesh(8), batch)
  # Loss, gradient norm and every gradient (not only the parameters after one Adam step).
  _assert_same_step(metrics1, metrics8, state1, state8, ("loss", "kd/ckd", "pose"))


def _capture_gradients() -> optax.GradientTransformation:
  """An "optimizer" whose state after an update is the gradient it was given (parameters stay)."""
  return optax.GradientTransformation(
      lambda params: jax.tree.map(jnp.zeros_like, params),
      lambda grads, _, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _kl(teacher, student, temperature):
  """KL(softmax(teacher / T) || softmax(student / T)) per row, float64."""
  log_t, log_s = _log_softmax(teacher / temperature), _log_softmax(student / temperature)
  return (np.exp(log_t) * (log_t - log_s)).sum(-1)


def _info_nce(query, keys, temperature, weights):
  """Mean over rows of -s_ii + log(exp(s_ii) + sum_{j != i} w_ij exp(s_ij)), s cosine / tau."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = unit(query) @ unit(keys).T / temperature
  others = ~np.eye(len(sim), dtype=bool)
  return np.mean(-np.diag(sim) + np.log(np.exp(np.diag(sim))
                                        + (weights * np.exp(sim) * others).sum(1)))


def test_student_step_takes_the_teacher_as_constants_with_every_kd_term_on():
  config = _config()
  cfg = config.student
  cfg.logit_weight, cfg.feature_weight, cfg.pose_aware, cfg.symmetric = 0.75, 0.5, True, True
  cfg.logit_temperature, cfg.feature_temperature = 2.0, 3.0  # so a missing T^2 shows.
  cfg.teacher_dropout = 0.0  # (random: the terms by hand below see the teacher embedding as is)
  # No flip, no in-plane turn: the step's labels are the batch's (the pose-aware weights).
  config.augment.flip_prob, config.augment.rotation_mode = 0.0, "none"
  options = stages.student_step_options(config)
  mesh = _mesh(1)
  teacher_model = stages.build_teacher(config)[0]
  teacher_vars = _teacher_state(config, mesh)[0].variables()
  model, _, schedule, init_fn = stages.build_student(config)
  student = state.create_sharded_state(init_fn, jax.random.key(1), mesh)[0]
  capture = _capture_gradients()
  student = student.replace(opt_state=capture.init(student.params))
  batch = sharding.host_to_global(_batch(5), mesh)
  seen = {}

  class Recording:  # the teacher, recording the inputs the step gives it
    def apply(self, variables, images, points, **kwargs):
      jax.debug.callback(lambda i, p: seen.update(images=np.asarray(i), points=np.asarray(p)),
                         images, points)
      return teacher_model.apply(variables, images, points, **kwargs)

  class Constant:  # a "teacher" whose variables are its outputs, whatever the inputs
    def apply(self, outputs, *inputs, mutable=False, **kwargs):
      return (outputs, {}) if mutable else outputs  # (as flax's apply answers)

  step = lambda teacher: functools.partial(
      steps.student_train_step, model=model, teacher=teacher, tx=capture, schedule=schedule,
      options=options)
  rng = jax.random.key(4)
  # (XLA -O0: these programs are compiled for this test alone, in half the time; they are
  # compared with each other, not with the optimised programs of other tests.)
  jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
  real_state, metrics = jax.device_get(jit(step(Recording()))(student, teacher_vars, batch, rng))
  jax.effects_barrier()
  # The teacher's outputs in inference mode on what the step showed it, passed in as constants.
  teacher_out = teacher_model.apply(teacher_vars, seen["images"], seen["points"], train=False)
  const_state, const_metrics = jax.device_get(jit(step(Constant()))(student, teacher_out, batch,
                                                                    rng))
  grads, const_grads = real_state.opt_state, const_state.opt_state
  largest = max(np.abs(g).max() for g in jax.tree.leaves(grads))
  assert largest > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * largest),
               grads, const_grads)
  assert metrics["loss"] == pytest.approx(const_metrics["loss"], rel=1e-5)
  # And the teacher's side sends no gradient at all: d loss / d teacher outputs is 0.
  teacher_grads = jit(jax.grad(
      lambda out: step(Constant())(student, out, batch, rng)[1]["loss"]))(teacher_out)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(teacher_grads))

  # Every term by hand (float64) on the student's outputs for the same images.
  outputs, _ = model.apply(student.variables(), seen["images"], train=True,
                           mutable=["batch_stats"])
  f64 = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64), tree)
  out, teach, viewpoint = f64(outputs), f64(teacher_out), np.asarray(batch["viewpoint"], float)
  weights = geometry.rotation_error(viewpoint[:, None], viewpoint[None]) / 180.0
  forward = _info_nce(out["embedding"], teach["embedding"], 0.1, weights)
  backward = _info_nce(teach["embedding"], out["embedding"], 0.1, weights.T)
  ckd = 0.5 * (forward + backward)
  # (Pose-aware and symmetric both change the value, so the comparison sees either missing.)
  assert abs(ckd - _info_nce(out["embedding"], teach["embedding"], 0.1, 1.0)) > 0.05
  assert abs(ckd - forward) > 1e-3
  logit = 4.0 * np.mean(sum(_kl(t, s, 2.0) for t, s in zip(
      teach["pose"]["logits"], out["pose"]["logits"], strict=True)))
  feature = 9.0 * np.mean(_kl(teach["embedding"], out["feature"], 3.0))
  pose = float(losses.pose_loss(outputs["pose"], batch["viewpoint"], config.bin_size,
                               batch["symmetry"])[0])
  for name, value in (("kd/ckd", ckd), ("kd/logit", logit), ("kd/feature", feature),
                      ("pose", pose)):
    assert float(value) > 1e-3, name
    assert metrics[name] == pytest.approx(float(value), rel=1e-4), name
  assert metrics["loss"] == pytest.approx(pose + ckd + 0.75 * logit + 0.5 * feature, rel=1e-4)


@pytest.mark.parametrize("ckd_projector", [True, False])
def test_contrastive_kd_trains_the_projector_only_when_it_is_used(ckd_projector):
  config = _config()
  config.student.ckd_projector = ckd_projector
  config.student.optimizer.weight_decay = 0.0  # L2 decay would move every weight.
  mesh = _mesh(1)
  _, init_fn = stages.build_student(config)[2:]
  initial = state.create_sharded_state(init_fn, jax.random.key(1), mesh)[0].params["projector"]
  new_state, _ = _run_student_step(config, mesh, _batch(2))
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), initial,
                       new_state.params["projector"])
  # Only the CKD term reaches the projector: without it (ckd on the feature) it stays put.
  assert all(jax.tree.leaves(moved)) == ckd_projector
  assert any(jax.tree.leaves(moved)) == ckd_projector


def test_baseline_student_runs_without_teacher():
  config = default.get_config("tiny,baseline")
  assert not stages.distills(config)
  mesh = _mesh(2)
  model, tx, schedule, init_fn = stages.build_student(config)
  train_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(1), mesh)
  step = stages.jit_train_step(functools.partial(
      steps.student_train_step, model=model, teacher=None, tx=tx, schedule=schedule,
      options=stages.student_step_options(config)), init_fn, mesh, num_frozen=1)
  _, metrics = step(train_state, {}, sharding.host_to_global(_batch(), mesh), jax.random.key(0))
  metrics = jax.device_get(metrics)
  assert not any(k.startswith("kd/") for k in metrics)
  assert metrics["loss"] == pytest.approx(metrics["pose"], rel=1e-6)


class _FixedPose(nn.Module):
  """No weights: every sample's pose says azimuth 37.5, elevation 7.5, in-plane 7.5 degrees
  (the centres of bins 2, 6 and 12: logit 10 there, offsets 0)."""

  @nn.compact
  def __call__(self, crops, *, train):
    def head(count, index):
      return jnp.broadcast_to(10.0 * jax.nn.one_hot(index, count), (crops.shape[0], count))
    logits = (head(24, 2), head(12, 6), head(24, 12))
    return {"pose": {"logits": logits, "offsets": tuple(jnp.zeros_like(x) for x in logits)}}


def test_eval_step_reports_the_error_of_the_decoded_prediction_up_to_symmetry():
  none, two_fold, continuous = (geometry.SYMMETRY_NONE, geometry.SYMMETRY_TWO_FOLD,
                                geometry.SYMMETRY_CONTINUOUS)
  # label, symmetry, error (degrees) against the prediction (37.5, 7.5, 7.5), by hand: at one
  # elevation and in-plane angle, azimuths differing by d are a turn by d about the object's up
  # axis, and so on for the other angles alone.
  cases = [((67.5, 7.5, 7.5), none, 30.0), ((37.5, 7.5, -12.5), none, 20.0),
           ((37.5, 32.5, 7.5), none, 25.0), ((217.5, 7.5, 7.5), none, 180.0),
           ((227.5, 7.5, 7.5), two_fold, 10.0), ((160.5, 7.5, 7.5), continuous, 0.0),
           ((37.5, 7.5, 7.5), none, 0.0), ((47.5, 7.5, 7.5), two_fold, 10.0)]
  batch = {**_batch(), "viewpoint": np.array([c[0] for c in cases], np.float32),
           "symmetry": np.array([c[1] for c in cases], np.int32)}
  batch = {key: value[:len(cases)] for key, value in batch.items()}
  mesh = _mesh(2)
  out = jax.device_get(jax.jit(functools.partial(
      steps.eval_step, model=_FixedPose(), options=stages.student_step_options(_config()),
      uses_points=False))({}, sharding.host_to_global(batch, mesh)))
  np.testing.assert_allclose(out["viewpoint"], np.tile([37.5, 7.5, 7.5], (len(cases), 1)),
                             atol=1e-4)
  np.testing.assert_allclose(out["error"], [c[2] for c in cases], atol=0.05)
  np.testing.assert_allclose(out["confidence"], np.tile(np.exp(10) / (np.exp(10) + [23, 11, 23]),
                                                       (len(cases), 1)), rtol=1e-5)


def test_steps_take_the_batch_symmetry_and_require_it():
  config = _config()
  mesh = _mesh(1)
  model, tx, schedule, init_fn = stages.build_teacher(config)
  step = stages.jit_train_step(functools.partial(
      steps.teacher_train_step, model=model, tx=tx, schedule=schedule,
      options=stages.teacher_step_options(config)), init_fn, mesh)
  run = {}
  for code in (geometry.SYMMETRY_NONE, geometry.SYMMETRY_CONTINUOUS):
    batch = dict(_batch(), symmetry=np.full(BATCH, code, np.int32))
    train_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(0), mesh)
    _, metrics = step(train_state, sharding.host_to_global(batch, mesh), jax.random.key(3))
    run[code] = jax.device_get(metrics)
  plain, continuous = run[geometry.SYMMETRY_NONE], run[geometry.SYMMETRY_CONTINUOUS]
  # Same images, same weights (the alignment term agrees): continuous samples drop only the
  # azimuth terms, whose cross-entropy is about log 24 = 3.2 for an untrained head, and every
  # azimuth counts as right.
  assert continuous["align"] == pytest.approx(plain["align"], rel=1e-6)
  assert 1.0 < plain["pose_cls"] - continuous["pose_cls"] < 6.0
  assert continuous["acc30"] > plain["acc30"] and continuous["med_err"] < plain["med_err"]
  no_symmetry = {k: v for k, v in _batch().items() if k != "symmetry"}
  with pytest.raises(KeyError, match="the batch has no 'symmetry'"):
    steps.eval_step({}, no_symmetry, model=model, options=stages.teacher_step_options(config),
                    uses_points=True)


def test_eval_step_with_swapped_shapes_sees_the_points_half_a_batch_away():
  config = _config()
  mesh = _mesh(2)
  model, _, _, init_fn = stages.build_teacher(config)
  train_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(0), mesh)
  batch = _batch()
  rolled = dict(batch, points=np.concatenate([batch["points"][BATCH // 2:],
                                              batch["points"][:BATCH // 2]]))
  run = lambda b, swap: jax.device_get(jax.jit(functools.partial(
      steps.eval_step, model=model, options=stages.teacher_step_options(config), uses_points=True,
      swap_shapes=swap))(train_state.variables(), sharding.host_to_global(b, mesh)))
  swapped, own = run(batch, True), run(batch, False)
  np.testing.assert_allclose(swapped["confidence"], run(rolled, False)["confidence"], atol=1e-6)
  assert np.abs(swapped["confidence"] - own["confidence"]).max() > 1e-4


def test_sample_points_draws_distinct_stored_points():
  points = jnp.arange(2 * 10 * 3, dtype=jnp.float32).reshape(2, 10, 3)
  drawn = steps.sample_points(jax.random.key(0), points, 6)
  assert drawn.shape == (2, 6, 3)
  for b in range(2):
    rows = {tuple(r) for r in np.asarray(drawn[b])}
    assert len(rows) == 6 and rows <= {tuple(r) for r in np.asarray(points[b])}


def test_checkpoint_round_trip_and_incomplete_step_is_ignored(tmp_path):
  config = _config()
  mesh = _mesh(1)
  train_state, abstract, _ = _teacher_state(config, mesh)
  train_state = train_state.replace(step=jnp.asarray(5, jnp.int32))
  ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
  ckpts.save(5, train_state, {"stage": "teacher"})
  ckpts.wait()
  ckpts.close()
  # A save that was killed midway leaves only orbax's temporary directory behind; a resume
  # opens a new manager on the directory, which must not take it for a step.
  (tmp_path / "ckpt" / "9.orbax-checkpoint-tmp-123").mkdir()
  resumed = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
  assert resumed.latest_step() == 5 and resumed.all_steps() == [5]
  restored, meta = resumed.restore(abstract)
  resumed.close()
  assert meta == {"stage": "teacher"}
  # The whole state: step, params, batch statistics and optimizer state.
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               train_state, restored)


def test_restoring_a_checkpoint_of_another_model_is_refused_naming_it(tmp_path):
  config, wider = _config(), _config()
  wider.teacher.model.embedding_dim *= 2
  mesh = _mesh(1)
  abstract = {name: state.abstract_state(build(c)[3], mesh)[0] for name, build, c in (
      ("teacher", stages.build_teacher, config), ("student", stages.build_student, config),
      ("wider", stages.build_teacher, wider))}
  # (Its values do not matter: a state of the teacher's shapes, without compiling its init.)
  saved = jax.tree.map(lambda a: jnp.full(a.shape, 3, a.dtype), abstract["teacher"])
  ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
  ckpts.save(4, saved, {"stage": "teacher"})
  ckpts.wait()
  ckpts.close()
  resumed = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
  try:
    for other in ("student", "wider"):
      with pytest.raises(ValueError, match=r"ckpt/4 does not match the model of this config"):
        resumed.restore(abstract[other])
    restored, _ = resumed.restore(abstract["teacher"])  # its own model still restores
    assert int(restored.step) == 3
  finally:
    resumed.close()


@pytest.mark.parametrize("skip", [False, True])
def test_skip_nonfinite_keeps_the_state_of_a_nan_update_and_only_then_changes_the_optimizer(skip):
  from kdpose import optimizers

  cfg = _config().teacher
  tx, _ = optimizers.make_optimizer(cfg.optimizer, cfg.num_steps, cfg.model, skip_nonfinite=skip)
  plain, _ = optimizers.make_optimizer(cfg.optimizer, cfg.num_steps, cfg.model)
  params = {"w": jnp.ones(3)}
  before = state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats={"mean": jnp.zeros(3)}, opt_state=tx.init(params))
  assert (jax.tree.structure(before.opt_state) == jax.tree.structure(plain.init(params))) != skip
  nan = jnp.full(3, jnp.nan)
  after, metrics = steps._apply_gradients(before, {"w": nan}, {"mean": nan}, tx)
  assert int(after.step) == 1
  if not skip:
    assert metrics == {} and np.isnan(after.params["w"]).all()
    return
  assert float(metrics["skipped_updates"]) == 1.0
  np.testing.assert_array_equal(after.params["w"], 1.0)
  np.testing.assert_array_equal(after.batch_stats["mean"], 0.0)
  after, metrics = steps._apply_gradients(after, {"w": jnp.ones(3)}, {"mean": jnp.ones(3)}, tx)
  assert float(metrics["skipped_updates"]) == 0.0 and (after.params["w"] < 1.0).all()
  np.testing.assert_array_equal(after.batch_stats["mean"], 1.0)


@pytest.mark.parametrize("stop", [False, True])
def test_alignment_moves_the_fused_embedding_only_without_the_stop(stop):
  rng = np.random.default_rng(0)
  batch = _batch()
  counts = geometry.num_bins(15.0)
  pose = {key: tuple(jnp.asarray(rng.normal(size=(BATCH, c)), jnp.float32) for c in counts)
          for key in ("logits", "offsets")}
  fused = jnp.asarray(rng.normal(size=(BATCH, 8)), jnp.float32)
  image = jnp.asarray(rng.normal(size=(BATCH, 8)), jnp.float32)
  options = dataclasses.replace(stages.teacher_step_options(_config()), align_stop_gradient=stop)

  def loss(fused, image):
    outputs = {"pose": pose, "embedding": fused, "image_embedding": image}
    return steps.teacher_objective(outputs, batch["viewpoint"], batch["symmetry"], options)[0]

  grad_fused, grad_image = jax.grad(loss, argnums=(0, 1))(fused, image)
  # The pose terms do not depend on the embeddings here: only the alignment sends gradients.
  assert (np.abs(grad_fused).max() == 0.0) == stop
  assert np.abs(grad_image).max() > 1e-4
  plain = dataclasses.replace(options, align_stop_gradient=False)
  expected = jax.grad(lambda i: steps.teacher_objective(
      {"pose": pose, "embedding": fused, "image_embedding": i}, batch["viewpoint"],
      batch["symmetry"], plain)[0])(image)
  np.testing.assert_allclose(grad_image, expected, rtol=1e-6)
