r"""PyTorch peer of kdpose's baseline student train step (EfficientNet-Lite0, CPU, float32).

The same step as ``kdpose.steps.student_train_step`` with every KD weight 0, written as a
PoseContrast-style PyTorch user would: eager mode, NCHW, the augmentation in torch ops on the CPU
inside the step. One timed step does, from a uint8 batch ``[B, S, S, 3]`` (S = ``--source_size``):

  augmentation (torch ops, per-sample random draws): box jitter (each side U(-0.1, 0.1) x box
    size), keep-aspect crop-resize to ``--size`` with zero padding, horizontal flip (p 0.5) and
    in-plane rotation (U(-15, 15) degrees) as ONE affine map per sample (``affine_grid`` +
    bilinear ``grid_sample``), zeroed outside the box; brightness, contrast (about the mean luma
    of the crop's valid pixels), saturation factors U(0.6, 1.4) as per-sample multiplications,
    grayscale (p 0.1), gaussian blur (p 0.1, sigma U(0.1, 1.0), 5 taps, a grouped convolution on
    the chosen samples), one clip to [0, 1]; the viewpoint labels flipped and rotated to match;
  the student in train mode: the ``--encoder`` trunk normalised as kdpose's (Lite0:
    ``efficientnet_lite``, drop-connect off and no classifier, as kdpose's Flax trunk; stages
    0 .. ``--frozen_stages`` - 1 run without autograd and with their BatchNorm on running
    statistics, every encoder BatchNorm so with ``--frozen_norm``; the last map averaged over
    ``--pool_grid`` x ``--pool_grid`` cells, 1280 per cell; or ResNet-18/50: ``resnet``, no
    classifier) -> per ``--mlp_widths`` width W: Linear(W, no bias) -> BatchNorm1d (eps 1e-5,
    momentum 0.1) -> ReLU; then Linear(E = ``--embedding_dim``) -> tanh = feature -> two
    Linear(60) heads (logits and raw offsets of the 24/12/24 bins of 15 degrees); the Linear(E)
    projector runs too, its output unused (as in kdpose's baseline);
  the pose loss: bin cross-entropy + smooth-L1 (beta 1) of 5 * (tanh(r) / 2 - target offset) at
    the true bin, summed over the 3 angles, mean over the batch;
  backward and ``torch.optim.Adam(lr=1e-3, weight_decay=5e-4)`` (L2 added to the gradient).

Not included (kdpose's step does them): training metrics (decoded Acc@30, median error, gradient
norm) and the learning-rate schedule; both are negligible next to the network.

  /tmp/torchenv2/bin/python tools/peer/student_step.py --batch 64 --size 128 --steps 5 --warmup 2

prints one JSON line per round of ``--steps`` timed steps (after ``--warmup`` untimed ones):
step seconds (all, median, min, max) and images/s. With ``--wait`` it first prints a ``ready``
line after the warm-up and then waits for a line on stdin before each round, so a caller
(``tools/benchmark.py --peer``) can interleave it with its own rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tools.peer import efficientnet_lite, resnet  # noqa: E402 (after the path)
from tools.peer.batch import make_batch  # noqa: E402

BIN_SIZE = 15.0  # degrees
ANGLE_STARTS = (0.0, -90.0, -180.0)  # azimuth, elevation, in-plane (degrees)
NUM_BINS = (24, 12, 24)
OFFSET_SCALE = 5.0
LITE_MEAN, LITE_STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3  # (x - 127) / 128 on [0, 255]
LUMA = (0.299, 0.587, 0.114)
# kdpose's default AugmentConfig.
BOX_JITTER, FLIP_PROB, ROTATION_MAX_DEG = 0.1, 0.5, 15.0
COLOUR_STRENGTH, GRAYSCALE_PROB, BLUR_PROB, BLUR_SIGMA = 0.4, 0.1, 0.1, (0.1, 1.0)
BLUR_RADIUS = 2  # pixels: 2 x the largest sigma, as kdpose


RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}
ENCODERS = ("efficientnet_lite0", *RESNETS)


class Student(nn.Module):
  """NCHW images normalised for the encoder -> (feature [B, E], embedding [B, E], logits [B, 60],
  raw offsets [B, 60]); E = ``embedding_dim``."""

  def __init__(self, encoder: str = "efficientnet_lite0", mlp_widths: tuple[int, ...] = (256,),
               embedding_dim: int = 128, frozen_stages: int = 0, frozen_norm: bool = False,
               pool_grid: int = 1):
    super().__init__()
    if encoder not in ENCODERS:
      raise ValueError(f"tools/peer/student_step.py: encoder {encoder!r}; known: {ENCODERS}.")
    self.frozen_stages, self.frozen_norm, self.pool_grid = frozen_stages, frozen_norm, pool_grid
    self.is_lite = encoder == "efficientnet_lite0"
    if self.is_lite:
      variant = efficientnet_lite.VARIANTS[encoder]
      self.encoder = efficientnet_lite.EfficientNetLite(variant.width, variant.depth,
                                                        drop_connect_rate=0.0)
      self.encoder._dropout = nn.Identity()  # features() never uses these; drop their params
      self.encoder._fc = nn.Identity()
      num_features = efficientnet_lite.HEAD_FILTERS
      frozen = [self.encoder._conv_stem, self.encoder._bn0] if frozen_stages > 0 else []
      frozen += [block for stage, block in zip(self.encoder.block_stages, self.encoder._blocks,
                                               strict=True) if stage < frozen_stages]
      for module in frozen:
        module.requires_grad_(False)
    else:
      if frozen_stages or frozen_norm or pool_grid != 1:
        raise ValueError("tools/peer/student_step.py: the ResNet peer has no frozen stages, "
                         "frozen norm or pooling grid.")
      block, sizes = RESNETS[encoder]
      self.encoder = resnet.ResNet(block, sizes)
      self.encoder.fc = nn.Identity()
      num_features = self.encoder.num_features
    layers, width_in = [], num_features * pool_grid**2
    for width in mlp_widths:
      layers += [nn.Linear(width_in, width, bias=False),
                 nn.BatchNorm1d(width, eps=1e-5, momentum=0.1), nn.ReLU()]
      width_in = width
    self.mlp = nn.Sequential(*layers, nn.Linear(width_in, embedding_dim))
    self.projector = nn.Linear(embedding_dim, embedding_dim)
    self.logits = nn.Linear(embedding_dim, sum(NUM_BINS))
    self.offsets = nn.Linear(embedding_dim, sum(NUM_BINS))
    mean, std = (LITE_MEAN, LITE_STD) if self.is_lite else (resnet.IMAGENET_MEAN,
                                                            resnet.IMAGENET_STD)
    self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1))
    self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1))

  def train(self, mode: bool = True):
    """Train mode, but with ``frozen_norm`` every encoder BatchNorm on its running statistics
    (and with frozen stages, theirs), as kdpose's ``frozen_norm`` / ``frozen_stages``."""
    super().train(mode)
    if not self.is_lite:
      return self
    for name, module in self.encoder.named_modules():
      frozen_stage = self.frozen_stages > 0 and (
          name.startswith("_bn0") or name.startswith("_conv_stem") or (
              name.startswith("_blocks.") and
              self.encoder.block_stages[int(name.split(".")[1])] < self.frozen_stages))
      if isinstance(module, nn.BatchNorm2d) and (self.frozen_norm or frozen_stage):
        module.eval()
    return self

  def forward(self, crops: torch.Tensor):
    """Crops ``[B, 3, H, W]`` RGB in [0, 1]."""
    x = (crops - self.mean) / self.std
    trunk = (self.encoder.features(x, self.frozen_stages, self.pool_grid) if self.is_lite
             else self.encoder.features(x))
    feature = torch.tanh(self.mlp(trunk))
    return feature, self.projector(feature), self.logits(feature), self.offsets(feature)


def wrap_degrees(angle: torch.Tensor) -> torch.Tensor:
  return torch.remainder(angle + 180.0, 360.0) - 180.0


def encode_viewpoint(viewpoint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
  """Degrees ``[B, 3]`` -> bins ``[B, 3]`` (int64) and in-bin offsets ``[B, 3]`` in [-0.5, 0.5]."""
  canonical = torch.stack([torch.remainder(viewpoint[:, 0], 360.0),
                           viewpoint[:, 1].clamp(-90.0, 90.0), wrap_degrees(viewpoint[:, 2])], 1)
  in_range = canonical - torch.tensor(ANGLE_STARTS)
  bins = torch.floor(in_range / BIN_SIZE).clamp(min=0)
  bins = torch.minimum(bins, torch.tensor(NUM_BINS, dtype=bins.dtype) - 1)
  return bins.long(), in_range / BIN_SIZE - bins - 0.5


def pose_loss(logits: torch.Tensor, raw: torch.Tensor, viewpoint: torch.Tensor) -> torch.Tensor:
  """kdpose's ``losses.pose_loss`` on ``[B, 60]`` logits and raw offsets, viewpoint in degrees."""
  bins, targets = encode_viewpoint(viewpoint)
  loss = 0.0
  for k, (lg, rw) in enumerate(zip(logits.split(NUM_BINS, 1), raw.split(NUM_BINS, 1),
                                   strict=True)):
    gt = bins[:, k:k + 1]
    predicted = torch.tanh(rw.gather(1, gt)[:, 0]) / 2.0
    loss = loss + F.cross_entropy(lg, gt[:, 0], reduction="none") + F.smooth_l1_loss(
        OFFSET_SCALE * predicted, OFFSET_SCALE * targets[:, k], reduction="none", beta=1.0)
  return loss.mean()


def _uniform(low: float, high: float, n: int, gen: torch.Generator) -> torch.Tensor:
  return torch.rand(n, generator=gen) * (high - low) + low


def _warp(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, angle: torch.Tensor,
          out: int) -> tuple[torch.Tensor, torch.Tensor]:
  """uint8 NHWC ``[B, S, S, 3]`` -> float NCHW crops ``[B, 3, out, out]`` in [0, 1] and the mask
  ``[B, 1, out, out]`` of pixels inside the box (the outside is zero)."""
  batch, size = images.shape[0], images.shape[1]
  x1, y1, x2, y2 = boxes.unbind(1)
  step = torch.maximum(x2 - x1, y2 - y1).clamp(min=1.0) / out  # source px per output px
  rad = torch.deg2rad(angle)
  cos, sin = step * torch.cos(rad), step * torch.sin(rad)
  mirror = 1.0 - 2.0 * flip.float()
  # Output normalised coords (align_corners=False) -> source normalised coords.
  half = out / size
  theta = torch.stack([
      torch.stack([half * mirror * cos, -half * mirror * sin, (x1 + x2) / size - 1.0], 1),
      torch.stack([half * sin, half * cos, (y1 + y2) / size - 1.0], 1)], 1)
  grid = F.affine_grid(theta, [batch, 3, out, out], align_corners=False)
  source = images.permute(0, 3, 1, 2).float() / 255.0
  crops = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
  x, y = (grid[..., 0] + 1.0) * size / 2, (grid[..., 1] + 1.0) * size / 2
  view = lambda v: v[:, None, None]
  mask = ((x >= view(x1)) & (x <= view(x2)) & (y >= view(y1)) & (y <= view(y2)))[:, None]
  return crops * mask, mask.float()


def _colour(crops: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
  """Per-sample brightness, contrast, saturation multiplications, then grayscale."""
  batch = crops.shape[0]
  factors = [_uniform(1.0 - COLOUR_STRENGTH, 1.0 + COLOUR_STRENGTH, batch, gen)[:, None, None, None]
             for _ in range(3)]
  gray = (torch.rand(batch, generator=gen) < GRAYSCALE_PROB)[:, None, None, None]
  luma_weights = torch.tensor(LUMA).view(1, 3, 1, 1)
  luma = lambda x: (x * luma_weights).sum(1, keepdim=True)
  x = crops * factors[0]
  mean = (luma(x) * mask).sum((1, 2, 3), keepdim=True) / mask.sum((1, 2, 3), keepdim=True).clamp(
      min=1.0)
  x = factors[1] * x + (1.0 - factors[1]) * mean
  x = factors[2] * x + (1.0 - factors[2]) * luma(x)
  x = torch.where(gray, luma(x).expand_as(x), x)
  return x.clamp(0.0, 1.0) * mask


def _blur(crops: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
  """Gaussian blur (separable, per-sample sigma) of a random subset of the batch."""
  batch, channels, height, width = crops.shape
  chosen = torch.nonzero(torch.rand(batch, generator=gen) < BLUR_PROB)[:, 0]
  sigma = _uniform(*BLUR_SIGMA, batch, gen)[chosen]
  if chosen.numel() == 0:
    return crops
  taps = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=torch.float32)
  weights = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
  weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(channels, 0)
  x = crops[chosen].reshape(1, -1, height, width)
  x = F.conv2d(x, weights[:, None, :, None], padding=(BLUR_RADIUS, 0), groups=x.shape[1])
  x = F.conv2d(x, weights[:, None, None, :], padding=(0, BLUR_RADIUS), groups=x.shape[1])
  crops = crops.clone()
  crops[chosen] = x.reshape(-1, channels, height, width)
  return crops


def augment(images: torch.Tensor, boxes: torch.Tensor, viewpoint: torch.Tensor, out: int,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
  """uint8 ``[B, S, S, 3]``, boxes ``[B, 4]`` (x1, y1, x2, y2 pixels), viewpoints ``[B, 3]``
  (degrees) -> crops ``[B, 3, out, out]`` in [0, 1] and their viewpoints (degrees)."""
  batch = images.shape[0]
  size = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)
  boxes = boxes + (torch.rand(batch, 4, generator=gen) * 2.0 - 1.0) * BOX_JITTER * size
  flip = torch.rand(batch, generator=gen) < FLIP_PROB
  angle = _uniform(-ROTATION_MAX_DEG, ROTATION_MAX_DEG, batch, gen)
  crops, mask = _warp(images, boxes, flip, angle, out)
  crops = _blur(_colour(crops, mask, gen), gen)
  flipped = torch.stack([torch.remainder(360.0 - viewpoint[:, 0], 360.0), viewpoint[:, 1],
                         wrap_degrees(-viewpoint[:, 2])], 1)
  viewpoint = torch.where(flip[:, None], flipped, viewpoint)
  inplane = wrap_degrees(viewpoint[:, 2] + angle)
  return crops, torch.stack([viewpoint[:, 0], viewpoint[:, 1], inplane], 1)


def train_step(model: Student, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               image_size: int, gen: torch.Generator) -> float:
  """One augmented train step on a host batch; returns the loss."""
  crops, viewpoint = augment(batch["image"], batch["box"], batch["viewpoint"], image_size, gen)
  _, _, logits, raw = model(crops)
  loss = pose_loss(logits, raw, viewpoint)
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  optimizer.step()
  return loss.item()


def _round(step, num_steps: int, batch_size: int, index: int) -> dict:
  times, loss = [], math.nan
  for _ in range(num_steps):
    start = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  if not math.isfinite(loss):
    raise FloatingPointError(f"tools/peer/student_step.py: loss {loss} in round {index}.")
  return {"side": "torch", "round": index, "step_s": times, "median_s": median,
          "min_s": min(times), "max_s": max(times), "images_per_s": batch_size / median,
          "loss": loss}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--size", type=int, default=128, help="network input side, pixels")
  parser.add_argument("--source_size", type=int, default=160, help="uint8 source side, pixels")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--encoder", default="efficientnet_lite0", choices=ENCODERS)
  parser.add_argument("--mlp_widths", default="256", help="comma-separated hidden widths")
  parser.add_argument("--embedding_dim", type=int, default=128)
  parser.add_argument("--frozen_stages", type=int, default=0,
                      help="encoder stages 0 .. N-1 frozen (the stem is 0), as kdpose's")
  parser.add_argument("--frozen_norm", action="store_true",
                      help="every encoder BatchNorm on its running statistics")
  parser.add_argument("--pool_grid", type=int, default=1, help="last map pooled over G x G")
  parser.add_argument("--wait", action="store_true",
                      help="print a ready line, then wait for a stdin line before each round")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(1)
  model = Student(args.encoder, tuple(int(w) for w in args.mlp_widths.split(",")),
                  args.embedding_dim, frozen_stages=args.frozen_stages,
                  frozen_norm=args.frozen_norm, pool_grid=args.pool_grid).train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.Adam(trainable, lr=1e-3, weight_decay=5e-4)
  batch = {k: torch.from_numpy(v) for k, v in make_batch(args.batch, args.source_size).items()}
  step = lambda: train_step(model, optimizer, batch, args.size, gen)
  start = time.perf_counter()
  for _ in range(args.warmup):
    step()
  if args.wait:
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in model.parameters()),
                      "trainable_params": sum(p.numel() for p in trainable),
                      "warmup_s": time.perf_counter() - start}), flush=True)
  for index in range(args.rounds):
    if args.wait and not sys.stdin.readline():
      return  # the caller closed stdin: stop early
    print(json.dumps(_round(step, args.steps, args.batch, index)), flush=True)


if __name__ == "__main__":
  main()
