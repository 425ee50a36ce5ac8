"""Export, load and predict with a tiny student: evaluation's answers, flip test, CLI, failures."""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import ExifTags, Image

from configs import default
from kdpose import (
  augment,
  checkpoint,
  export,
  geometry,
  inference,
  predict,
  run_config,
  stages,
  steps,
)
from kdpose.data import crops

STEP, PAD = 4, 48
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (x1, y1, x2, y2) in pixels of the PAD x PAD images: inside, whole, partly outside, fractional.
BOXES = np.array([[4, 6, 36, 30], [0, 0, 48, 48], [-5, 10, 30, 60], [20.3, 11.7, 41.9, 25.2]],
                 np.float32)


def _perturbed(train_state):
  """Random weights and BatchNorm statistics far from their init, so every leaf matters."""
  leaves, tree = jax.tree.flatten(train_state.variables())
  keys = jax.random.split(jax.random.key(7), len(leaves))
  noisy = [a + 0.3 * jax.random.normal(k, a.shape) if a.ndim else a
           for a, k in zip(leaves, keys, strict=True)]
  variables = jax.tree.unflatten(tree, noisy)
  variables["batch_stats"] = jax.tree.map(jax.numpy.abs, variables["batch_stats"])  # var > 0.
  return train_state.replace(step=train_state.step + STEP, **variables)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A workdir as training leaves it: config.json and a student checkpoint; and its export."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = default.get_config("tiny")
  run_config.save_config(config, workdir)
  model, _, _, init_fn = stages.build_student(config)
  train_state = _perturbed(jax.jit(init_fn)(jax.random.key(0)))
  checkpoints = checkpoint.StageCheckpoints(os.path.join(workdir, "student", "checkpoints"))
  checkpoints.save(STEP, train_state, {"stage": "student", "step": STEP})
  checkpoints.close()
  return types.SimpleNamespace(workdir=workdir, config=config, model=model, state=train_state,
                               export_dir=export.export_student(workdir))


def _images(seed=0, count=4):
  return np.random.default_rng(seed).integers(0, 256, (count, PAD, PAD, 3), dtype=np.uint8)


def test_export_holds_what_training_had(run):
  meta = export.read_metadata(run.export_dir)
  assert meta["format_version"] == export.FORMAT_VERSION
  assert (meta["image_size"], meta["bin_size"], meta["source"]["step"]) == (32, 15.0, STEP)
  assert meta["model"] == json.loads(json.dumps(run.config.student.model.to_dict()))
  # The tiny student's ResNet normalises with the ImageNet statistics, recorded for serving.
  assert meta["input"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "range": "RGB in [0, 1]"}
  _, variables, _ = export.load_export(run.export_dir)
  expected = run.state.variables()
  assert jax.tree.structure(variables) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_predictor_equals_eval_step(run):
  images = _images()
  batch = {"image": images, "box": BOXES, "viewpoint": np.zeros((len(BOXES), 3), np.float32),
           "points": np.zeros((len(BOXES), 8, 3), np.float32),
           "symmetry": np.zeros(len(BOXES), np.int32)}
  eval_step = jax.jit(functools.partial(steps.eval_step, model=run.model,
                                        options=stages.student_step_options(run.config),
                                        uses_points=False))
  expected = jax.device_get(eval_step(run.state.variables(), batch))
  viewpoints, confidence = predict.Predictor(run.export_dir, batch_size=3).predict_with_confidence(
      list(images), BOXES)
  np.testing.assert_array_less(geometry.rotation_error(viewpoints, expected["viewpoint"]), 1e-3)
  np.testing.assert_allclose(confidence, expected["confidence"], atol=1e-5)
  # Different weights would answer differently: the comparison is not vacuous.
  assert np.ptp(viewpoints[:, 0]) > 1.0


class _KnowsLeftFromRight(nn.Module):
  """No weights. Sure (logit 10) of azimuth bin 2 (37.5 degrees) when the crop's left half is
  brighter than its right half; when it is darker that logit is -10, so the first bin (7.5
  degrees) wins, unsure (about 1/23); equal halves: every azimuth logit 0 (1/24). Elevation
  bin 7 and in-plane bin 13 (22.5 degrees each) at logit 10 always; offsets 0."""

  @nn.compact
  def __call__(self, crops, *, train):
    half = crops.shape[2] // 2
    difference = crops[:, :, :half].mean((1, 2, 3)) - crops[:, :, half:].mean((1, 2, 3))
    side = jnp.where(jnp.abs(difference) > 0.01, jnp.sign(difference), 0.0)  # (not rounding)
    ones = jnp.ones_like(side)
    logits = tuple(10.0 * scale[:, None] * jax.nn.one_hot(index, count)[None]
                   for scale, index, count in ((side, 2, 24), (ones, 7, 12), (ones, 13, 24)))
    return {"pose": {"logits": logits, "offsets": tuple(jnp.zeros_like(x) for x in logits)}}


def test_flip_test_keeps_the_more_confident_prediction_mapped_back_by_the_flip_rule():
  crops = np.zeros((3, 32, 32, 3), np.float32)
  crops[0, :, :16], crops[1, :, 16:], crops[2] = 1.0, 1.0, 0.5  # bright left, right, neither
  predict_fn = jax.jit(functools.partial(inference.predict_crops, _KnowsLeftFromRight(),
                                         bin_size=15.0), static_argnames="flip_test")
  plain, _ = predict_fn({}, crops)
  np.testing.assert_allclose(plain, [[37.5, 22.5, 22.5], [7.5, 22.5, 22.5], [7.5, 22.5, 22.5]],
                             atol=1e-4)
  chosen, confidence = predict_fn({}, crops, flip_test=True)
  # Bright right: the mirrored crop is the sure one, 37.5 / 22.5 there; mirrored back (a -> 360
  # - a, t -> -t) that is 322.5 / -22.5. A tie keeps the unflipped prediction.
  np.testing.assert_allclose(chosen, [[37.5, 22.5, 22.5], [322.5, 22.5, -22.5],
                                      [7.5, 22.5, 22.5]], atol=1e-4)
  sure = np.exp(10) / (np.exp(10) + 23)
  np.testing.assert_allclose(confidence[:, 0], [sure, sure, 1 / 24], rtol=1e-5)


def test_mirrored_crop_is_the_training_flip():
  """flip_test mirrors crops by reversing columns: exactly augment's horizontal flip."""
  config = augment.AugmentConfig(box_jitter=0.0, flip_prob=1.0, rotation_mode="none",
                                 brightness=0.0, contrast=0.0, saturation=0.0,
                                 grayscale_prob=0.0, blur_prob=0.0)
  images, views = _images(2), np.array([[30.0, 10.0, 20.0]] * len(BOXES), np.float32)
  flipped, labels, _ = augment.augment_batch(jax.random.key(0), images, BOXES, views, 32, config)
  np.testing.assert_allclose(flipped, augment.crop_images(images, BOXES, 32)[:, :, ::-1],
                             atol=1e-5)
  np.testing.assert_allclose(labels, geometry.flip_viewpoint(views), atol=1e-5)


def test_mirrored_points_go_with_the_flipped_label():
  """Mirroring the camera x equals R(flip(v)) applied to the object mirrored in its x."""
  view = np.array([37.0, 21.0, -12.0])
  mirror = np.diag([-1.0, 1.0, 1.0])
  lhs = mirror @ geometry.viewpoint_to_rotation(*view)
  rhs = geometry.viewpoint_to_rotation(*geometry.flip_viewpoint(view)) @ mirror
  np.testing.assert_allclose(lhs, rhs, atol=1e-12)
  points = jax.numpy.array([[[1.0, 2.0, 3.0]]])
  np.testing.assert_array_equal(inference._mirror_points(points), [[[-1.0, 2.0, 3.0]]])


def _write_inputs(directory):
  rng = np.random.default_rng(3)
  paths = {name: os.path.join(directory, name)
           for name in ("photo.jpg", "cutout.png", "gray.png", "print.jpg", "broken.jpg")}
  Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(paths["photo.jpg"])
  Image.fromarray(rng.integers(0, 256, (50, 40, 4), dtype=np.uint8), "RGBA").save(
      paths["cutout.png"])
  Image.fromarray(rng.integers(0, 256, (30, 45), dtype=np.uint8), "L").save(paths["gray.png"])
  Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).convert("CMYK").save(
      paths["print.jpg"])
  with open(paths["broken.jpg"], "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
  return paths


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "kdpose.predict", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=120)


def test_cli_answers_good_images_and_names_the_bad_one(run, tmp_path):
  paths = _write_inputs(tmp_path)
  picture = str(tmp_path / "grid.png")
  result = _cli("--model", run.export_dir, "--json", "--visualize", picture, *paths.values())
  assert result.returncode == 1, result.stderr
  # Several images: a grid of 256 px cells (4 columns) with a 12 px label line each.
  assert Image.open(picture).size == (4 * 256, 256 + 12)
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  assert [line["image"] for line in lines] == list(paths.values())
  assert "broken.jpg: cannot read the image" in lines[-1]["error"]
  assert "broken.jpg" in result.stderr
  good = [p for name, p in paths.items() if name != "broken.jpg"]
  expected, confidence = predict.Predictor(run.export_dir).predict_with_confidence(good)
  got = np.array([[line[k] for k in ("azimuth", "elevation", "inplane")] for line in lines[:-1]])
  np.testing.assert_array_less(geometry.rotation_error(got, expected), 0.01)
  assert lines[0]["confidence"]["azimuth"] == pytest.approx(confidence[0, 0], abs=1e-4)


def test_cli_text_lines_box_and_picture(run, tmp_path):
  paths = _write_inputs(tmp_path)
  picture = str(tmp_path / "axes.png")
  result = _cli("--model", run.export_dir, "--box", "10,5,70,50", "--visualize", picture,
                paths["photo.jpg"])
  assert result.returncode == 0, result.stderr
  pattern = (r"(\S+) azimuth=(-?[\d.]+) elevation=(-?[\d.]+) inplane=(-?[\d.]+) "
             r"confidence=([\d.]+)")
  match = re.fullmatch(pattern, result.stdout.strip())
  assert match and match.group(1) == paths["photo.jpg"], result.stdout
  expected = predict.Predictor(run.export_dir)([paths["photo.jpg"]], [[10, 5, 70, 50]])[0]
  np.testing.assert_allclose([float(match.group(i)) for i in (2, 3, 4)], expected, atol=0.01)
  assert Image.open(picture).size == (80, 60)  # one image: that image, with axes drawn.


def test_cli_usage_errors(run, tmp_path):
  paths = _write_inputs(tmp_path)
  mismatch = _cli("--model", run.export_dir, "--box", "0,0,5,5", "--box", "1,1,9,9",
                  paths["photo.jpg"], paths["gray.png"], paths["cutout.png"])
  assert mismatch.returncode == 2 and "3 images but 2 --box" in mismatch.stderr
  no_model = _cli("--model", str(tmp_path), paths["photo.jpg"])
  assert no_model.returncode == 2 and "model.json not found" in no_model.stderr


def test_bad_boxes_name_the_file(run, tmp_path):
  path = _write_inputs(tmp_path)["photo.jpg"]
  predictor = predict.Predictor(run.export_dir)
  for box, message in (([100, 0, 120, 10], "lies outside the 80x60 image"),
                       ([10, 10, 10.5, 30], "degenerate"), ([1, 2, 3], "not four numbers")):
    with pytest.raises(predict.InputError, match=re.escape(path) + ".*" + message):
      predictor([path], [box])
  with pytest.raises(predict.InputError, match="not four numbers"):
    predict.parse_box("1,2,x,4")
  with pytest.raises(predict.InputError, match=r"images\[0\]: expected a uint8"):
    predictor([np.zeros((8, 8, 3), np.float32)])


def test_huge_images_are_downscaled_with_their_box(run):
  # Content of 25-pixel blocks survives any resampling (pixel noise would alias differently).
  blocks = np.random.default_rng(4).integers(0, 256, (12, 16, 3), dtype=np.uint8)
  small = np.repeat(np.repeat(blocks, 25, axis=0), 25, axis=1)
  huge = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)  # 2400 x 3200 > MAX_IMAGE_SIDE.
  obj = predict.prepare_object(huge, [800, 400, 2400, 2000])
  assert max(obj.image.shape) == predict.MAX_IMAGE_SIDE
  np.testing.assert_allclose(obj.box, np.array([800, 400, 2400, 2000]) * 0.64, rtol=1e-6)
  predictor = predict.Predictor(run.export_dir)
  error = geometry.rotation_error(predictor([huge], [[800, 400, 2400, 2000]]),
                                  predictor([small], [[100, 50, 300, 250]]))
  assert error[0] < 5.0  # the same content at another resolution.


def test_photos_are_turned_upright_by_their_exif_orientation(run, tmp_path):
  """A phone photo stored 40x24 with Orientation 6 (show turned 90° clockwise) is 24x40 upright;
  the dataset loader keeps the stored pixels, which its annotations refer to."""
  path = str(tmp_path / "phone.jpg")
  exif = Image.Exif()
  exif[ExifTags.Base.Orientation] = 6
  blocks = np.random.default_rng(5).integers(0, 256, (3, 5, 3), dtype=np.uint8)
  Image.fromarray(np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)).save(path, exif=exif)
  stored = np.asarray(Image.open(path).convert("RGB"))  # [24, 40, 3], decoded as stored.
  image, scale, size = predict.load_image(path)
  assert (image.shape, scale, size) == ((40, 24, 3), (1.0, 1.0), (24, 40))
  np.testing.assert_array_equal(image, np.rot90(stored, k=-1))  # k=-1: clockwise.
  # y2 = 40 lies outside the stored 40x24 picture, inside the upright one.
  obj = predict.prepare_object(path, [2, 20, 22, 40])
  np.testing.assert_array_equal(obj.box, [2, 20, 22, 40])
  predictor = predict.Predictor(run.export_dir)
  np.testing.assert_allclose(predictor([path]), predictor([np.rot90(stored, k=-1).copy()]),
                             atol=1e-4)
  assert crops.load_rgb(path, expected_size=(40, 24)).size == (40, 24)


def _copy(run, tmp_path):
  target = str(tmp_path / "copy")
  shutil.copytree(run.export_dir, target)
  return target


def _largest_variable_file(model_dir):
  meta = export.read_metadata(model_dir)
  return os.path.join(model_dir, max(meta["files"], key=lambda f: meta["files"][f]["bytes"]))


def test_bad_model_dirs_fail_naming_the_file(run, tmp_path):
  with pytest.raises(FileNotFoundError, match="model.json not found"):
    export.load_export(str(tmp_path / "nowhere"))
  cases = []
  model_dir = _copy(run, tmp_path / "truncated_json")
  path = os.path.join(model_dir, export.MODEL_JSON)
  text = open(path).read()
  open(path, "w").write(text[:len(text) // 2])
  cases.append((model_dir, ValueError, "model.json is not valid JSON"))
  model_dir = _copy(run, tmp_path / "version")
  meta = json.loads(text)
  meta["format_version"] = export.FORMAT_VERSION + 1
  json.dump(meta, open(os.path.join(model_dir, export.MODEL_JSON), "w"))
  cases.append((model_dir, ValueError, "export format version 2; this kdpose"))
  model_dir = _copy(run, tmp_path / "truncated_variables")
  victim = _largest_variable_file(model_dir)
  open(victim, "r+b").truncate(os.path.getsize(victim) // 2)
  cases.append((model_dir, ValueError, re.escape(victim) + ".*truncated or corrupt"))
  model_dir = _copy(run, tmp_path / "missing_variables")
  victim = _largest_variable_file(model_dir)
  os.remove(victim)
  cases.append((model_dir, FileNotFoundError, re.escape(victim) + " is missing"))
  for model_dir, error, message in cases:
    with pytest.raises(error, match=message):
      export.load_export(model_dir)


def test_export_is_atomic_and_replaces_only_exports(run, tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="no complete checkpoint of step 3"):
    export.export_student(run.workdir, str(tmp_path / "e"), step=3)
  out = str(tmp_path / "export")

  def killed(*args):
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    patch.setattr(export, "_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
      export.export_student(run.workdir, out)
  assert os.listdir(tmp_path) == []  # no export, no leftover staging directory.
  export.export_student(run.workdir, out)
  stamp = os.path.join(out, "stale")
  open(stamp, "w").close()
  assert export.export_student(run.workdir, out) == out
  assert not os.path.exists(stamp) and export.read_metadata(out)["source"]["step"] == STEP
  with pytest.raises(FileExistsError, match="not a kdpose export"):
    export.export_student(run.workdir, run.workdir)


def test_serving_needs_no_training_stack(run, tmp_path, without_training_stack):
  """With TensorFlow, TFDS and clu not importable, an export loads, predicts and is rewritten."""
  path = _write_inputs(tmp_path)["photo.jpg"]
  rewritten = str(tmp_path / "rewritten")
  code = without_training_stack + (
      "import json, sys\n"
      "from kdpose import export, predict\n"
      f"print(json.dumps(predict.Predictor({run.export_dir!r})([{path!r}]).tolist()))\n"
      f"model, variables, meta = export.load_export({run.export_dir!r})\n"
      f"export.write_export({rewritten!r}, meta['model'], variables,\n"
      "                    image_size=meta['image_size'], bin_size=meta['bin_size'],\n"
      "                    source=meta['source'])\n"
      f"print(json.dumps(predict.Predictor({rewritten!r})([{path!r}]).tolist()))\n"
      "heavy = [m for m in ('kdpose.trainers', 'kdpose.steps', 'kdpose.optimizers',\n"
      "         'kdpose.data') if m in sys.modules]\n"
      "print('heavy', heavy)\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
  assert result.returncode == 0, result.stderr
  original, again, heavy = result.stdout.splitlines()[-3:]
  assert heavy == "heavy []"
  expected = predict.Predictor(run.export_dir)([path])
  np.testing.assert_allclose(json.loads(original), expected, atol=1e-4)
  np.testing.assert_allclose(json.loads(again), expected, atol=1e-4)


def test_serialized_predictor_gives_the_jax_angles_for_any_batch_and_checks_its_file(
    run, tmp_path):
  out = export.export_student(run.workdir, str(tmp_path / "export"), serialized=True)
  model, variables, meta = export.load_export(out)
  served = export.load_serialized(out)
  for batch in (6, 1):  # one artifact, any batch size
    crops = np.random.default_rng(batch).uniform(0, 255, (batch, 32, 32, 3)).astype(np.float32)
    viewpoint, confidence = served(crops)
    expected, expected_confidence = inference.predict_crops(model, variables, crops / 255.0,
                                                            bin_size=meta["bin_size"])
    assert viewpoint.shape == (batch, 3)
    np.testing.assert_array_less(
        geometry.rotation_error(np.asarray(viewpoint), np.asarray(expected)), 1e-3)
    np.testing.assert_allclose(confidence, expected_confidence, atol=1e-5)
  # jax alone runs it: no flax, no kdpose in the process.
  artifact = os.path.join(out, export.SERIALIZED_FILE)
  code = ("import sys, jax, numpy as np\n"
          f"data = bytearray(open({artifact!r}, 'rb').read())\n"
          "call = jax.export.deserialize(data).call\n"
          "viewpoint, _ = call(np.full((2, 32, 32, 3), 128.0, np.float32))\n"
          "print(viewpoint.shape, [m for m in ('flax', 'kdpose') if m in sys.modules])\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split("\n")[-2] == "(2, 3) []"
  # A damaged artifact is refused by name, not run.
  path = os.path.join(out, export.SERIALIZED_FILE)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match="predictor.jax_export has .* truncated or corrupt"):
    export.load_serialized(out)
  with pytest.raises(FileNotFoundError, match="no predictor.jax_export.*--serialized"):
    export.load_serialized(run.export_dir)


def test_flip_test_is_the_same_on_a_batch_split_over_8_devices(run):
  from jax.sharding import Mesh

  from kdpose import sharding

  images, boxes = _images(6, 8), np.tile(BOXES[3:], (8, 1))
  predict_fn = jax.jit(functools.partial(inference.predict_boxes, run.model, image_size=32,
                                         bin_size=15.0, flip_test=True))
  single = predict_fn(run.state.variables(), images, boxes)
  mesh = Mesh(np.asarray(jax.devices()[:8]), (sharding.DATA_AXIS,))
  batch = sharding.host_to_global({"image": images, "box": boxes}, mesh)
  split = predict_fn(jax.device_put(run.state.variables(), sharding.replicated(mesh)),
                     batch["image"], batch["box"])
  for got, want in zip(split, single, strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)
