r"""Viewpoints of objects in images with an exported student.

  python -m kdpose.predict --model runs/default/export photo.jpg [more.png ...] \
      [--box x1,y1,x2,y2 ...] [--json] [--visualize out.png] [--flip_test] [--batch_size 32]

Boxes are (x1, y1, x2, y2) in pixels of the image as it is shown (continuous coordinates: pixel
``i`` covers [i, i + 1]): a photo's EXIF orientation is applied first, so a phone photo is upright
and its box is drawn on the upright picture. (The dataset builders keep the stored pixels
instead, since their annotations refer to those: ``kdpose.data.crops.load_rgb``.) One ``--box``
applies to every image, or give one per image; without a box the whole image is the object.
Each object is cropped exactly as evaluation crops it (``augment.crop_images``: the box, keeping
its aspect ratio, centred on a black square). Prints one line per image, or one JSON object per
line with ``--json``; an image that cannot be used gets an error line, the others are still
answered, and the exit code is 1.

Python:
  predictor = Predictor("runs/default/export")
  viewpoints = predictor(["photo.jpg", rgb_uint8_array], boxes=[[10, 20, 200, 180], None])
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Sequence

import jax
import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageOps

from kdpose import export, inference, visualize

MAX_IMAGE_SIDE = 2048  # pixels; larger images are downscaled first (the crop needs far fewer).
_REGION_MARGIN = 2  # pixels kept around a box: bilinear sampling reads one pixel beyond it.
_MIN_CANVAS = 64  # smallest padded side of a batch; sides are powers of two (few compilations).
GRID_TILE = 256  # pixels per image in the grid of several predictions.
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations whose upright image is turned by 90°.
ImageSource = str | os.PathLike | np.ndarray


class InputError(ValueError):
  """An image or box that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ObjectInput:
  """One object ready for prediction.

  Attributes:
    name: the file path, or ``images[i]`` for an array.
    image: uint8 ``[H, W, 3]`` RGB, upright (EXIF orientation applied), downscaled to at most
      ``MAX_IMAGE_SIDE``.
    box: float32 ``[4]`` = (x1, y1, x2, y2) in pixels of ``image``.
  """

  name: str
  image: np.ndarray
  box: np.ndarray


def _to_rgb(pil: Image.Image) -> Image.Image:
  """RGB; transparent pixels become black, like the padding around every crop."""
  if pil.mode in _ALPHA_MODES or (pil.mode == "P" and "transparency" in pil.info):
    rgba = pil.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
  return pil.convert("RGB")


def _open(source: ImageSource, name: str) -> tuple[Image.Image, tuple[int, int]]:
  """The image, turned upright by its EXIF orientation, and its original size (width, height)
  in pixels of the upright image."""
  if isinstance(source, np.ndarray):
    if source.dtype != np.uint8 or source.ndim not in (2, 3) or (
        source.ndim == 3 and source.shape[-1] not in (1, 3, 4)):
      raise InputError(f"{name}: expected a uint8 [H, W], [H, W, 3] or [H, W, 4] array, got "
                       f"{source.dtype} {source.shape}.")
    pil = Image.fromarray(source[..., 0] if source.shape[-1:] == (1,) else source)
    return pil, pil.size
  try:
    pil = Image.open(source)
    size = pil.size
    pil.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # JPEG: decode huge ones at 1/2, 1/4...
    pil.load()
    swaps = pil.getexif().get(ExifTags.Base.Orientation, 1) in _SWAPPING_ORIENTATIONS
    upright = ImageOps.exif_transpose(pil)  # reads the same tag.
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise InputError(f"{name}: cannot read the image: {error}") from error
  return upright, size[::-1] if swaps else size


def load_image(source: ImageSource, name: str | None = None
               ) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
  """Reads a path or array as RGB uint8, downscaled to at most ``MAX_IMAGE_SIDE`` pixels; a file
  is turned upright by its EXIF orientation (``ImageOps.exif_transpose``), an array is used as
  it is.

  Returns the image ``[H, W, 3]``, its scale ``(sx, sy)`` relative to the original and the
  original size ``(width, height)`` in pixels, both of the upright image.
  """
  pil, size = _open(source, name or str(source))
  pil = _to_rgb(pil)
  scale = min(1.0, MAX_IMAGE_SIDE / max(size))
  target = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
  if pil.size != target:
    pil = pil.resize(target, Image.Resampling.LANCZOS)
  return np.asarray(pil), (target[0] / size[0], target[1] / size[1]), size


def parse_box(text: str) -> np.ndarray:
  """``"x1,y1,x2,y2"`` -> float32 ``[4]``."""
  try:
    box = np.array([float(v) for v in text.split(",")], np.float32)
  except ValueError:
    box = np.zeros(0)
  if box.shape != (4,):
    raise InputError(f"box {text!r} is not four numbers x1,y1,x2,y2.")
  return box


def _check_box(box, size: tuple[int, int], name: str) -> np.ndarray:
  """The box as float32 ``[4]`` after checking it is usable on an image of ``size`` (w, h)."""
  try:
    box = np.asarray(box, np.float32).reshape(4)
  except (TypeError, ValueError) as error:
    raise InputError(f"{name}: box {box!r} is not four numbers x1,y1,x2,y2.") from error
  x1, y1, x2, y2 = box.tolist()
  width, height = size
  if not np.all(np.isfinite(box)) or x2 - x1 < 1.0 or y2 - y1 < 1.0:
    raise InputError(f"{name}: box {box.tolist()} is degenerate (needs x2 >= x1 + 1 and "
                     "y2 >= y1 + 1, in pixels).")
  if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
    raise InputError(f"{name}: box {box.tolist()} lies outside the {width}x{height} image.")
  return box


def prepare_object(source: ImageSource, box=None, name: str | None = None) -> ObjectInput:
  """Loads ``source`` (a path or a uint8 array) and checks ``box`` (pixels of the original,
  upright image, or None for the whole image); raises ``InputError`` naming the file."""
  name = name or str(source)
  image, (sx, sy), size = load_image(source, name)
  box = np.array([0.0, 0.0, *size], np.float32) if box is None else _check_box(box, size, name)
  return ObjectInput(name, image, box * np.array([sx, sy, sx, sy], np.float32))


def _region(obj: ObjectInput) -> tuple[np.ndarray, np.ndarray]:
  """The part of the image the crop can read (the box and a margin) and the box in it."""
  height, width = obj.image.shape[:2]
  x1, y1 = (max(int(np.floor(v)) - _REGION_MARGIN, 0) for v in obj.box[:2])
  x2 = min(int(np.ceil(obj.box[2])) + _REGION_MARGIN, width)
  y2 = min(int(np.ceil(obj.box[3])) + _REGION_MARGIN, height)
  return obj.image[y1:y2, x1:x2], obj.box - np.array([x1, y1, x1, y1], np.float32)


def pack_batch(objects: Sequence[ObjectInput], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Images uint8 ``[batch_size, P, P, 3]`` (regions zero-padded, P a power of two) and boxes
  float32 ``[batch_size, 4]``; entries past ``len(objects)`` are black with a unit box."""
  regions = [_region(obj) for obj in objects]
  longest = max(max(region.shape[:2]) for region, _ in regions)
  side = max(_MIN_CANVAS, 1 << (longest - 1).bit_length())
  images = np.zeros((batch_size, side, side, 3), np.uint8)
  boxes = np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (batch_size, 1))
  for i, (region, box) in enumerate(regions):
    images[i, :region.shape[0], :region.shape[1]] = region
    boxes[i] = box
  return images, boxes


class Predictor:
  """An exported student, ready to predict viewpoints of objects in images."""

  def __init__(self, model_dir: str, flip_test: bool = False, batch_size: int = 32):
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be positive.")
    self.model, self.variables, self.meta = export.load_export(model_dir)
    self.batch_size = batch_size
    self._predict = jax.jit(functools.partial(
        inference.predict_boxes, self.model, image_size=int(self.meta["image_size"]),
        bin_size=float(self.meta["bin_size"]), flip_test=flip_test))

  def predict_objects(self, objects: Sequence[ObjectInput]) -> tuple[np.ndarray, np.ndarray]:
    """Viewpoints ``[N, 3]`` (degrees) and confidences ``[N, 3]`` of prepared objects."""
    viewpoints, confidences = [], []
    for start in range(0, len(objects), self.batch_size):
      chunk = objects[start:start + self.batch_size]
      # A power of two up to batch_size: a single image does not pay for a full batch.
      padded = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())
      images, boxes = pack_batch(chunk, padded)
      viewpoint, confidence = jax.device_get(self._predict(self.variables, images, boxes))
      viewpoints.append(viewpoint[:len(chunk)])
      confidences.append(confidence[:len(chunk)])
    if not objects:
      return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    return np.concatenate(viewpoints), np.concatenate(confidences)

  def predict_with_confidence(self, images: Sequence[ImageSource], boxes=None
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Viewpoints ``[N, 3]`` in degrees (azimuth, elevation, in-plane) and the confidence
    ``[N, 3]`` of each angle's bin, for images (paths or uint8 arrays) and optional boxes
    (``[N, 4]`` or a list with None for whole images), in pixels of the original images."""
    boxes = [None] * len(images) if boxes is None else list(boxes)
    if len(boxes) != len(images):
      raise InputError(f"{len(images)} images but {len(boxes)} boxes.")
    viewpoints, confidences = [], []
    for start in range(0, len(images), self.batch_size):  # Holds one batch of images at a time.
      objects = [prepare_object(source, box, _name(source, start + i)) for i, (source, box)
                 in enumerate(zip(images[start:start + self.batch_size],
                                  boxes[start:start + self.batch_size], strict=True))]
      viewpoint, confidence = self.predict_objects(objects)
      viewpoints.append(viewpoint)
      confidences.append(confidence)
    if not viewpoints:
      return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    return np.concatenate(viewpoints), np.concatenate(confidences)

  def __call__(self, images: Sequence[ImageSource], boxes=None) -> np.ndarray:
    """Viewpoints ``[N, 3]`` in degrees; see ``predict_with_confidence``."""
    return self.predict_with_confidence(images, boxes)[0]


def _name(source: ImageSource, index: int) -> str:
  return f"images[{index}]" if isinstance(source, np.ndarray) else str(source)


def draw_prediction(obj: ObjectInput, viewpoint, reference=None) -> np.ndarray:
  """The object's image with its box and the axes of ``viewpoint`` ``[3]`` (degrees) drawn from
  the box centre; ``reference`` ``[3]`` (e.g. the ground truth) is drawn dashed."""
  pil = Image.fromarray(obj.image)
  ImageDraw.Draw(pil).rectangle(obj.box.tolist(), outline=(255, 220, 0),
                                width=max(1, round(min(pil.size) / 200)))
  x1, y1, x2, y2 = obj.box.tolist()
  return visualize.draw_viewpoint_axes(
      np.asarray(pil), viewpoint, center=((x1 + x2) / 2, (y1 + y2) / 2),
      length=max(8.0, 0.4 * min(x2 - x1, y2 - y1)), reference=reference)


def _thumbnail(obj: ObjectInput, side: int) -> ObjectInput:
  """The object with its image downscaled to at most ``side`` pixels (box scaled along)."""
  height, width = obj.image.shape[:2]
  scale = min(1.0, side / max(height, width))
  if scale == 1.0:
    return obj
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  image = np.asarray(Image.fromarray(obj.image).resize(size, Image.Resampling.LANCZOS))
  factors = np.array([size[0] / width, size[1] / height] * 2, np.float32)
  return ObjectInput(obj.name, image, obj.box * factors)


def _square(image: np.ndarray) -> np.ndarray:
  """Zero-pads ``[H, W, 3]`` to a centred square (the grid must not stretch pictures)."""
  height, width = image.shape[:2]
  side = max(height, width)
  out = np.zeros((side, side, 3), np.uint8)
  top, left = (side - height) // 2, (side - width) // 2
  out[top:top + height, left:left + width] = image
  return out


def visualize_predictions(objects: Sequence[ObjectInput], viewpoints, ground_truth=None,
                          tile: int = GRID_TILE, columns: int = 4) -> np.ndarray:
  """One object: its picture (``draw_prediction``). Several: a grid of ``tile`` px squares
  labelled with name and angles. Viewpoints ``[N, 3]`` and ground truth ``[N, 3]`` in degrees."""
  pictures = [draw_prediction(obj, viewpoints[i], None if ground_truth is None
                              else ground_truth[i]) for i, obj in enumerate(objects)]
  if len(pictures) == 1:
    return pictures[0]
  labels = [f"{os.path.basename(obj.name)} {vp[0]:.0f}/{vp[1]:.0f}/{vp[2]:.0f}"
            for obj, vp in zip(objects, viewpoints, strict=True)]
  return visualize.contact_sheet([_square(p) for p in pictures], labels=labels, columns=columns,
                                 tile=tile)


def format_line(name: str, viewpoint, confidence, as_json: bool) -> str:
  """One output line: ``name azimuth=.. elevation=.. inplane=.. confidence=..`` (degrees; the
  azimuth bin's confidence) or a JSON object with all three confidences."""
  if as_json:
    return json.dumps({
        "image": name, **{k: round(float(v), 3) for k, v in zip(
            ("azimuth", "elevation", "inplane"), viewpoint, strict=True)},
        "confidence": {k: round(float(v), 4) for k, v in zip(
            ("azimuth", "elevation", "inplane"), confidence, strict=True)}})
  return (f"{name} azimuth={viewpoint[0]:.2f} elevation={viewpoint[1]:.2f} "
          f"inplane={viewpoint[2]:.2f} confidence={confidence[0]:.3f}")


def _report_error(name: str, error: Exception, as_json: bool) -> None:
  if as_json:
    print(json.dumps({"image": name, "error": str(error)}))
  print(f"error: {error}", file=sys.stderr)


def _boxes_for(paths: Sequence[str], box_flags: Sequence[str]) -> list[np.ndarray | None]:
  if not box_flags:
    return [None] * len(paths)
  boxes = [parse_box(text) for text in box_flags]
  if len(boxes) == 1:
    return boxes * len(paths)
  if len(boxes) != len(paths):
    raise InputError(f"{len(paths)} images but {len(boxes)} --box flags: give one box for "
                     "all images or one per image.")
  return boxes


def _prepare_or_error(path: str, box) -> ObjectInput | InputError:
  try:
    return prepare_object(path, box)
  except InputError as error:
    return error


def run(model_dir: str, paths: Sequence[str], box_flags: Sequence[str] = (), *,
        as_json: bool = False, visualize_path: str | None = None, flip_test: bool = False,
        batch_size: int = 32) -> int:
  """The command line's work; returns the exit code (0 ok, 1 some image failed, 2 usage).

  Lines come in the order of ``paths``; a failed image gets its error in its place.
  """
  try:
    boxes = _boxes_for(paths, box_flags)
    predictor = Predictor(model_dir, flip_test=flip_test, batch_size=batch_size)
  except (InputError, FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  failed, shown, shown_viewpoints = False, [], []
  for start in range(0, len(paths), batch_size):
    items = [_prepare_or_error(path, box) for path, box in
             zip(paths[start:start + batch_size], boxes[start:start + batch_size], strict=True)]
    objects = [item for item in items if isinstance(item, ObjectInput)]
    viewpoints, confidences = predictor.predict_objects(objects)
    answers = zip(viewpoints, confidences, strict=True)
    for path, item in zip(paths[start:start + batch_size], items, strict=True):
      if isinstance(item, InputError):
        failed = True
        _report_error(path, item, as_json)
      else:
        print(format_line(item.name, *next(answers), as_json))
    if visualize_path:  # Grid cells are small: keep thumbnails, not whole images.
      shown.extend(objects if len(paths) == 1 else [_thumbnail(o, GRID_TILE) for o in objects])
      shown_viewpoints.extend(viewpoints)
  if visualize_path and shown:
    Image.fromarray(visualize_predictions(shown, np.asarray(shown_viewpoints))).save(
        visualize_path)
  return 1 if failed else 0


def _define_flags() -> None:
  """Command-line flags, defined only when run as a program."""
  from absl import flags

  flags.DEFINE_string("model", None, "An export directory (python -m kdpose.export).")
  flags.DEFINE_multi_string("box", [], "x1,y1,x2,y2 in pixels: once for all images, or once "
                            "per image (default: the whole image).")
  flags.DEFINE_bool("json", False, "Print one JSON object per image.")
  flags.DEFINE_string("visualize", None, "Write a picture of the predicted axes to this PNG.")
  flags.DEFINE_bool("flip_test", False, "Also predict on mirrored crops; keep the more "
                    "confident azimuth.")
  flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
  flags.mark_flag_as_required("model")


def main(argv: Sequence[str]) -> int:
  from absl import app, flags, logging

  if len(argv) < 2:
    raise app.UsageError("Give at least one image path.")
  values = flags.FLAGS
  if not values["verbosity"].present:  # orbax's INFO lines would bury the error messages.
    logging.set_verbosity(logging.WARNING)
  return run(values.model, argv[1:], values.box, as_json=values.json,
             visualize_path=values.visualize, flip_test=values.flip_test,
             batch_size=values.batch_size)


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
