"""Models by name: image encoders, the teacher and the student, built from config dicts.

``teacher_config(size)`` / ``student_config(size)`` give the sizes kdpose runs at: ``tiny``
(tests), ``small`` (CPU runs), ``lite0`` (CPU runs on pretrained EfficientNet-Lite0), ``resnet18``
and ``resnet50`` (the anchors' sizes, bfloat16).

Every model config also takes the encoder fields of ``ENCODER_DEFAULTS``: ``pretrained`` ("" for
random weights, ``package`` for the encoder's weight package, or a checkpoint path; read by
``pretrained.load_encoder`` at the start of training, not by the module), ``frozen_stages``,
``frozen_norm`` and ``pool_grid`` (see ``encoder_parts``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from kdpose import geometry
from kdpose.models import efficientnet, resnet
from kdpose.models.heads import decode_pose
from kdpose.models.student import Student
from kdpose.models.teacher import Teacher

__all__ = [
    "IMAGE_ENCODERS", "Student", "Teacher", "build_student", "build_teacher", "decode_pose",
    "get_image_encoder", "input_normalization", "student_config", "teacher_config",
]

# name -> constructor taking ``dtype=``, ``frozen_stages=``, ``frozen_norm=``, ``pool_grid=``;
# the module maps images [batch, H, W, 3] RGB in [0, 1] -> [batch, pool_grid**2 * C].
IMAGE_ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "efficientnet_lite0": efficientnet.efficientnet_lite0,
    "efficientnet_lite1": efficientnet.efficientnet_lite1,
    "efficientnet_lite2": efficientnet.efficientnet_lite2,
    "resnet18": resnet.resnet18,
    "resnet50": resnet.resnet50,
    "resnet_small": resnet.resnet_small,
    "resnet_tiny": resnet.resnet_tiny,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

TEACHER_FIELDS = ("image_encoder", "dtype", "image_feature_dim", "point_widths",
                  "fusion_widths", "embedding_dim", "projector_widths")
STUDENT_FIELDS = ("image_encoder", "dtype", "mlp_widths", "embedding_dim")
# Optional in a model config (runs and exports made before them have none).
ENCODER_DEFAULTS = {"pretrained": "", "frozen_stages": 0, "frozen_norm": False, "pool_grid": 1}

_TEACHER_SIZES = {
    "tiny": dict(image_encoder="resnet_tiny", dtype="float32", image_feature_dim=32,
                 point_widths=(16, 32, 64), fusion_widths=(32,), embedding_dim=32,
                 projector_widths=(32,)),
    "small": dict(image_encoder="resnet_small", dtype="float32", image_feature_dim=256,
                  point_widths=(64, 128, 256), fusion_widths=(256,), embedding_dim=128,
                  projector_widths=(256,)),
    "resnet18": dict(image_encoder="resnet18", dtype="bfloat16", image_feature_dim=1024,
                     point_widths=(64, 128, 1024), fusion_widths=(800, 400), embedding_dim=200,
                     projector_widths=(800, 400)),
}
_TEACHER_SIZES["resnet50"] = dict(_TEACHER_SIZES["resnet18"], image_encoder="resnet50")
_TEACHER_SIZES["lite0"] = dict(_TEACHER_SIZES["small"], image_encoder="efficientnet_lite0")

_STUDENT_SIZES = {
    "tiny": dict(image_encoder="resnet_tiny", dtype="float32", mlp_widths=(32,),
                 embedding_dim=32),
    "small": dict(image_encoder="resnet_small", dtype="float32", mlp_widths=(256,),
                  embedding_dim=128),
    "resnet18": dict(image_encoder="resnet18", dtype="bfloat16", mlp_widths=(800, 400),
                     embedding_dim=200),
}
_STUDENT_SIZES["resnet50"] = dict(_STUDENT_SIZES["resnet18"], image_encoder="resnet50")
_STUDENT_SIZES["lite0"] = dict(_STUDENT_SIZES["small"], image_encoder="efficientnet_lite0")


def get_image_encoder(name: str) -> Callable[..., nn.Module]:
  """The constructor of the image encoder ``name``; call it with ``dtype=``."""
  if name not in IMAGE_ENCODERS:
    raise KeyError(f"kdpose/models: unknown image encoder {name!r}; known: "
                   f"{sorted(IMAGE_ENCODERS)}.")
  return IMAGE_ENCODERS[name]


def input_normalization(model_config: Mapping[str, Any]) -> dict[str, list[float]]:
  """The ``mean`` and ``std`` (RGB, images in [0, 1]) the model's encoder normalises with."""
  encoder = get_image_encoder(model_config["image_encoder"])()
  return {"mean": list(encoder.input_mean), "std": list(encoder.input_std)}


def _checked_fields(model_config: Mapping[str, Any], fields: tuple[str, ...], what: str
                    ) -> dict[str, Any]:
  """The config as a plain dict, after checking it has exactly ``fields``."""
  given = dict(model_config.items())
  missing = [f for f in fields if f not in given]
  unknown = sorted(set(given) - set(fields) - set(ENCODER_DEFAULTS))
  if missing or unknown:
    raise ValueError(f"kdpose/models: {what} config has missing fields {missing} and unknown "
                     f"fields {unknown}; expected exactly {list(fields)} and optionally "
                     f"{list(ENCODER_DEFAULTS)}.")
  if given["dtype"] not in DTYPES:
    raise ValueError(f"kdpose/models: {what} dtype {given['dtype']!r}, expected one of "
                     f"{sorted(DTYPES)}.")
  encoder = dict(ENCODER_DEFAULTS, **{k: given.pop(k) for k in ENCODER_DEFAULTS if k in given})
  given["dtype"] = DTYPES[given["dtype"]]
  given["image_encoder"] = get_image_encoder(given["image_encoder"])(
      dtype=given["dtype"], frozen_stages=int(encoder["frozen_stages"]),
      frozen_norm=bool(encoder["frozen_norm"]), pool_grid=int(encoder["pool_grid"]))
  # Module fields must be hashable: config files and flags may hand over lists.
  return {k: tuple(int(w) for w in v) if k.endswith("widths") else v for k, v in given.items()}


def build_teacher(model_config: Mapping[str, Any],
                  bin_size: float = geometry.DEFAULT_BIN_SIZE) -> Teacher:
  """A ``Teacher`` from a config with exactly ``TEACHER_FIELDS``."""
  return Teacher(bin_size=bin_size, **_checked_fields(model_config, TEACHER_FIELDS, "teacher"))


def build_student(model_config: Mapping[str, Any],
                  bin_size: float = geometry.DEFAULT_BIN_SIZE) -> Student:
  """A ``Student`` from a config with exactly ``STUDENT_FIELDS``."""
  return Student(bin_size=bin_size, **_checked_fields(model_config, STUDENT_FIELDS, "student"))


def _sized_config(sizes: dict[str, dict[str, Any]], size: str, what: str
                  ) -> ml_collections.ConfigDict:
  if size not in sizes:
    raise KeyError(f"kdpose/models: unknown {what} size {size!r}; known: {sorted(sizes)}.")
  return ml_collections.ConfigDict(dict(ENCODER_DEFAULTS, **sizes[size]))


def teacher_config(size: str) -> ml_collections.ConfigDict:
  """Teacher fields for ``size`` in tiny, small, lite0, resnet18, resnet50."""
  return _sized_config(_TEACHER_SIZES, size, "teacher")


def student_config(size: str) -> ml_collections.ConfigDict:
  """Student fields for ``size`` in tiny, small, lite0, resnet18, resnet50."""
  return _sized_config(_STUDENT_SIZES, size, "student")
