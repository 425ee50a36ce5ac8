"""A torchvision-layout ResNet in plain PyTorch, of any size: the reference for kdpose's ResNet.

Module names and semantics are exactly torchvision's ``torchvision.models.resnet`` (``conv1``,
``bn1``, ``layer{k}.{i}.conv1/bn1/conv2/bn2[/conv3/bn3]``, ``layer{k}.{i}.downsample.0/.1``,
``fc``; 7x7/2 stem, 3x3/2 max pool, stride on the 3x3 conv of a bottleneck ("v1.5"), BatchNorm eps
1e-5), so a torchvision or MoCo ResNet-18/34/50 state dict loads with ``strict=True``, and tiny
variants (``stage_widths=(8, 16, 32, 64)``) make small test fixtures.

Input: RGB, NCHW float, ImageNet mean/std normalised (``preprocess``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions, the first strided."""

  expansion = 1

  def __init__(self, in_channels: int, width: int, stride: int = 1):
    super().__init__()
    self.conv1 = _conv(in_channels, width, 3, stride)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = _conv(width, width, 3)
    self.bn2 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _downsample(in_channels, width * self.expansion, stride)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + shortcut)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided: "v1.5"), 1x1 expand to 4x width."""

  expansion = 4

  def __init__(self, in_channels: int, width: int, stride: int = 1):
    super().__init__()
    self.conv1 = _conv(in_channels, width, 1)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = _conv(width, width, 3, stride)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = _conv(width, width * self.expansion, 1)
    self.bn3 = nn.BatchNorm2d(width * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _downsample(in_channels, width * self.expansion, stride)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + shortcut)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
  """1x1 strided projection + BN when the shortcut changes shape; None for the identity."""
  if stride == 1 and in_channels == out_channels:
    return None
  return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """[batch, 3, H, W] -> [batch, num_classes]; stage k is ``layer{k}``, stride 2 from stage 2 on."""

  def __init__(self, block: str = "bottleneck", stage_sizes: tuple[int, ...] = (3, 4, 6, 3),
               stage_widths: tuple[int, ...] = (64, 128, 256, 512), num_classes: int = 1000):
    super().__init__()
    if block not in BLOCKS:
      raise ValueError(f"unknown ResNet block {block!r}; known: {sorted(BLOCKS)}")
    if len(stage_sizes) != len(stage_widths):
      raise ValueError(f"stage_sizes {stage_sizes} and stage_widths {stage_widths} differ in "
                       "length")
    block_type = BLOCKS[block]
    channels = stage_widths[0]
    self.conv1 = nn.Conv2d(3, channels, 7, 2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(channels)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, padding=1)
    for k, (size, width) in enumerate(zip(stage_sizes, stage_widths, strict=True)):
      blocks = []
      for i in range(size):
        stride = 2 if k > 0 and i == 0 else 1
        blocks.append(block_type(channels, width, stride))
        channels = width * block_type.expansion
      setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    self.num_features = channels
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(channels, num_classes)
    self._init_weights()

  def _init_weights(self) -> None:
    # torchvision's initialisation, so random networks have realistic activation scales.
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

  def features(self, x: torch.Tensor) -> torch.Tensor:
    """[batch, 3, H, W] -> [batch, num_features] globally average-pooled features (before fc)."""
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for k in range(self.num_stages):
      x = getattr(self, f"layer{k + 1}")(x)
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc(self.features(x))


def preprocess(images: np.ndarray) -> torch.Tensor:
  """[batch, H, W, 3] uint8 RGB -> [batch, 3, H, W] float32, (x / 255 - mean) / std."""
  x = torch.tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0
  mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
  return (x - mean) / std
