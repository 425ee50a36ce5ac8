"""The MATLAB `record` reader on files written in the official struct layout."""

import os

import pytest
import raw_fixtures as rf
import scipy.io

from kdpose.data import matlab_records
from kdpose.data.crops import RawDataError


def _write(tmp_path, objects, name="r.mat", **kwargs):
  path = os.fspath(tmp_path / name)
  rf.write_record(path, kwargs.get("filename", "0001.JPEG"), kwargs.get("size", (64, 48)),
                  objects)
  return path


def test_reads_every_field_of_a_two_object_record(tmp_path):
  path = _write(tmp_path, [
      rf.mat_object("car", [11, 21, 50, 40], cad_index=3, vp=rf.viewpoint(30, 10, -5, 4.5),
                    truncated=1, keypoints=True),
      rf.mat_object("bus", [1, 2, 3, 4], occluded=1, difficult=1, vp=None)])
  record = matlab_records.read_record(path)
  assert record.filename == "0001.JPEG"
  assert record.image_size == (64, 48)
  car, bus = record.objects
  assert (car.index, car.category, car.bbox, car.cad_index) == (0, "car", (11, 21, 50, 40), 3)
  assert car.box_edges == (10.0, 20.0, 50.0, 40.0)  # 1-based inclusive -> pixel edges.
  assert (car.truncated, car.occluded, car.difficult, car.has_keypoints) == (
      True, False, False, True)
  assert car.viewpoint == matlab_records.Viewpoint(30.0, 10.0, -5.0, 4.5, coarse=False)
  assert (bus.index, bus.occluded, bus.difficult, bus.has_keypoints) == (1, True, True, False)
  assert bus.viewpoint is None


def test_single_object_squeezed_to_a_scalar_struct(tmp_path):
  path = _write(tmp_path, [rf.mat_object("chair", [5, 6, 7, 8], vp=rf.viewpoint(1, 2, 3))])
  loaded = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["record"]
  assert isinstance(loaded.objects, scipy.io.matlab.mat_struct)  # the quirk is really there.
  (chair,) = matlab_records.read_record(path).objects
  assert chair.category == "chair" and chair.viewpoint.angles == (1.0, 2.0, 3.0)


def test_coarse_viewpoint_when_fine_values_are_empty(tmp_path):
  vp = rf.viewpoint(None, None, theta=None, distance=None, azimuth_coarse=45,
                    elevation_coarse=15)
  (obj,) = matlab_records.read_record(_write(tmp_path, [rf.mat_object("car", [1, 1, 9, 9],
                                                                      vp=vp)])).objects
  assert obj.viewpoint == matlab_records.Viewpoint(45.0, 15.0, 0.0, None, coarse=True)


def test_coarse_viewpoint_when_distance_is_zero(tmp_path):
  # The Pascal3D+ toolbox: distance 0 means only the coarse view was annotated.
  vp = rf.viewpoint(10, 10, 7, distance=0.0, azimuth_coarse=200, elevation_coarse=5)
  (obj,) = matlab_records.read_record(_write(tmp_path, [rf.mat_object("car", [1, 1, 9, 9],
                                                                      vp=vp)])).objects
  assert obj.viewpoint.angles == (200.0, 5.0, 7.0) and obj.viewpoint.coarse


def test_fine_viewpoint_kept_when_distance_zero_but_no_coarse(tmp_path):
  vp = rf.viewpoint(10, 20, 0, distance=0.0)
  (obj,) = matlab_records.read_record(_write(tmp_path, [rf.mat_object("car", [1, 1, 9, 9],
                                                                      vp=vp)])).objects
  assert obj.viewpoint.angles == (10.0, 20.0, 0.0) and not obj.viewpoint.coarse


def test_no_angles_at_all_means_no_viewpoint(tmp_path):
  vp = rf.viewpoint(None, None)
  (obj,) = matlab_records.read_record(_write(tmp_path, [rf.mat_object("car", [1, 1, 9, 9],
                                                                      vp=vp)])).objects
  assert obj.viewpoint is None


def test_empty_fields_read_as_absent(tmp_path):
  obj = rf.mat_object("car", [1, 1, 9, 9], cad_index=0, vp=rf.viewpoint(5, 5))
  obj.update(truncated=rf.EMPTY, occluded=rf.EMPTY, difficult=rf.EMPTY, bbox=rf.EMPTY)
  (read,) = matlab_records.read_record(_write(tmp_path, [obj])).objects
  assert (read.truncated, read.occluded, read.difficult) == (False, False, False)
  assert read.cad_index is None and read.bbox is None


def test_record_without_objects(tmp_path):
  path = os.fspath(tmp_path / "empty.mat")
  scipy.io.savemat(path, {"record": {"filename": "x.jpg", "imgsize": [[10, 10, 3]],
                                     "objects": rf.EMPTY}})
  assert matlab_records.read_record(path).objects == ()


@pytest.mark.parametrize("make, reason", [
    (lambda p: None, "missing annotation"),
    (rf.write_garbage, "unreadable annotation"),
    (lambda p: scipy.io.savemat(p, {"other": 1.0}), "malformed annotation"),
    (lambda p: rf.write_record(p, "x.jpg", (9, 9), [rf.mat_object(
        "car", [1, 1, 5, 5], cad_index=1.5, vp=rf.viewpoint(0, 0))]), "malformed annotation"),
])
def test_bad_files_raise_with_reason_and_path(tmp_path, make, reason):
  path = os.fspath(tmp_path / "bad.mat")
  make(path)
  with pytest.raises(RawDataError) as info:
    matlab_records.read_record(path)
  assert info.value.reason == reason and info.value.path == path
  assert path in str(info.value)


def test_read_id_list_takes_first_tokens(tmp_path):
  path = os.fspath(tmp_path / "car_val.txt")
  rf.write_lines(path, ["2008_000002 -1", "", "2008_000003  1"])
  assert matlab_records.read_id_list(path) == ["2008_000002", "2008_000003"]
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    matlab_records.read_id_list(os.fspath(tmp_path / "nope.txt"))

