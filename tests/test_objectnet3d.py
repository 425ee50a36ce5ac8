"""The ObjectNet3D builder on a tiny raw download in the official layout (tests/raw_fixtures.py)."""

import logging
import os

import numpy as np
import pytest
import raw_fixtures as rf

from kdpose.data import cad_points, crops, features, objectnet3d


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("objectnet3d")


@pytest.fixture(scope="module")
def built(root):
  return rf.build_fixture(root, rf.make_objectnet3d, objectnet3d.ObjectNet3D, ("train", "val"))


def _category(builder, example):
  return builder.info.features["category"].int2str(example["category"])


def test_split_membership(built):
  builder, splits = built
  assert set(builder.info.splits) == {"train", "val"}  # the anchors' protocol; no test split.
  assert sorted(splits["train"]) == ["a/0", "b/0"]
  assert sorted(splits["val"]) == ["c/0", "d/0", "e/0"]


def test_known_object_values(built):
  builder, splits = built
  plane = splits["train"]["a/0"]
  assert _category(builder, plane) == "aeroplane"
  np.testing.assert_allclose(plane["viewpoint"], [30.0, 10.0, -5.0])
  # Box edges (10, 20, 50, 40) in 80x60, 30% context: crop x 0..62, y 14..46 -> 62x32,
  # resized to 64x33.
  assert plane["image"].shape == (33, 64, 3)
  np.testing.assert_allclose(plane["bbox"], [6 / 32, 10 / 62, 26 / 32, 50 / 62], atol=1e-6)
  assert (plane["truncated"], plane["occluded"], plane["difficult"], plane["has_keypoints"]) == (
      False, False, False, True)
  bed = splits["val"]["c/0"]
  assert _category(builder, bed) == "bed"
  np.testing.assert_allclose(bed["viewpoint"], [330.0, -20.0, 170.0])  # azimuth -30 wrapped.
  assert (bed["truncated"], bed["occluded"], bed["has_keypoints"]) == (True, True, False)


@pytest.mark.parametrize("object_id, cad", [
    ("a/0", "aeroplane/01"),  # a=30 e=10 t=-5
    ("c/0", "bed/02"),  # a=-30 (stored 330) e=-20 t=170
    ("e/0", "aeroplane/01")])  # a=0 e=0 t=0
def test_labels_project_the_cad_model_as_the_toolbox_does(built, root, object_id, cad):
  _, splits = built
  example = {**splits["train"], **splits["val"]}[object_id]
  image_id, index = object_id.split("/")
  vp = rf.read_mat_viewpoint(root / "raw" / "Annotations" / f"{image_id}.mat", int(index))
  vertices = rf.read_off(root / "raw" / "CAD" / "off" / f"{cad}.off")
  rf.assert_projects_as_the_toolbox(vertices, example["viewpoint"], vp, min_extent=20)


def test_crop_pixels_match_the_box(built):
  _, splits = built
  # Photos are blue (luminance 29) with red boxes (luminance 76); b is grayscale and c CMYK on
  # disk, all three come back RGB.
  for example in (splits["train"]["a/0"], splits["train"]["b/0"], splits["val"]["c/0"]):
    height, width, channels = example["image"].shape
    assert channels == 3
    luminance = example["image"].astype(float) @ [0.299, 0.587, 0.114]
    ymin, xmin, ymax, xmax = example["bbox"] * [height, width, height, width]
    inside = luminance[int(ymin) + 2:int(ymax) - 1, int(xmin) + 2:int(xmax) - 1]
    assert inside.size and abs(inside.mean() - 76) < 8
    below = luminance[int(np.ceil(ymax)) + 1:]  # context under the box: background.
    assert below.size and abs(below.mean() - 29) < 8


def test_coarse_viewpoints(built):
  _, splits = built
  np.testing.assert_allclose(splits["train"]["b/0"]["viewpoint"], [45.0, 15.0, 0.0])
  np.testing.assert_allclose(splits["val"]["d/0"]["viewpoint"], [200.0, 5.0, 0.0])


def test_points_are_sampled_once_per_cad_model(built):
  _, splits = built
  plane_a, plane_e = splits["train"]["a/0"]["points"], splits["val"]["e/0"]["points"]
  chair = splits["train"]["b/0"]["points"]
  assert plane_a.dtype == crops.POINTS_DTYPE and plane_a.shape == (64, 3)
  np.testing.assert_array_equal(plane_a, plane_e)  # same CAD model, one sample.
  assert not np.array_equal(plane_a, chair)
  norms = np.linalg.norm(plane_a.astype(np.float64), axis=1)
  assert norms.max() <= 1.0 + 1e-3
  # The aeroplane box is 1.0 x 0.5 x 0.3 in the CAD file's own (= kdpose) frame.
  extent = np.ptp(plane_a.astype(np.float64), axis=0)
  assert extent[0] > extent[1] > extent[2]


def test_points_do_not_depend_on_where_the_download_lives(tmp_path):
  for root in ("one", "two"):
    rf.write_off(os.fspath(tmp_path / root / "CAD/off/car/01.off"), *rf.box_mesh((1, 2, 3)))
  one = cad_points.PointCache(os.fspath(tmp_path / "one"), 32).points("CAD/off/car/01.off")
  two = cad_points.PointCache(os.fspath(tmp_path / "two"), 32).points("CAD/off/car/01.off")
  other = cad_points.PointCache(os.fspath(tmp_path / "one"), 32).points("CAD/off/car/../car/01.off")
  np.testing.assert_array_equal(one, two)
  np.testing.assert_array_equal(one, other)  # the seed comes from the normalised path.


def test_skips_and_drops_are_counted(built):
  builder, _ = built
  logs = builder.skip_logs
  assert logs["train"].skipped == {"missing image": 1, "unreadable annotation": 1,
                                   "image size differs from annotation": 1, "unreadable image": 1}
  assert logs["train"].dropped == {"difficult": 1}
  # Both chairs of junk_cad are skipped, each alone (the bad model is read once).
  assert logs["val"].skipped == {"missing CAD model": 1, "degenerate box": 1,
                                 "unusable CAD model": 2, "missing annotation": 1}
  assert logs["val"].dropped == {"no viewpoint": 1}
  assert [logs[s].kept for s in ("train", "val")] == [2, 3]


def test_metadata_and_classes(built):
  builder, _ = built
  names = builder.info.features["category"].names
  assert len(names) == 100 and len(set(names)) == 100
  novel = builder.info.metadata[features.NOVEL_CATEGORIES_KEY]
  assert len(novel) == 20 and set(novel) <= set(names) and "wheelchair" in novel
  symmetry = builder.info.metadata[features.CATEGORY_SYMMETRY_KEY]
  assert set(symmetry) <= set(names) and symmetry["bottle"] == "continuous"
  assert builder.info.features["points"].shape == (64, 3)


def test_warnings_name_the_bad_files(tmp_path, caplog):
  rf.make_objectnet3d(os.fspath(tmp_path / "raw"))
  with caplog.at_level(logging.WARNING):
    rf.build(objectnet3d.ObjectNet3D, os.fspath(tmp_path / "data"), os.fspath(tmp_path / "raw"))
  text = caplog.text
  assert os.path.join("Annotations", "corrupt.mat") in text
  assert os.path.join("CAD", "off", "aeroplane", "09.off") in text
  assert "objectnet3d/val: 3 examples written; skipped bad raw data: 1 degenerate box" in text


def test_named_configs(tmp_path):
  builder = objectnet3d.ObjectNet3D(data_dir=os.fspath(tmp_path), config="small",
                                    file_format="array_record")
  assert (builder.builder_config.image_longer_side, builder.builder_config.num_points) == (128,
                                                                                          1024)
  assert objectnet3d.ObjectNet3D(data_dir=os.fspath(tmp_path)).builder_config.name == "default"


def test_missing_manual_dir_says_where_to_download(tmp_path):
  with pytest.raises(AssertionError, match="cvgl.stanford.edu"):
    rf.build(objectnet3d.ObjectNet3D, os.fspath(tmp_path / "data"),
             os.fspath(tmp_path / "nothing"))


def test_wrong_layout_names_what_is_missing(tmp_path):
  rf.write_lines(os.fspath(tmp_path / "raw" / "README.txt"), ["not the dataset"])
  with pytest.raises(FileNotFoundError, match=r"lacks Annotations, Images, Image_sets/train.txt"):
    rf.build(objectnet3d.ObjectNet3D, os.fspath(tmp_path / "data"), os.fspath(tmp_path / "raw"))


def test_split_with_nothing_usable_fails_with_the_summary(tmp_path):
  raw = os.fspath(tmp_path / "raw")
  rf.make_objectnet3d(raw)
  rf.write_lines(os.path.join(raw, "Image_sets", "val.txt"), ["no_annotation"])
  with pytest.raises(RuntimeError, match="0 examples written.*1 missing annotation.*No example"):
    rf.build(objectnet3d.ObjectNet3D, os.fspath(tmp_path / "data"), raw)


@pytest.mark.parametrize("split, filters", [
    ("val", {}), ("val", {"drop_occluded": True}), ("val", {"drop_truncated": True}),
    ("val", {"drop_difficult": True}), ("train", {"require_keypoints": True})])
def test_load_split_reads_the_flags_as_tfds_decodes_them_and_filters_by_them(built, split,
                                                                             filters):
  from ml_collections import ConfigDict

  from kdpose.data import pipeline

  builder, _ = built
  decoded = builder.as_data_source(split)
  records = [decoded[i] for i in range(len(decoded))]
  names = builder.info.features["category"].names
  data = pipeline.load_split(builder, split, ConfigDict({"name": "objectnet3d", "pad_size": 64}),
                             filters=filters, exclude_categories=("sofa",))
  flag, drop_if = {"drop_occluded": ("occluded", True), "drop_truncated": ("truncated", True),
                   "require_keypoints": ("has_keypoints", False),
                   "drop_difficult": ("difficult", True)}.get(next(iter(filters), ""), ("", None))
  expected = [i for i, r in enumerate(records) if names[r["category"]] != "sofa"
              and (not flag or bool(r[flag]) != drop_if)]
  np.testing.assert_array_equal(data.indices, expected)
  assert list(data.categories) == [names[records[i]["category"]] for i in expected]
  assert list(data.shape_ids) == [records[i]["shape_id"].decode() for i in expected]
  if split == "val":  # its bed (c/0) is truncated and occluded: those filters drop it.
    bed = [i for i, r in enumerate(records) if names[r["category"]] == "bed"]
    assert bool(set(bed) & set(data.indices)) == (flag in ("", "difficult"))
  else:  # of the train records only the aeroplane a/0 has keypoints.
    assert list(data.categories) == ["aeroplane"]


def test_load_split_excludes_categories_and_fails_when_nothing_is_left(built):
  from ml_collections import ConfigDict

  from kdpose.data import pipeline

  builder, splits = built
  config = ConfigDict({"name": "objectnet3d", "pad_size": 64})
  every = pipeline.load_split(builder, "val", config)
  assert sorted(every.categories) == ["aeroplane", "bed", "chair"]  # e/0, c/0, d/0
  no_bed = pipeline.load_split(builder, "val", config, exclude_categories=("bed",))
  assert sorted(no_bed.categories) == ["aeroplane", "chair"]
  assert set(no_bed.indices) == set(every.indices) - set(every.indices[every.categories == "bed"])
  with pytest.raises(ValueError, match=r"No records left in objectnet3d/val after filters "
                     r"\{'drop_occluded': True\} and excluding \['aeroplane', 'chair'\]"):
    pipeline.load_split(builder, "val", config, filters={"drop_occluded": True},
                        exclude_categories=("aeroplane", "chair"))
  with pytest.raises(KeyError, match="has no split 'test'; it has"):
    pipeline.load_split(builder, "test", config)
