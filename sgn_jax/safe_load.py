"""Reading user-supplied files as data only: nothing in a file ever runs.

A pickle can name any Python callable (`os.system`, `builtins.exec`, a class
whose module source it carries) and have the loader call it. Every loader of
a file a user gives goes through one of these:

  * `.npz` archives: `open_npz` / `load_npz` (`allow_pickle=False`; a
    pickled file or an object array is refused with `UnsafeFileError`);
  * PyTorch state dicts (`.pt`/`.pth`): `torch_load_weights`
    (`torch.load(weights_only=True)`: tensors, plain containers and numbers);
    a file that needs more is refused with `UnsafeFileError` saying how to
    turn it into a plain state dict;
  * other pickles (an EDM network snapshot): `RestrictedUnpickler`, which
    resolves only the globals it is given (functions that build data:
    tensors, NumPy arrays, containers) and turns the classes of the prefixes
    it is given into inert `Stub`s that only hold their pickled state; every
    other global is refused before anything is called;
  * TorchScript archives: `load_torchscript_state_dict` reads the tensors of
    `<root>/data.pkl` with NumPy from the archive's storage records, never
    `torch.jit.load`; the archive's `code/` is only scanned as text for the
    `__parameters__` / `__buffers__` lists of each class, never run.
"""

from __future__ import annotations

import ast
import functools
import importlib
import io
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from sgn_jax import errors


class UnsafeFileError(errors.UserError, pickle.UnpicklingError, ValueError):
  """A user file refused because reading it would run code or build objects.

  Also a `pickle.UnpicklingError` and a `ValueError`, so either `except` works.
  """


# ----------------------------------------------------------------------------- npz


NPZ_FIX = "write it again (np.savez) or copy it again from where it came from"


class NpzFileError(errors.UserError, ValueError):
  """An npz file that cannot be used (empty, truncated, damaged, complex values)."""


def _array_dtype(member) -> np.dtype | None:
  """The dtype in the header of an `.npy` member (None when it has no npy header)."""
  fmt = np.lib.format
  try:
    version = fmt.read_magic(member)
    if version == (1, 0):
      _, _, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
      _, _, dtype = fmt.read_array_header_2_0(member)
    else:
      _, _, dtype = fmt._read_array_header(member, version)  # pylint: disable=protected-access
  except (ValueError, TypeError, EOFError, SyntaxError):
    return None
  return dtype


def check_npz(path, *, what: str | None = None, fix: str = NPZ_FIX) -> None:
  """Raises `NpzFileError` when the npz file `path` cannot be used.

  `what` names the file in the messages (e.g. "noise.labels_file='x.npz'"; default:
  the path); `fix` says what to do about a bad file.
  """
  path = os.fspath(path)
  label = what or path
  if not os.path.isfile(path):
    raise NpzFileError(f"{label}: no such file")
  if os.path.getsize(path) == 0:
    raise NpzFileError(f"{label} is empty (0 bytes), not an npz file: {fix}")
  if not zipfile.is_zipfile(path):
    raise NpzFileError(
        f"{label} is not a readable npz file: it has no zip directory at its end, so it "
        f"was cut off (an interrupted copy or write) or is another format: {fix}")
  name = None
  try:
    with zipfile.ZipFile(path) as archive:
      bad = archive.testzip()  # reads every member, checks its CRC
      if bad is not None:
        name = bad
        raise zipfile.BadZipFile(f"member {bad!r} does not match its CRC")
      for name in archive.namelist():
        if not name.endswith(".npy"):
          continue
        with archive.open(name) as member:
          dtype = _array_dtype(member)
        if dtype is not None and (dtype.kind == "c" or (
            dtype.fields and any(f[0].kind == "c" for f in dtype.fields.values()))):
          raise NpzFileError(
              f"{label} holds complex values in {name[:-4]!r} (dtype {dtype}); the arrays "
              f"must be real: {fix}")
  except NpzFileError:
    raise
  except (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError) as e:
    where = f" ({name[:-4] if name and name.endswith('.npy') else name!r})" if name else ""
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise NpzFileError(f"{label} is damaged{where}: {type(e).__name__}: {reason}; {fix}") from None


class NpzArrays(Mapping):
  """The arrays of an open `.npz` (NumPy, `allow_pickle=False`), by name.

  Indexing an object array raises `UnsafeFileError` naming the file and the
  key; `in` and `files` never read an array. Close it (or use `with`).
  """

  def __init__(self, npz: np.lib.npyio.NpzFile, label: str):
    self._npz = npz
    self._label = label

  @property
  def files(self) -> list[str]:
    return list(self._npz.files)

  def __getitem__(self, key: str) -> np.ndarray:
    try:
      return self._npz[key]
    except ValueError as error:
      if "allow_pickle" not in str(error):
        raise
      raise UnsafeFileError(
          f"{self._label}: the array {key!r} holds Python objects (a pickle), which would "
          "run code to load; refusing it. Save plain numeric arrays instead, e.g. "
          f"np.savez(path, {key}=np.asarray(values, dtype=np.float32)).") from error

  def __contains__(self, key: object) -> bool:
    return key in self._npz.files

  def __iter__(self) -> Iterator[str]:
    return iter(self._npz.files)

  def __len__(self) -> int:
    return len(self._npz.files)

  def close(self) -> None:
    self._npz.close()

  def __enter__(self) -> NpzArrays:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _starts_like_zip(path) -> bool:
  with open(path, "rb") as f:
    return f.read(4) == b"PK\x03\x04"


def open_npz(path: str | os.PathLike[str], what: str | None = None, *,
             fix: str = NPZ_FIX) -> NpzArrays:
  """Opens an `.npz` archive of plain arrays, never unpickling anything, once
  `check_npz` has found it whole.

  Args:
    path: the file.
    what: how errors name the file (default: the path).
    fix: what the messages about a bad file tell the user to do.

  Raises:
    NpzFileError: empty, cut off, damaged or complex-valued (`check_npz`).
    UnsafeFileError: the file is a pickle (or neither .npz nor .npy).
    ValueError: a single `.npy` array instead of an archive.
  """
  label = what or os.fspath(path)
  # Missing, empty or a zip (whole or cut off): checked; anything else np.load names
  # (a pickle, an .npy, ...).
  if not os.path.isfile(path) or os.path.getsize(path) == 0 or _starts_like_zip(path):
    check_npz(path, what=what, fix=fix)
  try:
    loaded = np.load(path, allow_pickle=False)
  except ValueError as error:  # NumPy's "Cannot load file containing pickled data ..."
    raise UnsafeFileError(f"{label}: not an .npz archive of plain arrays; refusing to "
                          f"unpickle it ({error}).") from error
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise ValueError(f"{label}: a single .npy array; expected an .npz archive (np.savez).")
  return NpzArrays(loaded, label)


def load_npz(path: str | os.PathLike[str], what: str | None = None, *,
             fix: str = NPZ_FIX) -> dict[str, np.ndarray]:
  """All arrays of an `.npz` archive (see `open_npz`), read into memory."""
  with open_npz(path, what, fix=fix) as arrays:
    return {key: arrays[key] for key in arrays.files}


# ----------------------------------------------------------------------------- torch state dicts

STATE_DICT_ADVICE = (
    "Only for a file you trust, convert it once where it was made (with the code that "
    "wrote it importable): load the object there and save its weights alone, "
    "`torch.save(obj.state_dict(), 'weights.pt')` (tensors in plain dicts), then pass "
    "that file.")


def _weights_only_detail(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  for line in lines:
    if "GLOBAL" in line or "Unsupported" in line or "WeightsUnpickler error" in line:
      return line
  return lines[-1] if lines else type(error).__name__


def torch_load_weights(path: str | os.PathLike[str], advice: str = STATE_DICT_ADVICE) -> Any:
  """`torch.load(path, map_location="cpu", weights_only=True)`, refusing anything more.

  Args:
    path: a `.pt`/`.pth` file written by `torch.save`.
    advice: appended to the refusal: how to get a plain state dict.

  Returns:
    What the file holds: tensors in dicts/lists/tuples, numbers, strings.

  Raises:
    ImportError: torch is not installed.
    UnsafeFileError: the file holds other objects (a pickled module, an
      arbitrary callable); the message names the path and the global.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(f"Reading {os.fspath(path)} needs torch: pip install torch (the CPU "
                      "build is enough).") from error
  try:
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as error:
    if "weights only" not in str(error).lower() and "weights_only" not in str(error):
      raise
    raise UnsafeFileError(
        f"{os.fspath(path)}: refused: it holds more than tensors and plain containers, and "
        f"loading it would run code named in the file ({_weights_only_detail(error)}). "
        f"{advice}") from error


# ----------------------------------------------------------------------------- restricted pickles


class Stub:
  """An inert stand-in for an instance of a pickled class.

  `pickled_name` (class attribute) is the class's `module.name` in the pickle;
  `state` what the pickle passed to `__setstate__` (for a torch module, its
  `__dict__`: `_parameters`, `_buffers`, `_modules`, ...); `args` what it
  passed to the constructor. Nothing else: no methods of the real class exist.
  """

  __slots__ = ("state", "args")
  pickled_name = "?"

  def __new__(cls, *args, **kwargs):
    del kwargs
    self = object.__new__(cls)
    self.state = None
    self.args = args
    return self

  def __init__(self, *args, **kwargs):  # pylint: disable=super-init-not-called
    del args, kwargs

  def __setstate__(self, state: Any) -> None:
    self.state = state

  def __repr__(self) -> str:
    return f"<stub of {self.pickled_name}>"


@functools.lru_cache(maxsize=None)
def stub_class(pickled_name: str) -> type[Stub]:
  """The `Stub` subclass standing for the pickled class `pickled_name`."""
  return type(pickled_name.rsplit(".", 1)[-1], (Stub,), {"__slots__": (), "pickled_name": pickled_name})


def make_stub(pickled_name: str, state: Any) -> Stub:
  stub = stub_class(pickled_name)()
  stub.state = state
  return stub


def _reconstructor(cls, base, state):
  """Inert `copyreg._reconstructor`: an empty stub of `cls` (a stub class only)."""
  del base, state
  if not (isinstance(cls, type) and issubclass(cls, Stub)):
    raise pickle.UnpicklingError(f"copyreg._reconstructor called on {cls!r}, not a stub class.")
  return cls.__new__(cls)


def latin1_encode(text, encoding="utf-8"):
  """`_codecs.encode` as protocol-2 pickles use it for bytes (latin-1 only)."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} on {type(text).__name__}.")
  return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
  """The NumPy functions that rebuild arrays, scalars and dtypes from a pickle."""
  try:
    multiarray = importlib.import_module("numpy._core.multiarray")
    numeric = importlib.import_module("numpy._core.numeric")
  except ImportError:  # NumPy 1
    multiarray = importlib.import_module("numpy.core.multiarray")
    numeric = importlib.import_module("numpy.core.numeric")
  table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
  for module in ("numpy.core", "numpy._core"):
    table[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct  # pylint: disable=protected-access
    table[(f"{module}.multiarray", "scalar")] = multiarray.scalar
    table[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer  # pylint: disable=protected-access
  return table


def data_globals() -> dict[tuple[str, str], Any]:
  """Globals that only build plain data: containers, NumPy arrays, inert stubs."""
  return {
      ("collections", "OrderedDict"): dict,
      ("builtins", "set"): set,
      ("builtins", "frozenset"): frozenset,
      ("builtins", "complex"): complex,
      ("builtins", "object"): object,
      ("copyreg", "_reconstructor"): _reconstructor,
      ("_codecs", "encode"): latin1_encode,
      **_numpy_globals(),
  }


_OLD_MODULE_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only the globals it is given.

  Args:
    file: a binary file.
    label: how errors name the file.
    allowed: (module, name) -> the object to use for that global (a function
      that builds data, or an inert replacement of the named one).
    stub_modules: module prefixes whose classes become `Stub` subclasses
      (e.g. 'torch.nn.modules' or '__torch__').
    persistent_load: called on each persistent id (default: refused).

  Any other global raises `UnsafeFileError` (also a pickle.UnpicklingError)
  naming it, before anything is called.
  """

  def __init__(self, file, label: str, allowed: Mapping[tuple[str, str], Any],
               stub_modules: Sequence[str] = (),
               persistent_load: Callable[[Any], Any] | None = None):
    super().__init__(file)
    self._label = label
    self._allowed = dict(allowed)
    self._stub_modules = tuple(stub_modules)
    self._persistent = persistent_load

  def find_class(self, module, name):
    module = _OLD_MODULE_NAMES.get(module, module)
    if (module, name) in self._allowed:
      return self._allowed[(module, name)]
    if (_DOTTED_NAME.fullmatch(module) and name.isidentifier()
        and any(module == prefix or module.startswith(prefix + ".") for prefix in self._stub_modules)):
      return stub_class(f"{module}.{name}")
    raise UnsafeFileError(
        f"{self._label}: refusing the global {module}.{name}: loading it would run code "
        "named in the file; only tensors, arrays, plain containers and inert stand-ins for "
        "the expected classes are read.")

  def persistent_load(self, pid):
    if self._persistent is None:
      raise UnsafeFileError(f"{self._label}: unexpected persistent id {pid!r}.")
    return self._persistent(pid)


def _check_ints(label: str, *values) -> None:
  for value in values:
    items = value if isinstance(value, (tuple, list)) else (value,)
    if not all(isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in items):
      raise pickle.UnpicklingError(f"{label}: bad tensor geometry {value!r}.")


# ----------------------------------------------------------------------------- torch plain pickles


def torch_tensor_globals(label: str) -> dict[tuple[str, str], Any]:
  """Globals rebuilding torch tensors in a plain (`pickle.dump`) pickle, as data.

  A tensor pickles as `torch._utils._rebuild_tensor_v2(storage, offset, size,
  stride, ...)` (a parameter wraps that in `_rebuild_parameter`), its storage
  as `torch.storage._load_from_bytes(b)` with `b` a `torch.save` of the
  storage alone: read here with `torch.load(weights_only=True)`. Backward
  hooks and the parameter wrapper are dropped (plain tensors come back).
  """
  import torch  # pylint: disable=g-import-not-at-top

  def load_storage(data):
    if not isinstance(data, (bytes, bytearray)):
      raise pickle.UnpicklingError(f"{label}: storage bytes expected, got {type(data).__name__}.")
    storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
      raise pickle.UnpicklingError(f"{label}: a storage record holds a {type(storage).__name__}.")
    return storage

  def rebuild_tensor(storage, storage_offset, size, stride, *unused):
    del unused  # requires_grad, backward hooks, metadata
    if not isinstance(storage, torch.storage.TypedStorage):
      raise pickle.UnpicklingError(f"{label}: a tensor on a {type(storage).__name__}, not a storage.")
    _check_ints(label, storage_offset, size, stride)
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))  # pylint: disable=protected-access

  def rebuild_parameter(data, *unused):
    del unused  # requires_grad, backward hooks, state
    if not isinstance(data, torch.Tensor):
      raise pickle.UnpicklingError(f"{label}: a parameter of a {type(data).__name__}.")
    return data

  return {
      ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
      ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
      ("torch.storage", "_load_from_bytes"): load_storage,
      ("torch", "Size"): tuple,
  }


def module_state_dict(root: Any, label: str, *, is_module: Callable[[Stub], bool] | None = None
                      ) -> dict[str, Any]:
  """The state dict of a stub tree of torch modules, as `module.state_dict()` names it.

  Walks each module stub's `_parameters`, then its `_buffers` (without the
  names in `_non_persistent_buffers_set`), then its `_modules`; None entries
  are skipped, like torch does.

  Raises:
    ValueError: a module stub whose state is not a dict, a cycle.
  """
  out: dict[str, Any] = {}
  on_path: set[int] = set()

  def walk(stub: Stub, prefix: str) -> None:
    if id(stub) in on_path:
      raise ValueError(f"{label}: the module tree has a cycle at {prefix or 'the root'}.")
    state = stub.state
    if not isinstance(state, dict):
      raise ValueError(f"{label}: {stub.pickled_name} at {prefix or 'the root'} has no module "
                       "state (a dict).")
    on_path.add(id(stub))
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers", "_modules"):
      if not isinstance(state.get(group) or {}, dict):
        raise ValueError(f"{label}: {group} of {prefix or 'the root'} is not a dict.")
    if not isinstance(skip, (set, frozenset, list, tuple)):
      raise ValueError(f"{label}: _non_persistent_buffers_set of {prefix or 'the root'} is not a set.")
    for group in ("_parameters", "_buffers"):
      for name, value in (state.get(group) or {}).items():
        if value is not None and not (group == "_buffers" and name in skip):
          out[f"{prefix}{name}"] = value
    for name, child in (state.get("_modules") or {}).items():
      if child is None:
        continue
      if not isinstance(child, Stub) or (is_module is not None and not is_module(child)):
        raise ValueError(f"{label}: submodule {prefix}{name} is a {type(child).__name__}.")
      walk(child, f"{prefix}{name}.")
    on_path.discard(id(stub))

  if not isinstance(root, Stub):
    raise ValueError(f"{label}: expected a module, got {type(root).__name__}.")
  walk(root, "")
  return out


# ----------------------------------------------------------------------------- TorchScript


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
  """Inert stand-in for `torch.<X>Storage` in a persistent id: its NumPy dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _identity(value, *unused):
  del unused
  return value


def _torchscript_root(archive: zipfile.ZipFile, label: str) -> str:
  roots = sorted({name.split("/", 1)[0] for name in archive.namelist()
                  if name.count("/") == 1 and name.endswith("/data.pkl")})
  if len(roots) != 1:
    raise ValueError(f"{label}: not a TorchScript archive (expected one <root>/data.pkl, "
                     f"found {len(roots)}).")
  return roots[0]


_CLASS_LINE = re.compile(r"class\s+(\w+)\s*\(\s*([\w.]*)\s*\)\s*:")
_DECLARATION_LINE = re.compile(r"\s+(__parameters__|__buffers__)\s*=\s*(\[.*\])\s*$")


def _torchscript_declarations(archive: zipfile.ZipFile, root: str, label: str
                              ) -> dict[str, dict[str, Any]]:
  """`__torch__.<module>.<Class>` -> {'module': bool, '__parameters__': [...], '__buffers__': [...]}.

  Scans the text of `<root>/code/**.py` line by line (class headers and the
  two list literals, read with `ast.literal_eval`); nothing is executed.
  """
  prefix = f"{root}/code/"
  declarations: dict[str, dict[str, Any]] = {}
  for name in archive.namelist():
    if not (name.startswith(prefix) and name.endswith(".py")):
      continue
    module = name[len(prefix):-len(".py")].replace("/", ".")
    current = None
    for line in archive.read(name).decode("utf-8", "replace").splitlines():
      header = _CLASS_LINE.match(line)
      if header:
        current = declarations.setdefault(f"{module}.{header.group(1)}", {
            "module": header.group(2) == "Module", "__parameters__": [], "__buffers__": []})
        continue
      if line and not line[0].isspace():
        current = None
        continue
      declaration = _DECLARATION_LINE.match(line)
      if current is not None and declaration:
        try:
          names = ast.literal_eval(declaration.group(2))
        except (ValueError, SyntaxError) as error:
          raise ValueError(f"{label}: unreadable {declaration.group(1)} in {name}.") from error
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
          raise ValueError(f"{label}: {declaration.group(1)} in {name} is not a list of names.")
        current[declaration.group(1)] = names
  return declarations


def _to_dtype(raw: np.ndarray, dtype: Any, big_endian: bool) -> np.ndarray:
  if dtype == "bfloat16":  # NumPy has none: the high half of a float32
    halves = raw.view(">u2" if big_endian else "<u2").astype(np.uint32)
    return (halves << 16).view(np.float32)
  return raw.view(np.dtype(dtype).newbyteorder(">" if big_endian else "<"))


def load_torchscript_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """The state dict of a TorchScript archive (`torch.jit.save`), read as data.

  Gives the names and values `torch.jit.load(path).state_dict()` gives, as
  NumPy arrays (bfloat16 as float32), without torch and without running the
  archive: `<root>/data.pkl` is read by a `RestrictedUnpickler` (classes
  `__torch__.*` become stubs; tensors are rebuilt with NumPy from the
  `<root>/data/<key>` storage records), and a module's parameters and buffers
  are the attributes its class lists in `__parameters__` / `__buffers__` in
  `<root>/code/` (scanned as text).

  Raises:
    UnsafeFileError: `data.pkl` names a global other than the stubs, tensor
      and list builders (e.g. `os.system`).
    ValueError: not a TorchScript archive, or malformed records.
  """
  label = os.fspath(path)
  with zipfile.ZipFile(path) as archive:
    root = _torchscript_root(archive, label)
    names = set(archive.namelist())
    big_endian = (f"{root}/byteorder" in names
                  and archive.read(f"{root}/byteorder").strip() == b"big")
    storages: dict[str, np.ndarray] = {}

    def load_storage(pid):
      if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
              and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
              and isinstance(pid[4], int)):
        raise UnsafeFileError(f"{label}: unexpected persistent id {pid!r}.")
      _, storage_type, key, _, numel = pid
      if key not in storages:
        record = f"{root}/data/{key}"
        if record not in names:
          raise ValueError(f"{label}: no storage record {record}.")
        raw = np.frombuffer(archive.read(record), np.uint8)
        itemsize = 2 if storage_type.dtype == "bfloat16" else np.dtype(storage_type.dtype).itemsize
        if raw.size < numel * itemsize:
          raise ValueError(f"{label}: storage record {record} holds {raw.size} bytes, "
                           f"fewer than {numel} x {itemsize}.")
        storages[key] = _to_dtype(raw[:numel * itemsize], storage_type.dtype, big_endian)
      return storages[key]

    def rebuild_tensor(storage, storage_offset, size, stride, *unused):
      del unused
      if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError(f"{label}: a tensor on a {type(storage).__name__}.")
      _check_ints(label, storage_offset, size, stride)
      if len(size) != len(stride):
        raise pickle.UnpicklingError(f"{label}: size {size} and stride {stride} differ in rank.")
      if any(n == 0 for n in size):
        return np.zeros(tuple(size), storage.dtype)
      last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
      if last >= storage.size:
        raise pickle.UnpicklingError(f"{label}: a tensor reaches element {last} of a storage "
                                     f"of {storage.size}.")
      view = np.lib.stride_tricks.as_strided(
          storage[storage_offset:], shape=tuple(size),
          strides=tuple(s * storage.itemsize for s in stride), writeable=False)
      return np.array(view, dtype=storage.dtype.newbyteorder("="))

    allowed = {
        ("collections", "OrderedDict"): dict,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
        **{("torch.jit._pickle", f"build_{kind}"): _identity
           for kind in ("intlist", "tensorlist", "doublelist", "boollist", "genericlist")},
        ("torch.jit._pickle", "restore_type_tag"): _identity,
        **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    }
    unpickler = RestrictedUnpickler(io.BytesIO(archive.read(f"{root}/data.pkl")), label,
                                    allowed, stub_modules=("__torch__",),
                                    persistent_load=load_storage)
    top = unpickler.load()
    declarations = _torchscript_declarations(archive, root, label)

  out: dict[str, np.ndarray] = {}
  on_path: set[int] = set()

  def walk(stub: Stub, prefix: str) -> None:
    declared = declarations.get(stub.pickled_name)
    if declared is None or not declared["module"]:
      return  # not a module (a scripted class): torch keeps no state of it
    if id(stub) in on_path:
      raise ValueError(f"{label}: the module tree has a cycle at {prefix or 'the root'}.")
    if not isinstance(stub.state, dict):
      raise ValueError(f"{label}: {stub.pickled_name} at {prefix or 'the root'} has no "
                       "attribute dict.")
    on_path.add(id(stub))
    for name in declared["__parameters__"] + declared["__buffers__"]:
      value = stub.state.get(name)
      if value is None:
        continue
      if not isinstance(value, np.ndarray):
        raise ValueError(f"{label}: {prefix}{name} is a {type(value).__name__}, not a tensor.")
      out[f"{prefix}{name}"] = value
    for name, value in stub.state.items():
      if isinstance(value, Stub):
        walk(value, f"{prefix}{name}.")
    on_path.discard(id(stub))

  if not isinstance(top, Stub) or top.pickled_name not in declarations:
    raise ValueError(f"{label}: data.pkl does not hold a TorchScript module.")
  walk(top, "")
  return out
