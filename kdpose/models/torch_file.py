"""PyTorch checkpoints (``torch.save`` output) read into numpy, without torch.

Pretrained weights ship as ``.pth`` files, but neither accelerator images nor users' machines
should need torch (a multi-GB install) to read them, so this module reads the two formats
``torch.save`` writes with the stdlib and numpy alone:

  zip     torch >= 1.6's default: a zip archive with one top folder ``<name>/`` holding
          ``data.pkl`` (the object), ``data/<key>`` (each storage's raw bytes) and optionally
          ``byteorder`` ("little" or "big");
  legacy  torch < 1.6 (what many weight packages still ship): consecutive pickles (the magic
          number, the protocol version 1001, a sys-info dict, the object, the list of storage
          keys), then each storage as an int64 element count and its raw bytes.

In both, a tensor is a ``torch._utils._rebuild_tensor_v2`` (or ``_v3``, ``_rebuild_tensor``)
call on a storage named by a persistent id. Unpickling records those calls as placeholders; once
the storages' bytes are at hand (the legacy format writes them after the object), each becomes
a contiguous numpy copy of the view it describes (offset, shape and strides in elements).
Parameters become arrays too; bfloat16 becomes float32. The unpickler resolves only the globals
a checkpoint of tensors needs and refuses every other one, so a file cannot run code.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_NOT_TORCH = "not a torch checkpoint (neither a zip archive nor a legacy torch pickle)"
# torch dtype name -> numpy type code of its bytes (bfloat16's bits are widened to float32).
_DTYPES = {
  "float64": "f8",
  "float32": "f4",
  "float16": "f2",
  "bfloat16": "u2",
  "int64": "i8",
  "int32": "i4",
  "int16": "i2",
  "int8": "i1",
  "uint8": "u1",
  "bool": "?",
  "uint16": "u2",
  "uint32": "u4",
  "uint64": "u8",
  "complex64": "c8",
  "complex128": "c16",
}
# torch's storage classes -> the dtype of their elements (UntypedStorage holds bytes).
_STORAGES = {
  "DoubleStorage": "float64",
  "FloatStorage": "float32",
  "HalfStorage": "float16",
  "BFloat16Storage": "bfloat16",
  "LongStorage": "int64",
  "IntStorage": "int32",
  "ShortStorage": "int16",
  "CharStorage": "int8",
  "ByteStorage": "uint8",
  "BoolStorage": "bool",
  "ComplexFloatStorage": "complex64",
  "ComplexDoubleStorage": "complex128",
  "UntypedStorage": "uint8",
}
_REBUILDERS = (
  "_rebuild_tensor",
  "_rebuild_tensor_v2",
  "_rebuild_tensor_v3",
  "_rebuild_parameter",
  "_rebuild_parameter_with_state",
)


@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: str  # A key of _DTYPES.


@dataclasses.dataclass(frozen=True)
class _DType:
  name: str  # A key of _DTYPES.


@dataclasses.dataclass(frozen=True)
class _StorageRef:
  """Elements ``[offset, offset + numel)`` of the storage ``key`` (a legacy view or all of it)."""

  key: str
  dtype: str
  offset: int
  numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  """A tensor to build once the storage bytes are read: ``dtype`` elements of ``storage``."""

  storage: _StorageRef
  dtype: str
  offset: int  # In elements of dtype, from the start of the storage reference.
  size: tuple[int, ...]
  stride: tuple[int, ...]  # In elements.


class _Unpickler(pickle.Unpickler):
  """Resolves only checkpoint globals; records storages and tensors as placeholders."""

  def __init__(self, file: BinaryIO, path: str):
    super().__init__(file, encoding="utf-8")  # As torch.load: Python 2 strings become str.
    self.path = path
    self.storages: dict[str, _StorageRef] = {}  # Key -> the whole storage, in pickle order.

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in _REBUILDERS:
      return getattr(self, name)
    if module in ("torch", "torch.storage") and name in _STORAGES:
      return _StorageType(_STORAGES[name])
    if module == "torch" and name in _DTYPES:
      return _DType(name)
    if (module, name) == ("torch", "Size"):
      return tuple
    raise ValueError(
      f"{self.path}: the torch-file reader refuses to load {module}.{name} (it "
      "reads tensors of numpy dtypes, parameters, OrderedDicts and builtin "
      "containers only)."
    )

  def persistent_load(self, pid: Any) -> _StorageRef:
    if not (
      isinstance(pid, tuple)
      and len(pid) in (5, 6)
      and pid[0] in ("storage", b"storage")
      and isinstance(pid[1], _StorageType)
    ):
      raise ValueError(
        f"{self.path}: unsupported persistent id {str(pid)[:80]} (only tensor "
        "storages are read: a whole pickled nn.Module is not)."
      )
    _, kind, key, _location, numel, *view = pid
    root = self.storages.setdefault(str(key), _StorageRef(str(key), kind.dtype, 0, numel))
    if view and view[0] is not None:  # Legacy (torch < 1.0) storage views: elements of a root.
      _view_key, offset, view_numel = view[0]
      return _StorageRef(root.key, kind.dtype, offset, view_numel)
    return root

  def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, *_grad_hooks_metadata):
    return self._rebuild_tensor_v3(storage, storage_offset, size, stride, None, None, None)

  _rebuild_tensor = _rebuild_tensor_v2  # torch < 0.4: (storage, storage_offset, size, stride).

  def _rebuild_tensor_v3(
    self, storage, storage_offset, size, stride, _requires_grad, _hooks, dtype, *_metadata
  ):
    """v3 gives the dtype apart from an untyped storage (dtypes with no storage class)."""
    if not isinstance(storage, _StorageRef) or not (dtype is None or isinstance(dtype, _DType)):
      raise ValueError(
        f"{self.path}: a tensor rebuild call has no storage or dtype "
        f"({type(storage).__name__}, {type(dtype).__name__})."
      )
    return _TensorRef(
      storage,
      storage.dtype if dtype is None else dtype.name,
      int(storage_offset),
      tuple(size),
      tuple(stride),
    )

  def _rebuild_parameter(self, data, _requires_grad, _hooks, *_state):
    return data

  _rebuild_parameter_with_state = _rebuild_parameter


def _element_size(dtype: str) -> int:
  return np.dtype(_DTYPES[dtype]).itemsize


def _check_length(path: str, key: str, data: bytes, ref: _StorageRef) -> bytes:
  needed = ref.numel * _element_size(ref.dtype)
  if len(data) < needed:
    raise ValueError(f"{path}: truncated: storage {key} has {len(data)} bytes of {needed}.")
  return data


def _build(path: str, ref: _TensorRef, data: bytes, big_endian: bool) -> np.ndarray:
  """The tensor ``ref`` from its storage's bytes: a C-contiguous, native-order copy."""
  start = ref.storage.offset * _element_size(ref.storage.dtype)
  window = memoryview(data)[start : start + ref.storage.numel * _element_size(ref.storage.dtype)]
  dtype = np.dtype(_DTYPES[ref.dtype]).newbyteorder(">" if big_endian else "<")
  flat = np.frombuffer(window, dtype, count=len(window) // dtype.itemsize)
  if len(ref.size) != len(ref.stride) or min(ref.size + ref.stride + (ref.offset,), default=0) < 0:
    raise ValueError(
      f"{path}: a tensor of storage {ref.storage.key} has an invalid view "
      f"(offset {ref.offset}, size {ref.size}, stride {ref.stride})."
    )
  end = ref.offset + 1 + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
  if 0 not in ref.size and end > len(flat):
    raise ValueError(
      f"{path}: a tensor of shape {ref.size} reaches element {end} of storage "
      f"{ref.storage.key}, which has {len(flat)} {ref.dtype} elements."
    )
  view = np.lib.stride_tricks.as_strided(
    flat[min(ref.offset, len(flat)) :], ref.size, [s * dtype.itemsize for s in ref.stride]
  )
  array = view.astype(dtype.newbyteorder("="), order="C")
  if ref.dtype == "bfloat16":  # bfloat16 is the high half of a float32.
    return (array.astype(np.uint32) << 16).view(np.float32)
  return array


def _materialise(obj: Any, build, seen: set[int]) -> Any:
  """``obj`` with every _TensorRef built; dicts and lists are filled in place (keeping types)."""
  if isinstance(obj, _TensorRef):
    return build(obj)
  if isinstance(obj, dict | list) and id(obj) not in seen:
    seen.add(id(obj))
    for key, value in obj.items() if isinstance(obj, dict) else enumerate(obj):
      obj[key] = _materialise(value, build, seen)
  elif isinstance(obj, tuple):
    return tuple(_materialise(value, build, seen) for value in obj)
  return obj


def _load_zip(path: str) -> Any:
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ValueError(f"{path}: a truncated or corrupt zip archive ({e}).") from e
  with archive:
    pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise ValueError(
        f"{path}: a zip archive but not a torch checkpoint: it needs one "
        f"<name>/data.pkl, it has {pickles or 'none'}."
      )
    folder = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    byteorder = (
      archive.read(f"{folder}byteorder").decode(errors="replace").strip()
      if f"{folder}byteorder" in names
      else "little"
    )
    if byteorder not in ("little", "big"):
      raise ValueError(f"{path}: {folder}byteorder says {byteorder[:20]!r}, not little or big.")
    with archive.open(pickles[0]) as file:
      obj, unpickler = _load_pickle(file, path, pickles[0])
    data = {}
    for key, ref in unpickler.storages.items():
      if f"{folder}data/{key}" not in names:
        raise ValueError(f"{path}: truncated: storage {key} has no record {folder}data/{key}.")
      try:
        data[key] = _check_length(path, key, archive.read(f"{folder}data/{key}"), ref)
      except (zipfile.BadZipFile, EOFError) as e:  # A CRC error, a cut-off compressed record.
        raise ValueError(f"{path}: corrupt zip record {folder}data/{key} ({e}).") from e
  return _materialise(
    obj, lambda t: _build(path, t, data[t.storage.key], byteorder == "big"), set()
  )


def _load_pickle(file: BinaryIO, path: str, what: str) -> tuple[Any, _Unpickler]:
  """The next pickle in ``file`` and its unpickler (which holds the storages it named)."""
  unpickler = _Unpickler(file, path)
  try:
    return unpickler.load(), unpickler
  except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: truncated or corrupt checkpoint: {what} ({e}).") from e


def _legacy_header(file: BinaryIO, path: str) -> bool:
  """Checks the magic number and protocol; whether the storages are big-endian."""
  try:
    magic = _Unpickler(file, path).load()
  except Exception as e:  # Arbitrary bytes fail the pickle machine in many ways.
    raise ValueError(f"{path}: {_NOT_TORCH}: {e}") from e
  if magic != _LEGACY_MAGIC:
    raise ValueError(f"{path}: {_NOT_TORCH}.")
  protocol, _ = _load_pickle(file, path, "the legacy protocol version")
  if protocol != _LEGACY_PROTOCOL:
    raise ValueError(f"{path}: legacy torch protocol {protocol!r} (only {_LEGACY_PROTOCOL}).")
  sys_info, _ = _load_pickle(file, path, "the sys-info dict")
  return not (isinstance(sys_info, dict) and sys_info.get("little_endian", True))


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as file:
    big_endian = _legacy_header(file, path)
    obj, unpickler = _load_pickle(file, path, "the object")
    keys, _ = _load_pickle(file, path, "the storage keys")
    size = os.fstat(file.fileno()).st_size
    data = {}
    for key in keys:
      if key not in unpickler.storages:
        raise ValueError(f"{path}: storage key {key!r} is not one the object uses.")
      ref = unpickler.storages[key]
      header = file.read(8)
      count = struct.unpack(">q" if big_endian else "<q", header)[0] if len(header) == 8 else 0
      nbytes = count * _element_size(ref.dtype)
      if len(header) < 8 or not 0 <= nbytes <= size - file.tell():
        raise ValueError(
          f"{path}: truncated: storage {key} has {size - file.tell()} bytes of "
          f"{ref.numel * _element_size(ref.dtype)}."
        )
      data[key] = _check_length(path, key, file.read(nbytes), ref)
  missing = set(unpickler.storages) - set(data)
  if missing:
    raise ValueError(f"{path}: truncated: storages {sorted(missing)[:4]} are not in the file.")
  return _materialise(obj, lambda t: _build(path, t, data[t.storage.key], big_endian), set())


def load(path: str) -> Any:
  """The object ``torch.save`` wrote to ``path`` (zip or legacy format), every tensor and
  parameter as a C-contiguous numpy array of its dtype and shape (bfloat16 as float32)."""
  with open(path, "rb") as file:
    is_zip = file.read(4) == b"PK\x03\x04"
  return _load_zip(path) if is_zip else _load_legacy(path)


def load_state_dict(path: str, prefix: str = "") -> dict[str, np.ndarray]:
  """The flat ``{name: array}`` of the checkpoint at ``path``: its ``state_dict`` (or ``model``)
  entry if it has one, else the object itself; only the array entries whose names start with
  ``prefix``, with it stripped (e.g. MoCo's ``module.encoder_q.``)."""
  obj = load(path)
  if isinstance(obj, dict):
    for name in ("state_dict", "model"):
      inner = obj.get(name)
      if isinstance(inner, dict) and any(isinstance(v, np.ndarray) for v in inner.values()):
        obj = inner
        break
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors.")
  result = {
    key[len(prefix) :]: value
    for key, value in obj.items()
    if isinstance(key, str) and key.startswith(prefix) and isinstance(value, np.ndarray)
  }
  if not result:
    raise ValueError(
      f"{path}: no tensors under the prefix {prefix!r}; its first keys are {list(obj)[:5]}."
    )
  return result
