"""Tiny raw datasets in the official formats of ObjectNet3D, Pascal3D+ and Pix3D, for tests.

The ``.mat`` files hold what the originals hold: a struct ``record`` (``filename``, ``imgsize``
[width height depth], ``objects``) whose ``objects`` is a 1xN struct array with ``class``,
``bbox`` (1-based [x1 y1 x2 y2]), ``cad_index``, ``truncated``, ``occluded``, ``difficult``,
``anchors`` (a keypoint struct or []) and a ``viewpoint`` sub-struct (or []), numbers as MATLAB
doubles. Each photo is blue with its objects' boxes filled red, so a crop can be checked pixel-wise.
"""

from __future__ import annotations

import json
import os

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from kdpose.data import crops

BACKGROUND = (0, 0, 255)
OBJECT = (255, 0, 0)
_OBJECT_FIELDS = ("class", "bbox", "cad_index", "truncated", "occluded", "difficult", "anchors",
                  "viewpoint")
EMPTY = np.zeros((0, 0))  # MATLAB's [].


def _parent(path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path


def write_photo(path: str, size: tuple[int, int], boxes=(), mode: str = "RGB") -> None:
  """A (width, height) photo, ``boxes`` given as 1-based inclusive [x1 y1 x2 y2], saved in
  ``mode`` (RGB, L, CMYK, RGBA, or I;16: 16-bit grayscale PNG) as the extension names."""
  pixels = np.zeros((size[1], size[0], 3), np.uint8)
  pixels[:] = BACKGROUND
  for x1, y1, x2, y2 in boxes:
    pixels[int(y1) - 1:int(y2), int(x1) - 1:int(x2)] = OBJECT
  image = Image.fromarray(pixels)
  if mode == "I;16":
    image = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
  image.convert(mode).save(_parent(path), quality=98)


def box_mesh(extents=(1.0, 1.0, 1.0), bump: tuple[float, float, float] | None = None):
  """Vertices ``[V, 3]`` and triangles ``[F, 3]`` of a box, plus a small box centred at ``bump``."""
  corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) / 2
  quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
  faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
  parts = [(corners * extents, faces)]
  if bump is not None:
    parts.append((corners * 0.2 + bump, faces + 8))
  return np.concatenate([v for v, _ in parts]), np.concatenate([f for _, f in parts])


def write_off(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
  lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
  lines += [" ".join(f"{c:.6f}" for c in v) for v in vertices]
  lines += [f"3 {a} {b} {c}" for a, b, c in faces]
  with open(_parent(path), "w") as f:
    f.write("\n".join(lines) + "\n")


def write_obj(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
  lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
  lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
  with open(_parent(path), "w") as f:
    f.write("\n".join(lines) + "\n")


def viewpoint(azimuth=None, elevation=None, theta=0.0, distance=5.0, azimuth_coarse=None,
              elevation_coarse=None):
  """A viewpoint struct; a None angle is stored as [] (as in coarse-only annotations)."""
  def value(v):
    return EMPTY if v is None else float(v)
  return {"azimuth": value(azimuth), "elevation": value(elevation), "theta": value(theta),
          "distance": value(distance), "focal": 1.0, "px": 250.0, "py": 250.0,
          "viewport": 2000.0, "azimuth_coarse": value(azimuth_coarse),
          "elevation_coarse": value(elevation_coarse)}


def mat_object(cls: str, bbox, cad_index=1, vp=None, truncated=0, occluded=0, difficult=0,
               keypoints=False) -> dict:
  """One entry of ``record.objects``; ``vp=None`` stores an empty viewpoint."""
  anchors = ({"nose": {"location": np.array([[12.0, 30.0]]), "status": 1.0},
              "tail": {"location": EMPTY, "status": 0.0}} if keypoints else EMPTY)
  return {"class": cls, "bbox": np.array([bbox], float), "cad_index": float(cad_index),
          "truncated": float(truncated), "occluded": float(occluded),
          "difficult": float(difficult), "anchors": anchors,
          "viewpoint": EMPTY if vp is None else vp}


def write_record(path: str, filename: str, size: tuple[int, int], objects: list[dict]) -> None:
  """Saves ``record`` with ``objects`` as a 1xN struct array (1x1 squeezes to a scalar struct)."""
  array = np.empty((1, len(objects)), dtype=[(name, "O") for name in _OBJECT_FIELDS])
  for i, obj in enumerate(objects):
    for name in _OBJECT_FIELDS:
      array[0, i][name] = obj[name]
  record = {"filename": filename, "folder": "", "source": {"database": "kdpose-test"},
            "imgsize": np.array([[size[0], size[1], 3.0]]), "database": "test",
            "objects": array}
  scipy.io.savemat(_parent(path), {"record": record})


def write_garbage(path: str) -> None:
  with open(_parent(path), "wb") as f:
    f.write(b"MATLAB 5.0 MAT-file, but then not at all" + bytes(range(256)))


def write_lines(path: str, lines) -> None:
  with open(_parent(path), "w") as f:
    f.write("".join(f"{line}\n" for line in lines))


def pix3d_camera(cam_position, inplane_rotation: float):
  """``rot_mat`` ``[3, 3]`` and ``trans_mat`` ``[3]`` of a Pix3D look-at camera.

  The camera sits at ``cam_position`` (model frame, y up), looks at the origin, has its x axis
  to the left, y up and z along the viewing direction (Pix3D's render camera), then turns by
  ``inplane_rotation`` radians about its viewing axis (positive: image content clockwise).
  """
  centre = np.asarray(cam_position, float)
  forward = -centre / np.linalg.norm(centre)
  left = np.cross([0.0, 1.0, 0.0], forward)
  left /= np.linalg.norm(left)
  up = np.cross(forward, left)
  c, s = np.cos(inplane_rotation), np.sin(inplane_rotation)
  rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.stack([left, up, forward])
  return rot, -rot @ centre


def pix3d_record(img: str, category: str, size, bbox, model: str, cam_position, inplane: float,
                 **flags) -> dict:
  """One entry of ``pix3d.json`` (bbox [x1 y1 x2 y2] in pixel edges)."""
  rot, trans = pix3d_camera(cam_position, inplane)
  record = {"img": img, "category": category, "img_size": list(size), "bbox": list(bbox),
            "model": model, "rot_mat": rot.tolist(), "trans_mat": trans.tolist(),
            "cam_position": list(cam_position), "inplane_rotation": inplane,
            "focal_length": 35.0, "mask": img.replace("img/", "mask/"), "img_source": "test",
            "model_source": "test", "2d_keypoints": [], "truncated": False, "occluded": False,
            "slightly_occluded": False}
  record.update(flags)
  return record


def write_pix3d_json(path: str, records: list[dict]) -> None:
  with open(_parent(path), "w") as f:
    json.dump(records, f)


def read_off(path) -> np.ndarray:
  """The vertices ``[V, 3]`` of an OFF file (the CAD models of Pascal3D+ and ObjectNet3D)."""
  with open(path) as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  num_vertices = int(lines[1].split()[0])
  return np.array([[float(c) for c in line.split()[:3]] for line in lines[2:2 + num_vertices]])


def read_mat_viewpoint(path, index: int) -> dict[str, float]:
  """The numbers of ``record.objects(index + 1).viewpoint`` of an annotation file."""
  record = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["record"]
  viewpoint = np.atleast_1d(record.objects)[index].viewpoint
  return {name: float(getattr(viewpoint, name)) for name in (
      "azimuth", "elevation", "theta", "distance", "focal", "px", "py", "viewport")}


def toolbox_projection(x3d: np.ndarray, vp: dict[str, float]) -> np.ndarray:
  """Pixel coordinates ``[N, 2]`` (x right, y down) of CAD points ``x3d [N, 3]``, by the camera
  model of the Pascal3D+ / ObjectNet3D toolbox (``project_3d.m`` of their author, Yu Xiang:
  github.com/yuxng/Pose_Dataset, segmentation/project_3d.m), written out from its formulas and
  independent of kdpose.geometry. The camera centre is ``C = d (cos e sin a, -cos e cos a,
  sin e)``; the world turns by ``R = Rx(-(pi/2 - e)) Rz(-a)``; a pinhole of ``viewport * focal``
  pixels with ``P = diag(M f, M f, -1) [R | -R C]``; then the image plane turns by theta, y flips
  to point down, and the principal point ``(px, py)`` is added."""
  a, e, theta = (np.deg2rad(vp[k]) for k in ("azimuth", "elevation", "theta"))
  d, f, m = vp["distance"], vp["focal"], vp["viewport"]
  centre = d * np.array([np.cos(e) * np.sin(a), -np.cos(e) * np.cos(a), np.sin(e)])
  a, e = -a, -(np.pi / 2 - e)
  rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
  rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
  r = rx @ rz
  p = np.diag([m * f, m * f, -1.0]) @ np.hstack([r, -r @ centre[:, None]])
  x = p @ np.vstack([np.asarray(x3d, float).T, np.ones(len(x3d))])
  x = x[:2] / x[2]
  r2d = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  x = (r2d @ x).T
  x[:, 1] = -x[:, 1]
  return x + [vp["px"], vp["py"]]


def kdpose_projection(x3d: np.ndarray, label, vp: dict[str, float]) -> np.ndarray:
  """The same pixels from kdpose's camera (``renderer.project_points``: viewpoint_to_rotation of
  the dataset's ``label`` [3] degrees, the camera at ``distance``), scaled as the annotation's."""
  from kdpose.data import renderer

  uv = renderer.project_points(x3d, np.asarray(label, np.float64), vp["distance"])
  scale = vp["viewport"] * vp["focal"]
  return np.stack([vp["px"] + scale * uv[:, 0], vp["py"] - scale * uv[:, 1]], axis=1)


def assert_projects_as_the_toolbox(x3d: np.ndarray, label, vp: dict[str, float],
                                   min_extent: float) -> None:
  """kdpose's projection of ``x3d`` with the dataset's ``label`` equals the toolbox's with the
  raw annotation ``vp``, whose picture of the model spans more than ``min_extent`` pixels each
  way; and the test can fail: any angle of the label with a wrong sign, or azimuth off by 180,
  moves some point by more than 5 pixels."""
  expected = toolbox_projection(x3d, vp)
  assert np.ptp(expected, axis=0).min() > min_extent
  np.testing.assert_allclose(kdpose_projection(x3d, label, vp), expected, atol=1e-3)
  a, e, t = (float(v) for v in label)
  wrong = ([(a + 180, e, t)] + [(-a, e, t)] * bool(a % 180) + [(a, -e, t)] * bool(e)
           + [(a, e, -t)] * bool(t % 180))
  for angles in wrong:
    assert np.abs(kdpose_projection(x3d, angles, vp) - expected).max() > 5, angles


# --- The tiny datasets -------------------------------------------------------------------------

TEST_CONFIG = dict(name="test", image_longer_side=64, num_points=64)


def make_objectnet3d(root: str) -> None:
  """ObjectNet3D layout with good records and one planted problem of each kind.

  train: ``a`` (80x60 RGB; aeroplane [11 21 50 40] a=30 e=10 t=-5 with keypoints, plus a
  difficult chair), ``b`` (grayscale; one chair, squeezed to a scalar struct, coarse-only
  viewpoint 45/15), ``missing_image``, ``corrupt`` (unreadable .mat), ``wrong_size`` (the photo
  is 40x30, the record says 30x30), ``corrupt_image``.
  val: ``c`` (CMYK; bed a=-30 e=-20 t=170 truncated+occluded without keypoints, cad 2, plus a
  bed without viewpoint), ``d`` (chair with distance 0: coarse 200/5 wins over fine 10/10),
  ``e`` (aeroplane a=0 e=0 t=0), ``bad_cad`` (aeroplane cad_index 9), ``degenerate`` (x2 < x1),
  ``junk_cad`` (two chairs whose CAD/off/chair/02.off is not an OFF file), ``no_annotation``
  (listed, no .mat). test.txt lists ``e`` (the builder does not read it).
  """
  def image(image_id, size, objects, mode="RGB"):
    write_record(f"{root}/Annotations/{image_id}.mat", f"{image_id}.JPEG", size, objects)
    write_photo(f"{root}/Images/{image_id}.JPEG", size, [o["bbox"][0] for o in objects], mode)

  for cls, count in (("aeroplane", 1), ("bed", 2), ("chair", 1)):
    for index in range(1, count + 1):
      write_off(f"{root}/CAD/off/{cls}/{index:02d}.off", *box_mesh((1.0, 0.5 * index, 0.3)))
  image("a", (80, 60), [
      mat_object("aeroplane", [11, 21, 50, 40], vp=viewpoint(30, 10, -5), keypoints=True),
      mat_object("chair", [5, 5, 20, 20], vp=viewpoint(0, 0), difficult=1)])
  image("b", (40, 40), [mat_object("chair", [5, 5, 30, 35], vp=viewpoint(
      None, None, 0.0, azimuth_coarse=45, elevation_coarse=15))], mode="L")
  image("c", (50, 70), [
      mat_object("bed", [2, 3, 45, 60], cad_index=2, vp=viewpoint(-30, -20, 170), truncated=1,
                 occluded=1),
      mat_object("bed", [20, 20, 30, 30], vp=None)], mode="CMYK")
  image("d", (30, 30), [mat_object("chair", [1, 1, 30, 30], vp=viewpoint(
      10, 10, 0.0, distance=0.0, azimuth_coarse=200, elevation_coarse=5))])
  image("e", (30, 30), [mat_object("aeroplane", [5, 5, 25, 25], vp=viewpoint(0, 0, 0))])
  image("bad_cad", (30, 30), [mat_object("aeroplane", [5, 5, 25, 25], cad_index=9,
                                         vp=viewpoint(0, 0))])
  image("degenerate", (30, 30), [mat_object("aeroplane", [20, 5, 10, 25], vp=viewpoint(0, 0))])
  write_record(f"{root}/Annotations/missing_image.mat", "missing_image.JPEG", (30, 30),
               [mat_object("aeroplane", [5, 5, 25, 25], vp=viewpoint(0, 0))])
  write_garbage(f"{root}/Annotations/corrupt.mat")
  write_photo(f"{root}/Images/corrupt.JPEG", (30, 30))
  image("wrong_size", (30, 30), [mat_object("chair", [5, 5, 25, 25], vp=viewpoint(0, 0))])
  write_photo(f"{root}/Images/wrong_size.JPEG", (40, 30))
  write_garbage(f"{root}/CAD/off/chair/02.off")
  image("junk_cad", (30, 30), [mat_object("chair", [5, 5, 25, 25], cad_index=2,
                                          vp=viewpoint(0, 0))] * 2)
  image("corrupt_image", (30, 30), [mat_object("chair", [5, 5, 25, 25], vp=viewpoint(0, 0))])
  write_garbage(f"{root}/Images/corrupt_image.JPEG")
  train = ["a", "b", "missing_image", "corrupt", "wrong_size", "corrupt_image"]
  val = ["c", "d", "e", "bad_cad", "degenerate", "junk_cad", "no_annotation"]
  write_lines(f"{root}/Image_sets/train.txt", train)
  write_lines(f"{root}/Image_sets/val.txt", val)
  write_lines(f"{root}/Image_sets/test.txt", ["e"])
  write_lines(f"{root}/Image_sets/trainval.txt", train + val)


def make_pascal3d(root: str) -> None:
  """Pascal3D+ layout: all 24 annotation folders and 12 VOC val lists, a few records.

  train: ``aeroplane_imagenet/n02691156_1`` (aeroplane a=100 e=20 t=3, cad 2),
  ``aeroplane_pascal/2008_000002`` (not in VOC val; truncated aeroplane, coarse-only 250/30,
  box [1 1 44 20] running past the 40 px wide photo).
  test (VOC2012 val): image 2008_000001 annotated in both ``aeroplane_pascal`` (aeroplane
  a=200 e=-10 + a person without viewpoint) and ``car_pascal`` (same aeroplane + a car a=90 e=5
  at index 1). Planted: ``car_imagenet/n02958343_9`` has cad_index 0.
  """
  from kdpose.data import pascal3d

  for category in pascal3d.CATEGORIES:
    for source in ("imagenet", "pascal"):
      os.makedirs(f"{root}/Annotations/{category}_{source}", exist_ok=True)
    val = ["2008_000001  1", "2008_000003 -1"] if category in ("aeroplane", "car") else []
    write_lines(f"{root}/PASCAL/VOCdevkit/VOC2012/ImageSets/Main/{category}_val.txt", val)
  for name, extents in (("aeroplane/01", (1, 1, 1)), ("aeroplane/02", (1.0, 0.6, 0.2)),
                        ("car/01", (1.0, 0.4, 0.3))):
    write_off(f"{root}/CAD/{name}.off", *box_mesh(extents))

  def image(folder, image_id, ext, size, objects):
    write_record(f"{root}/Annotations/{folder}/{image_id}.mat", image_id + ext, size, objects)
    write_photo(f"{root}/Images/{folder}/{image_id}{ext}", size, [o["bbox"][0] for o in objects])

  image("aeroplane_imagenet", "n02691156_1", ".JPEG", (50, 40),
        [mat_object("aeroplane", [3, 4, 40, 30], cad_index=2, vp=viewpoint(100, 20, 3))])
  image("aeroplane_pascal", "2008_000002", ".jpg", (40, 40), [mat_object(
      "aeroplane", [1, 1, 44, 20], truncated=1,
      vp=viewpoint(None, None, 0.0, azimuth_coarse=250, elevation_coarse=30))])
  plane = mat_object("aeroplane", [10, 10, 40, 30], vp=viewpoint(200, -10, 0))
  person = mat_object("person", [1, 1, 8, 30], cad_index=0, vp=None)
  car = mat_object("car", [41, 5, 58, 35], vp=viewpoint(90, 5, 0), keypoints=True)
  image("aeroplane_pascal", "2008_000001", ".jpg", (60, 40), [plane, person])
  image("car_pascal", "2008_000001", ".jpg", (60, 40), [plane, car])
  image("car_imagenet", "n02958343_9", ".JPEG", (30, 30),
        [mat_object("car", [5, 5, 25, 25], cad_index=0, vp=viewpoint(0, 0))])


def make_pix3d(root: str) -> None:
  """Pix3D layout: ``pix3d.json``, images and .obj models (y up, front -z, as Pix3D's).

  Good: ``img/chair/0001.png`` (RGBA 60x80, box [10 20 50 70], camera (0.6, 0.7, -2.0), in-plane
  0.2 rad; its chair is tall along y with a bump on its front, -z) and ``img/bed/0002.png``
  (16-bit grayscale, camera (-1.5, 0.3, 1.2), in-plane -0.1, truncated, slightly occluded).
  Planted: a missing model, a cam_position contradicting rot_mat, a lamp (not a Pix3D category),
  a missing image, a bbox of 3 numbers, and record 0 repeated.
  """
  write_obj(f"{root}/model/chair/IKEA_A/model.obj", *box_mesh((0.5, 1.0, 0.4), (0, 0, -0.3)))
  write_obj(f"{root}/model/bed/IKEA_B/model.obj", *box_mesh((1.0, 0.3, 0.8)))
  write_photo(f"{root}/img/chair/0001.png", (60, 80), [(11, 21, 50, 70)], "RGBA")
  write_photo(f"{root}/img/bed/0002.png", (50, 30), [(1, 6, 45, 30)], "I;16")
  write_photo(f"{root}/img/chair/0003.png", (30, 30))
  write_photo(f"{root}/img/chair/0004.png", (30, 30))
  chair = pix3d_record("img/chair/0001.png", "chair", (60, 80), [10, 20, 50, 70],
                       "model/chair/IKEA_A/model.obj", (0.6, 0.7, -2.0), 0.2)
  contradicting = pix3d_record("img/chair/0004.png", "chair", (30, 30), [5, 5, 25, 25],
                               "model/chair/IKEA_A/model.obj", (1.0, 0.0, -1.0), 0.0)
  contradicting["cam_position"] = [-1.0, 0.0, -1.0]
  write_pix3d_json(f"{root}/pix3d.json", [
      chair,
      pix3d_record("img/bed/0002.png", "bed", (50, 30), [0, 5, 45, 30],
                   "model/bed/IKEA_B/model.obj", (-1.5, 0.3, 1.2), -0.1, truncated=True,
                   slightly_occluded=True),
      pix3d_record("img/chair/0003.png", "chair", (30, 30), [5, 5, 25, 25],
                   "model/chair/NOPE/model.obj", (0.0, 0.0, -2.0), 0.0),
      contradicting,
      pix3d_record("img/lamp/0001.png", "lamp", (30, 30), [5, 5, 25, 25],
                   "model/lamp/L/model.obj", (0.0, 0.0, -2.0), 0.0),
      pix3d_record("img/sofa/0001.jpg", "sofa", (30, 30), [5, 5, 25, 25],
                   "model/chair/IKEA_A/model.obj", (0.0, 0.0, -2.0), 0.0),
      pix3d_record("img/chair/0003.png", "chair", (30, 30), [5, 5, 25],
                   "model/chair/IKEA_A/model.obj", (0.0, 0.0, -2.0), 0.0),
      chair,
  ])


def build(builder_cls, data_dir: str, manual_dir: str | None, **config):
  """Builds ``builder_cls`` (array_record) from ``manual_dir`` with TEST_CONFIG + ``config``."""
  builder = builder_cls(data_dir=data_dir, file_format="array_record",
                        config=crops.RealPhotoConfig(**{**TEST_CONFIG, **config}))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def read_split(builder, split: str) -> dict[str, dict]:
  """Examples of ``split`` keyed by object_id (text)."""
  source = builder.as_data_source(split)
  examples = [source[i] for i in range(len(source))]
  return {e["object_id"].decode(): e for e in examples}


def build_fixture(root, make_raw, builder_cls, splits):
  """Writes a raw dataset with ``make_raw`` under ``root/raw``, builds it into ``root/data``;
  returns the builder and ``{split: read_split(...)}``."""
  make_raw(os.fspath(root / "raw"))
  builder = build(builder_cls, os.fspath(root / "data"), os.fspath(root / "raw"))
  return builder, {split: read_split(builder, split) for split in splits}
