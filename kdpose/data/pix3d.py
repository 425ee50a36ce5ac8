"""Pix3D (Sun et al., CVPR 2018) as a kdpose TFDS builder: evaluation only, split ``test``.

Frames (Pix3D README): a model is y up with the front facing -z and +x on the viewer's left
("+x: leftward, +y: upward, +z: inward, in canonical view"); the camera of ``rot_mat`` /
``trans_mat`` has x left, y up and looks along +z (Pix3D's Blender demo); ``cam_position`` is the
camera centre in the model's frame, looking at the object centre with up +y, and
``inplane_rotation`` (radians, positive clockwise) turns it about its viewing axis.

kdpose's object frame is z up with the front facing -y and +x on the viewer's right from the
front, so points go through ``PIX3D_TO_OBJECT_FRAME``: (x, y, z) -> (-x, z, y). With
``R = viewpoint_to_rotation(*viewpoint_from_camera(c, r))`` one has
``R = PIX3D_TO_CAMERA_FRAME @ rot_mat @ PIX3D_TO_OBJECT_FRAME.T`` for a camera that looks at the
object centre (tests/test_pix3d.py checks it on generated look-at cameras).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from kdpose.data import cad_points, crops
from kdpose.data.crops import RawDataError

CATEGORIES = ("bed", "bookcase", "chair", "desk", "misc", "sofa", "table", "tool", "wardrobe")
PIX3D_TO_OBJECT_FRAME = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
# Pix3D camera (x left, y up, looking along +z) -> kdpose camera (x right, y up, looking along -z).
PIX3D_TO_CAMERA_FRAME = np.diag([-1.0, 1.0, -1.0])
# A record whose cam_position points away from the camera centre of rot_mat/trans_mat by more
# than this (degrees) has contradictory labels and is skipped.
MAX_CAMERA_DISAGREEMENT = 10.0

_INSTRUCTIONS = """\
Download pix3d.zip from http://pix3d.csail.mit.edu/ (http://pix3d.csail.mit.edu/data/pix3d.zip),
unzip it and pass the folder that holds pix3d.json as manual_dir:
  <manual_dir>/pix3d.json
  <manual_dir>/img/<category>/<name>.{jpg,png}
  <manual_dir>/model/<category>/<model>/model.obj
  <manual_dir>/mask/...
"""


def viewpoint_from_camera(cam_position: Sequence[float], inplane_rotation: float) -> np.ndarray:
  """kdpose viewpoint ``[3]`` (degrees) of a Pix3D camera.

  Args:
    cam_position: camera centre (x, y, z) in the Pix3D model frame (any distance > 0).
    inplane_rotation: Pix3D's in-plane rotation in radians (positive: clockwise).

  Returns:
    azimuth = atan2(-x, -z), elevation = atan2(y, sqrt(x^2 + z^2)), in-plane = -rotation, in
    degrees (not yet wrapped into the canonical ranges).
  """
  x, y, z = (float(v) for v in cam_position)
  return np.array([math.degrees(math.atan2(-x, -z)), math.degrees(math.atan2(y, math.hypot(x, z))),
                   -math.degrees(float(inplane_rotation))])


def camera_disagreement(record: dict) -> float:
  """Angle in degrees between ``cam_position`` and the camera centre of ``rot_mat``/``trans_mat``.

  The camera maps model points X to ``rot_mat @ X + trans_mat``, so its centre in the model frame
  is ``-rot_mat^T @ trans_mat``. NaN when either vector is zero.
  """
  rot = np.asarray(record["rot_mat"], np.float64).reshape(3, 3)
  centre = -rot.T @ np.asarray(record["trans_mat"], np.float64).reshape(3)
  cam = np.asarray(record["cam_position"], np.float64).reshape(3)
  norms = np.linalg.norm(centre) * np.linalg.norm(cam)
  if not norms > 0:
    return math.nan
  cosine = centre @ cam / norms
  return math.degrees(math.acos(float(np.clip(cosine, -1.0, 1.0))))


class Pix3D(crops.RealPhotoBuilder):
  """Pix3D: 9 furniture categories, 10,069 images aligned with 395 3D models (evaluation only).

  One example per image: a crop with context around the object's box, its viewpoint in degrees
  (from ``cam_position`` and ``inplane_rotation``, as the anchors evaluate it), and points sampled
  on its model in kdpose's object frame. ``occluded`` is Pix3D's occluded or slightly_occluded
  (as PoseContrast); ``difficult`` is False; ``has_keypoints`` is True (Pix3D annotates 2D
  keypoints, and the anchors keep every record).
  """

  name = "pix3d"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  CATEGORIES = CATEGORIES
  REQUIRED_PATHS = ("pix3d.json", "img", "model")
  HOMEPAGE = "http://pix3d.csail.mit.edu/"
  CITATION = """@inproceedings{pix3d,
  title={Pix3D: Dataset and Methods for Single-Image 3D Shape Modeling},
  author={Sun, Xingyuan and Wu, Jiajun and Zhang, Xiuming and Zhang, Zhoutong and Zhang, Chengkai
          and Xue, Tianfan and Tenenbaum, Joshua B and Freeman, William T},
  booktitle={CVPR}, year={2018}}"""

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    with open(os.path.join(root, "pix3d.json")) as f:
      records = json.load(f)
    if not isinstance(records, list):
      raise ValueError(f"{root}/pix3d.json holds a {type(records).__name__}, expected a list.")
    return {"test": self._generate_examples(root, records)}

  def _generate_examples(self, root: str, records: list):
    log = self._new_skip_log("test")
    cache = cad_points.PointCache(root, self.builder_config.num_points, PIX3D_TO_OBJECT_FRAME)
    for index, record in enumerate(records):
      if not isinstance(record, dict) or record.get("category") not in CATEGORIES:
        log.drop("category not in the dataset")
        continue
      where = f"{root}/pix3d.json record {index}"
      with log.skipping():
        example = self._record_example(root, where, record, cache)
        log.admit(example["object_id"], where)
        yield example["object_id"], example
    log.finish()

  def _record_example(self, root: str, where: str, record: dict,
                      cache: cad_points.PointCache) -> dict:
    """The example of one pix3d.json record; ``where`` names it in error messages."""
    try:
      image_name, model_name = str(record["img"]), str(record["model"])
      box = [float(v) for v in record["bbox"]]
      if len(box) != 4:
        raise ValueError(f"bbox has {len(box)} values")
      disagreement = camera_disagreement(record)
      viewpoint = viewpoint_from_camera(record["cam_position"], record["inplane_rotation"])
      size = tuple(int(v) for v in record["img_size"])
    except (KeyError, TypeError, ValueError) as error:
      raise RawDataError("malformed record", where, f"{type(error).__name__}: {error}") from error
    if not disagreement <= MAX_CAMERA_DISAGREEMENT:  # also catches NaN (zero vectors).
      raise RawDataError("cam_position disagrees with rot_mat/trans_mat", where,
                         f"{disagreement:.1f} degrees")
    image = crops.load_rgb(os.path.join(root, image_name), size)
    return self._example(
        image, box, source=where, viewpoint=viewpoint, points=cache.points(model_name),
        category=record["category"], object_id=image_name, shape_id=model_name,
        truncated=bool(record.get("truncated")),
        occluded=bool(record.get("occluded")) or bool(record.get("slightly_occluded")),
        difficult=False, has_keypoints=True)
