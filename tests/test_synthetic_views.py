"""The synthetic_views builder (from primitives), the Sweet Home 3D reader and the pictures."""

from __future__ import annotations

import dataclasses
import functools
import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kdpose import geometry, visualize
from kdpose.data import backgrounds as backgrounds_lib
from kdpose.data import features, sweethome3d
from kdpose.data import synthetic_views as sv

MICRO = sv.SyntheticViewsConfig(
    name="micro", mesh_sources=("primitives",), background_source="procedural", image_size=32,
    num_points=32, train_views=2, val_views=1, test_views=1, primitives_per_category=3,
    min_test_shapes=1, min_val_shapes=1, min_train_shapes=1, num_workers=1)


def _tiny_config() -> sv.SyntheticViewsConfig:
  return next(c for c in sv.SyntheticViews.BUILDER_CONFIGS if c.name == "tiny")


@pytest.fixture(scope="module")
def tiny_dir(data_dir):
  """The session's tiny dataset (tests/conftest.py), built here if no test built it before."""
  sv.SyntheticViews(data_dir=data_dir, config="tiny", file_format="array_record"
                    ).download_and_prepare()
  return data_dir


def _shape_id(object_id: bytes) -> str:
  return object_id.decode().rsplit("/", 2)[0]  # drop "/<split>/<view>".


def _read(source) -> list[dict]:
  return [source[i] for i in range(len(source))]


def test_tiny_splits_hold_the_configured_views_of_disjoint_shapes(tiny_dir):
  config = _tiny_config()
  refs, novel = sv.split_shapes(sv.list_shapes(config), config, sv.novel_categories(config))
  builder = sv.SyntheticViews(data_dir=tiny_dir, config="tiny")
  examples = {split: _read(builder.as_data_source(split)) for split in sv.SPLITS}
  views = {"train": config.train_views, "val": config.val_views, "test": config.test_views}
  shapes = {split: {e["shape_id"].decode() for e in examples[split]} for split in sv.SPLITS}
  for split in sv.SPLITS:
    assert len(examples[split]) == len(refs[split]) * views[split]
    assert shapes[split] == {r.object_id for r in refs[split]}
    assert {_shape_id(e["object_id"]) for e in examples[split]} == shapes[split]
  assert len(examples["train"]) == 100  # 5 base categories x 2 train shapes x 10 views.
  assert not shapes["train"] & shapes["val"] and not shapes["train"] & shapes["test"]
  assert not shapes["val"] & shapes["test"]
  # Every base category trains; the novel one is only evaluated, in both val and test.
  names = builder.info.features["category"].names
  trained = {names[e["category"]] for e in examples["train"]}
  assert trained == set(names) - {"bookshelf"} and novel == ("bookshelf",)
  assert builder.info.metadata[features.NOVEL_CATEGORIES_KEY] == ["bookshelf"]
  for split in ("val", "test"):
    assert "bookshelf" in {names[e["category"]] for e in examples[split]}


def test_tiny_examples_have_the_shared_features_and_sane_values(tiny_dir):
  builder = sv.SyntheticViews(data_dir=tiny_dir, config="tiny")
  assert builder.info.metadata[features.NOVEL_CATEGORIES_KEY] == ["bookshelf"]
  assert builder.info.metadata[features.CATEGORY_SYMMETRY_KEY] == {"bottle": "continuous"}
  assert builder.info.metadata["skipped_models"] == []
  for example in _read(builder.as_data_source("test")):
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert example["points"].shape == (256, 3) and example["points"].dtype == np.float32
    assert np.linalg.norm(example["points"], axis=1).max() <= 1.0 + 1e-5
    ymin, xmin, ymax, xmax = example["bbox"]
    assert 0 <= ymin < ymax <= 1 and 0 <= xmin < xmax <= 1
    # The object fills the crop up to the 10-40% margin and the shift.
    assert max(ymax - ymin, xmax - xmin) > 0.6
    a, e, t = example["viewpoint"]
    assert 0 <= a < 360 and -40 <= e <= 85 and -40 <= t <= 40
    assert example["has_keypoints"] and not example["truncated"] and not example["difficult"]


def test_build_is_deterministic_and_tfds_load_reads_a_tfrecord_build(tiny_dir, tmp_path):
  sv.SyntheticViews(data_dir=str(tmp_path), config="tiny", file_format="tfrecord"
                    ).download_and_prepare()
  loaded = tfds.load("synthetic_views/tiny", data_dir=str(tmp_path), split="val",
                     download=False)
  by_id = {ex["object_id"].numpy(): ex for ex in loaded}
  source = tfds.data_source("synthetic_views/tiny", data_dir=tiny_dir, split="val")
  assert len(by_id) == len(source) > 0
  for example in _read(source):
    other = by_id[example["object_id"]]
    np.testing.assert_array_equal(example["image"], other["image"].numpy())
    np.testing.assert_array_equal(example["viewpoint"], other["viewpoint"].numpy())
    np.testing.assert_array_equal(example["points"], other["points"].numpy())


def test_interrupted_build_never_reads_as_complete(tmp_path, monkeypatch):
  calls = {"n": 0}
  example = sv.ViewRenderer.example

  def failing_example(self, rng, stretch=0.0):
    calls["n"] += 1
    if calls["n"] == 7:
      raise KeyboardInterrupt("interrupted")  # a model that raises is skipped, ^C stops.
    return example(self, rng, stretch)

  monkeypatch.setattr(sv.ViewRenderer, "example", failing_example)
  builder = sv.SyntheticViews(data_dir=str(tmp_path), config=MICRO, file_format="array_record")
  with pytest.raises(KeyboardInterrupt, match="interrupted"):
    builder.download_and_prepare()
  assert not builder.is_prepared()
  again = sv.SyntheticViews(data_dir=str(tmp_path), config=MICRO, file_format="array_record")
  assert not again.is_prepared()
  assert not os.path.exists(os.path.join(tmp_path, "synthetic_views", "micro",
                                         str(sv.SyntheticViews.VERSION)))
  with pytest.raises(KeyError, match="not been generated"):
    again.as_data_source("train")
  monkeypatch.setattr(sv.ViewRenderer, "example", example)
  again.download_and_prepare()
  # 5 base categories x 1 train shape (3 - 1 test - 1 val) x 2 views; the novel one has none.
  assert again.is_prepared() and len(again.as_data_source("train")) == 5 * 1 * 2


def test_broken_model_is_skipped_with_a_warning_and_counted(tmp_path, monkeypatch, caplog):
  shapes = sv.list_shapes(MICRO)

  def broken():
    raise sweethome3d.ModelError("Cannot read model broken/1: no faces")

  listed = shapes + [sv.ShapeRef("broken/1", "chair", broken)]
  monkeypatch.setattr(sv, "list_shapes", lambda config: listed)
  builder = sv.SyntheticViews(data_dir=str(tmp_path), config=MICRO, file_format="array_record")
  with caplog.at_level("WARNING"):
    builder.download_and_prepare()
  assert builder.info.metadata["skipped_models"] == ["broken/1"]
  assert "Skipping model broken/1" in caplog.text
  ids = {_shape_id(e["object_id"]) for split in sv.SPLITS
         for e in _read(builder.as_data_source(split))}
  assert "broken/1" not in ids and len(ids) == len(shapes)


def test_a_render_process_that_dies_skips_its_model_and_the_rest_renders():
  config = dataclasses.replace(MICRO, num_workers=2)
  pool = backgrounds_lib.load_backgrounds("procedural")
  good = sv.list_shapes(MICRO)[:3]
  dying = sv.ShapeRef("crash/0", "chair", functools.partial(os._exit, 3))  # kills its process.
  refs = [good[0], dying, good[1], good[2]]
  jobs = [(ref, [0, index], 1, 0.0) for index, ref in enumerate(refs)]
  with sv._shape_renderers(config, pool) as render_all:
    results = list(render_all(jobs))
  assert [error is None for _, error in results] == [True, False, True, True]
  assert "died" in results[1][1]
  assert all(len(examples) == 1 for examples, error in results if error is None)


# Views of primitive_shapes.marked_cube (front -y red, right +x green, top +z blue) -> the
# marked faces seen, the one not seen, and where the seen ones are in the network's crop: x, y
# of their centroids (0..1, x right, y down), as the convention of METHOD.md puts them
# (azimuth 0 looks at the front, 90 at the right side, elevation > 0 from above, a positive
# in-plane angle turns the content counter-clockwise).
CUBE_VIEWS = {
    (0.0, 30.0, 0.0): (("front", "top"), "right", lambda x, y: y["front"] > 0.5 > y["top"]),
    (90.0, 30.0, 0.0): (("right", "top"), "front", lambda x, y: y["right"] > 0.5 > y["top"]),
    (45.0, 20.0, 0.0): (("front", "right", "top"), None,
                        lambda x, y: x["front"] < 0.5 < x["right"] and y["top"] < 0.4),
    # The same turned a quarter counter-clockwise: right goes up, front down, top left.
    (45.0, 20.0, 90.0): (("front", "right", "top"), None,
                         lambda x, y: y["right"] < 0.5 < y["front"] and x["top"] < 0.4),
}


def _marked_faces(crop: np.ndarray) -> dict[str, tuple[float, float, float]]:
  """Face name -> (share of the crop, x, y of the centroid) of the pixels of its pure colour."""
  from kdpose.data import primitive_shapes

  size = crop.shape[0]
  yy, xx = np.mgrid[0:size, 0:size] / size
  found = {}
  for name, color in primitive_shapes.FACE_COLORS.items():
    channel = int(np.argmax(color))
    others = np.delete(crop, channel, axis=-1).max(-1)
    mask = (crop[..., channel] > 0.2) & (crop[..., channel] > 2.5 * others + 0.05)
    found[name] = (mask.mean(), xx[mask].mean() if mask.any() else np.nan,
                   yy[mask].mean() if mask.any() else np.nan)
  return found


def test_marked_cube_through_the_builder_shows_each_face_where_the_convention_puts_it(
    tmp_path, monkeypatch):
  import itertools

  from ml_collections import ConfigDict

  from kdpose import augment
  from kdpose.data import pipeline, primitive_shapes

  views = itertools.cycle(CUBE_VIEWS)
  monkeypatch.setattr(sv, "sample_viewpoint", lambda rng: np.array(next(views), np.float32))
  cubes = [sv.ShapeRef(f"cube/{i}", "chair", primitive_shapes.marked_cube) for i in range(3)]
  monkeypatch.setattr(sv, "list_shapes", lambda config: cubes)
  grey = backgrounds_lib.Backgrounds([np.full((64, 64, 3), 128, np.uint8)], "grey")
  monkeypatch.setattr(backgrounds_lib, "load_backgrounds", lambda source, **kwargs: grey)
  config = dataclasses.replace(MICRO, name="marked_cube", image_size=64, train_views=4,
                               occluder_probability=0.0, texture_swap_probability=0.0,
                               train_shape_stretch=0.0)
  builder = sv.SyntheticViews(data_dir=str(tmp_path), config=config, file_format="array_record")
  builder.download_and_prepare()
  seen = []
  for split in sv.SPLITS:  # 4 train views of one cube, 1 val and 1 test view of the others.
    data = pipeline.load_split(builder, split, ConfigDict({"name": "marked_cube", "pad_size": 0}))
    for index in data.indices:
      arrays = pipeline.example_arrays(data.source[int(index)], data.pad_size)
      crop = np.asarray(augment.crop_images(arrays["image"][None], arrays["box"][None], 48)[0])
      view = tuple(float(v) for v in arrays["viewpoint"])
      shown, hidden, where = CUBE_VIEWS[view]
      faces = _marked_faces(crop)
      for name in shown:
        assert faces[name][0] > 0.04, (view, name, faces)
      if hidden:
        assert faces[hidden][0] < 0.02, (view, hidden, faces)
      x, y = ({name: faces[name][k] for name in faces} for k in (1, 2))
      assert where(x, y), (view, faces)
      seen.append(view)
  assert len(seen) == 6 and set(seen) == set(CUBE_VIEWS)


def test_unknown_mesh_or_background_source_is_named():
  config = dataclasses.replace(MICRO, mesh_sources=("primitives", "nope"))
  with pytest.raises(ValueError, match=r"mesh_sources \('primitives', 'nope'\) must be "
                     r"\('primitives',\) or names from \('sweethome3d', '0ad', "):
    sv.category_names(config)
  with pytest.raises(ValueError, match="mesh_sources"):
    sv.list_shapes(dataclasses.replace(MICRO, mesh_sources=()))
  with pytest.raises(ValueError, match="Unknown background source 'wallpapers': use 'photos' or"):
    backgrounds_lib.load_backgrounds("wallpapers")


def test_a_model_that_never_shows_is_an_empty_render_and_its_shape_a_skip(monkeypatch):
  from kdpose.data import renderer as renderer_lib

  calls = []

  def empty(self, viewpoint, distance, window, *args, **kwargs):  # the model covers no pixel
    calls.append(tuple(viewpoint))
    return renderer_lib.Rendering(np.zeros((self.size, self.size, 3), np.float32),
                                  np.zeros((self.size, self.size), np.float32))

  pool = backgrounds_lib.load_backgrounds("procedural")
  shape = sv.list_shapes(MICRO)[0]
  with sv.ViewRenderer(MICRO, pool) as views:
    views.load(shape.load(), np.random.default_rng(0))
    monkeypatch.setattr(renderer_lib.Renderer, "render", empty)
    with pytest.raises(sv.EmptyRenderError, match="covered no pixel in 5 random views"):
      views.example(np.random.default_rng(1))
    assert len(calls) == 5 and len(set(calls)) == 5  # five different views were tried
    # What the build does with it: the shape's result is the reason it is skipped.
    examples, error = sv._render_shape(views, (shape, [0, 1], 2, 0.0))
  assert examples is None and error.startswith("EmptyRenderError: the object covered no pixel")


def test_missing_furniture_package_names_the_install(tmp_path):
  config = dataclasses.replace(MICRO, mesh_sources=("sweethome3d",), furniture_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="apt-get install sweethome3d-furniture"):
    sv.list_shapes(config)


def test_split_shapes_gives_disjoint_splits_with_minimum_shape_counts():
  def refs(category, count):
    return [sv.ShapeRef(f"{category}/{i}", category, lambda: None) for i in range(count)]

  config = sv.SyntheticViewsConfig(name="split")  # 5 test, 2 val, 5 train shapes at least.
  everything = (refs("chair", 40) + refs("lamp", 11) + refs("sofa", 12) + refs("guitar", 6)
                + refs("bed", 7))
  splits, novel = sv.split_shapes(everything, config, ("guitar", "bed"))
  again, _ = sv.split_shapes(everything[::-1], config, ("guitar", "bed"))
  assert splits == again  # the input order does not matter.
  count = lambda split, category: sum(r.category == category for r in splits[split])
  # chair: round(0.2 * 40) = 8 test, round(0.1 * 40) = 4 val, 28 train.
  assert [count(s, "chair") for s in ("test", "val", "train")] == [8, 4, 28]
  # Test shapes are the lowest stable hashes, then val.
  ranked = sorted(range(40), key=lambda i: sv.stable_fraction(f"chair/{i}"))
  assert {r.object_id for r in splits["test"] if r.category == "chair"} == {
      f"chair/{i}" for i in ranked[:8]}
  assert [count(s, "sofa") for s in ("test", "val", "train")] == [5, 2, 5]
  assert [count(s, "lamp") for s in ("test", "val", "train")] == [0, 0, 11]  # 11 < 5 + 2 + 5.
  # Novel: no train shapes; bed 7 = 2 val + 5 test is evaluated, guitar 6 is too small.
  assert [count(s, "bed") for s in ("test", "val", "train")] == [5, 2, 0]
  assert [count(s, "guitar") for s in ("test", "val", "train")] == [0, 0, 6]
  assert novel == ("bed",)
  ids = [r.object_id for split in sv.SPLITS for r in splits[split]]
  assert sorted(ids) == sorted(r.object_id for r in everything)  # each shape exactly once.


def test_mask_bbox_is_normalised_ymin_xmin_ymax_xmax():
  alpha = np.zeros((10, 20), np.float32)
  alpha[2:5, 5:10] = 1.0
  alpha[7, 0] = 0.2  # below the threshold: soft edge noise.
  np.testing.assert_allclose(tuple(sv.mask_bbox(alpha)), (0.2, 0.25, 0.5, 0.5))


def test_sample_viewpoint_ranges():
  rng = np.random.default_rng(0)
  views = np.stack([sv.sample_viewpoint(rng) for _ in range(2000)])
  assert views.dtype == np.float32
  assert np.all((views[:, 0] >= 0) & (views[:, 0] < 360))
  assert np.mean((views[:, 1] >= -10) & (views[:, 1] <= 60)) > 0.85
  assert abs(np.std(views[:, 2]) - 10) < 1.0 and np.abs(views[:, 2]).max() <= 40


def test_draw_viewpoint_axes_points_x_right_z_up_at_the_front_view():
  blank = np.zeros((65, 65, 3), np.uint8)
  image = visualize.draw_viewpoint_axes(blank, (0, 0, 0), length=30, width=1)
  red = np.argwhere(np.all(image == visualize.AXIS_COLORS[0], axis=-1))
  blue = np.argwhere(np.all(image == visualize.AXIS_COLORS[2], axis=-1))
  assert red[:, 1].max() == 62 and np.all(red[:, 0] == 32)  # x: to the right.
  assert blue[:, 0].min() == 2 and np.all(blue[:, 1] == 32)  # z: up.
  # Seen from the right side (azimuth 90) the object's y axis (its back) points right.
  side = visualize.draw_viewpoint_axes(blank, (90, 0, 0), length=30, width=1)
  green = np.argwhere(np.all(side == visualize.AXIS_COLORS[1], axis=-1))
  assert green[:, 1].max() == 62
  rot = geometry.viewpoint_to_rotation(90.0, 0.0, 0.0)
  np.testing.assert_allclose(rot[:, 1], (1, 0, 0), atol=1e-6)


def test_contact_sheet_lays_out_a_grid_with_dashed_references():
  images = [np.full((20, 20, 3), 50 * i, np.uint8) for i in range(5)]
  sheet = visualize.contact_sheet(images, np.zeros((5, 3)), ["a"] * 5, columns=2,
                                  references=np.full((5, 3), 30.0))
  assert sheet.shape == (3 * (20 + 12), 2 * 20, 3) and sheet.dtype == np.uint8
  np.testing.assert_array_equal(sheet[0, 0], (0, 0, 0))  # tile 0 corner.
  np.testing.assert_array_equal(sheet[32, 39], (150, 150, 150))  # tile 3 (value 50 * 3) corner.
  plain = visualize.contact_sheet(images, np.zeros((5, 3)), ["a"] * 5, columns=2)
  assert np.any(plain != sheet)  # the references add their (dashed) axes.


# --- The Sweet Home 3D catalog reader ----------------------------------------------------


def test_parse_properties_handles_escapes_continuations_and_comments():
  text = ("# comment\n! other comment\nname#1=Bill 10\\u20ac\nkey\\:x = a\\\n    b\n"
          "modelRotation#2=1 0 0 0 0 1 0 -1 0\nempty#3=\n")
  assert sweethome3d.parse_properties(text) == {
      "name#1": "Bill 10\u20ac", "key:x": "ab", "modelRotation#2": "1 0 0 0 0 1 0 -1 0",
      "empty#3": ""}


@pytest.mark.parametrize("name, category", [
    ("Roasted chicken", None), ("Chicken", "animal"), ("Toilet brush", None),
    ("Toilets unit", "toilet"), ("TV remote control", None), ("TV", "tvmonitor"),
    ("TV stand", "cabinet"), ("Cooker", None), ("Large stove", "stove"), ("Desk lamp", "desk_lamp"),
    ("Desk", "desk"), ("Oak chair", "chair"), ("Glass table", "diningtable"), ("Glass", "glass"),
    ("Glasses", "eyeglasses"), ("Coffee cup", "cup"), ("Cup cake", None), ("Sofa", "sofa"),
    ("Corner bathtub", "tub"), ("Bathmat", None), ("Microwave", "microwave"),
    ("Electric guitar", "guitar"), ("Spray bottle", None), ("Wine bottle", "bottle"),
    ("Filing cabinet", "filing_cabinet"), ("Parking slot", None)])
def test_map_category_keywords_and_manual_exceptions(name, category):
  assert sweethome3d.map_category(name) == category


_BOX_OBJ = """mtllib model.mtl
# {variant}
v -1 0 -0.5
v 1 0 -0.5
v 1 2 -0.5
v -1 2 -0.5
v -1 0 0.5
v 1 0 0.5
v 1 2 0.5
v -1 2 0.5
v -1 0 0.6
v 1 0 0.6
v 1 2 0.6
v -1 2 0.6
vt 0 0
vt 1 0
vt 1 1
vt 0 1
usemtl body
f 1 3 2
f 1 4 3
f 5 6 7
f 5 7 8
f 1 2 6
f 1 6 5
f 4 8 7
f 4 7 3
f 1 5 8
f 1 8 4
f 2 3 7
f 2 7 6
usemtl front
f 9/1 10/2 11/3
f 9/1 11/3 12/4
"""
_MTL = "newmtl body\nKd 0.2 0.4 0.6\nnewmtl front\nKd 1 1 1\nmap_Kd front.png\n"


def _write_sh3f(path) -> None:
  """A catalog whose model is a box 2 wide, 2 high (y up) with a textured plate on its front
  (+z), once plain, once with a modelRotation, plus a door and a roasted chicken."""
  import io

  from PIL import Image

  png = io.BytesIO()
  Image.fromarray(np.full((4, 4, 3), (255, 0, 0), np.uint8)).save(png, "PNG")
  entries = [("Oak chair", "box", None, "false"), ("Armchair", "turned", "1 0 0 0 0 1 0 -1 0",
                                                  "false"),
             ("Door", "door", None, "true"), ("Roasted chicken", "food", None, "false")]
  props = ["id=test"]
  with zipfile.ZipFile(path, "w") as zf:
    for index, (name, folder, rotation, door) in enumerate(entries, start=1):
      zf.writestr(f"test/{folder}/model.obj", _BOX_OBJ.format(variant=folder))
      zf.writestr(f"test/{folder}/model.mtl", _MTL)
      zf.writestr(f"test/{folder}/front.png", png.getvalue())
      props += [f"name#{index}={name}", f"category#{index}=Living room",
                f"model#{index}=/test/{folder}/model.obj", f"doorOrWindow#{index}={door}",
                f"creator#{index}=kdpose"]
      if rotation:
        props.append(f"modelRotation#{index}={rotation}")
    zf.writestr("PluginFurnitureCatalog.properties", "\n".join(props))


def _front_part(mesh):
  return next(p for p in mesh.parts if p.texture is not None)


def test_catalog_models_load_into_the_kdpose_frame(tmp_path):
  _write_sh3f(tmp_path / "Test.sh3f")
  entries = sweethome3d.read_catalog(str(tmp_path))
  assert [e.category for e in entries] == ["chair", "chair", None, None]
  assert entries[2].door_or_window and entries[1].model_rotation == (1, 0, 0, 0, 0, 1, 0, -1, 0)
  selected = sweethome3d.select_models(entries)
  assert [e.object_id for e in selected] == ["Test/1", "Test/2"]

  plain = sweethome3d.load_model(selected[0])
  vertices = plain.vertices
  np.testing.assert_allclose(np.linalg.norm(vertices, axis=1).max(), 1.0, atol=1e-6)
  np.testing.assert_allclose((vertices.min(0) + vertices.max(0)) / 2, 0.0, atol=1e-6)
  # Width stays x, the height (y up in Sweet Home 3D) becomes z, the depth becomes y.
  extent = vertices.max(0) - vertices.min(0)
  np.testing.assert_allclose(extent / extent[0], (1.0, 0.55, 1.0), atol=1e-6)
  front = _front_part(plain)
  assert front.vertices[:, 1].max() == pytest.approx(vertices[:, 1].min())  # the front is -y.
  assert front.texture.shape == (4, 4, 3) and front.uvs.shape == (4, 2)
  body = next(p for p in plain.parts if p.texture is None)
  np.testing.assert_allclose(body.color, (0.2, 0.4, 0.6), atol=0.01)

  # modelRotation (x, y, z) -> (x, z, -y) is applied first: the front plate ends on top.
  turned = sweethome3d.load_model(selected[1])
  assert _front_part(turned).vertices[:, 2].min() == pytest.approx(turned.vertices[:, 2].max())


def test_unreadable_model_raises_model_error_naming_it(tmp_path):
  _write_sh3f(tmp_path / "Test.sh3f")
  entry = dataclasses.replace(sweethome3d.read_catalog(str(tmp_path))[0], model="test/nope.obj")
  with pytest.raises(sweethome3d.ModelError, match="Test/1.*Oak chair"):
    sweethome3d.load_model(entry)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(sweethome3d.FURNITURE_DIR),
                    reason="Debian package sweethome3d-furniture is not installed")
def test_real_catalog_parses_maps_and_loads():
  entries = sweethome3d.read_catalog()
  assert len(entries) > 800
  by_name = {}
  for entry in entries:
    by_name.setdefault(entry.name, set()).add(entry.category)
  assert by_name["Roasted chicken"] == {None} and by_name["Toilet brush"] == {None}
  assert by_name["TV remote control"] == {None} and by_name["Cooker"] == {None}
  assert by_name["Toilets unit"] == {"toilet"} and by_name["Chicken"] == {"animal"}
  selected = sweethome3d.select_models(entries)
  categories = {e.category for e in selected}
  assert len(selected) > 350 and len(categories) > 60
  assert not any(e.door_or_window for e in selected)
  assert set(sv.OBJECTNET3D_NOVEL) & categories >= {"bed", "bookshelf", "guitar", "toilet", "tub"}
  rotated = [e for e in selected if e.model_rotation == (1, 0, 0, 0, 0, 1, 0, -1, 0)][:2]
  assert rotated
  for entry in rotated + selected[:3]:
    mesh = sweethome3d.load_model(entry)
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1).max(), 1.0, atol=1e-5)
    # The same model without its modelRotation: (x, y, z) -> (x, z, -y) swaps two extents.
    if entry in rotated:
      bare = sweethome3d.load_model(dataclasses.replace(entry, model_rotation=None))
      extent, bare_extent = (np.ptp(m.vertices, axis=0) for m in (mesh, bare))
      np.testing.assert_allclose(extent, bare_extent[[0, 2, 1]], rtol=1e-4)


def test_worker_processes_render_the_same_examples(tmp_path):
  built = {}
  for workers in (1, 2):
    config = dataclasses.replace(MICRO, num_workers=workers)
    builder = sv.SyntheticViews(data_dir=str(tmp_path / str(workers)), config=config,
                                file_format="array_record")
    builder.download_and_prepare()
    built[workers] = {e["object_id"]: e for e in _read(builder.as_data_source("test"))}
  assert built[1].keys() == built[2].keys()
  for object_id, example in built[1].items():
    np.testing.assert_array_equal(example["image"], built[2][object_id]["image"])
    np.testing.assert_array_equal(example["points"], built[2][object_id]["points"])


def test_stretch_factors_are_log_uniform_within_the_range_and_checked():
  rng = np.random.default_rng(0)
  factors = np.stack([sv.stretch_factors(rng, 0.25) for _ in range(2000)])
  assert factors.shape == (2000, 3)
  assert factors.min() >= 1 / 1.25 and factors.max() <= 1.25
  np.testing.assert_allclose(np.log(factors).mean(0), 0.0, atol=0.02)  # symmetric in log.
  assert sv.stretch_factors(rng, 0.0) is None
  with pytest.raises(ValueError, match="train_shape_stretch 0.5"):
    sv.stretch_factors(rng, 0.5)


def test_importing_the_data_package_registers_every_builder(tiny_dir):
  import kdpose.data  # noqa: F401

  for name in ("synthetic_views", "objectnet3d", "pascal3d", "pix3d"):
    assert name in tfds.list_builders(with_community_datasets=False)
  builder = tfds.builder("synthetic_views", config="tiny", data_dir=tiny_dir,
                         file_format="array_record")
  assert builder.is_prepared() and isinstance(builder, sv.SyntheticViews)
