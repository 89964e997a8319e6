"""Safe wire codec for the actor/learner transport (msgpack, never pickle).

agentlace (the transport HiL-SERL uses) pickles every message and unpickles
whatever arrives on its port, so any peer that can reach the port can run
code in the learner. This codec only knows plain data:

* ``None``, ``bool``, ``int`` (64-bit range), ``float``, ``str``, ``bytes``;
* ``list`` / ``tuple`` (both decode as ``list``);
* ``dict`` (and other ``Mapping``) with ``str`` keys only (decode as ``dict``);
* numpy arrays and numpy scalars of a whitelisted dtype (bool, int8..int64,
  uint8..uint64, float16/32/64), carried as a msgpack ExtType;
* jax arrays (converted with ``np.asarray`` on encode, decoded as numpy).

Array wire format (ExtType code 1 for arrays, 2 for numpy scalars)::

    u32 little-endian header length | msgpack [dtype_str, shape_list] | raw bytes

``dtype_str`` is the numpy ``dtype.str`` of a little-endian dtype (``"<f4"``,
``"|u1"``, ``"|b1"``...), ``shape_list`` a list of non-negative ints and the
raw bytes are the C-order array data.

Byte order: big-endian input arrays are *normalised* on encode (converted to
little-endian, values unchanged). On decode, any dtype string that is not
little-endian (or byte-order free) is *refused*.

Decoded arrays are writeable copies that own their memory (never views into
the receive buffer). Decoded numpy scalars are numpy scalars of the same
dtype.

Every decoding problem raises :class:`MessageError` (a ``ValueError``):
oversized input (checked before parsing), malformed msgpack, trailing bytes,
unknown ExtType codes, malformed array headers, byte counts that do not
match ``prod(shape) * itemsize``, bool arrays holding bytes other than 0/1,
non-``str`` dict keys, nesting deeper than ``max_depth``, more than
``max_objects`` objects and unsupported types (e.g. msgpack timestamps).

Bounded decoding: before msgpack builds anything, :func:`scan` walks the raw
bytes without allocating objects and refuses a message with more than
``max_objects`` objects, deeper nesting than ``max_depth``, or a declared
container / str / bin / ext length that the remaining bytes cannot hold. It
stops at the first violation, so a hostile 64 MiB frame of empty maps costs
at most ``max_objects`` scanner steps (about 0.1-0.3 s on one core) and no
allocation; the unpacker then runs with ``max_*_len`` limits as a second
guard. Decoded memory is therefore bounded by about the frame size (array
and bytes payloads are copied once) plus ``max_objects`` small Python
objects (~100 B each, 26 MiB at the default). Encoding unsupported objects (object dtype,
complex, custom classes, non-``str`` keys, too-deep nesting) raises
:class:`MessageError` too.
"""

from __future__ import annotations

import collections.abc
import math
import sys
from typing import Any, Sequence

import msgpack
import numpy as np

__all__ = [
    "MessageError",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_OBJECTS",
    "scan",
    "ALLOWED_DTYPES",
    "encode",
    "decode",
    "encode_map_with_raw_list",
]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Default size limit of one message, in bytes (64 MiB)."""

DEFAULT_MAX_DEPTH = 32
"""Default limit on container nesting (the top-level object has depth 0)."""

DEFAULT_MAX_OBJECTS = 262_144
"""Default limit on msgpack objects in one message (every container, scalar, string and
array counts 1; array bytes do not count). A data message of 256 transitions holds a few
thousand, a parameter message a few hundred."""

EXT_NDARRAY = 1
EXT_NPSCALAR = 2

_MAX_HEADER_BYTES = 1024
_MAX_NDIM = 32

ALLOWED_DTYPES: frozenset[str] = frozenset(
    np.dtype(name).newbyteorder("<").str
    for name in (
        "bool", "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64",
    )
)
"""Little-endian numpy dtype strings accepted on the wire."""


class MessageError(ValueError):
    """A message could not be encoded or is not a valid, safe message."""


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _is_jax_array(obj: Any) -> bool:
    jax = sys.modules.get("jax")  # never import jax just to check
    return jax is not None and isinstance(obj, jax.Array)


def _array_ext(arr: np.ndarray, code: int) -> msgpack.ExtType:
    dt = arr.dtype
    if dt.hasobject:
        raise MessageError("object arrays cannot be sent (dtype=object); "
                           f"allowed dtypes: {sorted(ALLOWED_DTYPES)}")
    if dt.fields is not None or dt.subdtype is not None:
        raise MessageError(f"structured/sub-array dtype {dt} is not supported")
    canon = dt.newbyteorder("<")
    if canon.str not in ALLOWED_DTYPES:
        raise MessageError(f"dtype {dt} is not supported; allowed dtypes: "
                           f"{sorted(ALLOWED_DTYPES)}")
    if arr.ndim > _MAX_NDIM:
        raise MessageError(f"arrays with more than {_MAX_NDIM} dims are not supported")
    arr = np.asarray(arr, dtype=canon, order="C")  # C order, little-endian, keeps 0-d
    header = msgpack.packb([canon.str, [int(s) for s in arr.shape]])
    payload = b"".join((len(header).to_bytes(4, "little"), header,
                        arr.reshape(-1).view(np.uint8).data if arr.size else b""))
    return msgpack.ExtType(code, payload)


def _prepare(obj: Any, depth: int, max_depth: int) -> Any:
    """Converts ``obj`` to exact msgpack-native types (arrays -> ExtType)."""
    if depth > max_depth:
        raise MessageError(f"nesting deeper than max_depth={max_depth}")
    t = type(obj)
    if obj is None or t is bool or t is int or t is float or t is str or t is bytes:
        return obj
    if isinstance(obj, np.ndarray):
        return _array_ext(obj, EXT_NDARRAY)
    if isinstance(obj, np.generic):
        if isinstance(obj, np.str_):
            return str(obj)
        if isinstance(obj, np.bytes_):
            return bytes(obj)
        return _array_ext(np.asarray(obj), EXT_NPSCALAR)
    if _is_jax_array(obj):
        return _array_ext(np.asarray(obj), EXT_NDARRAY)
    if isinstance(obj, (dict, collections.abc.Mapping)):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise MessageError(f"dict keys must be str, got {type(k).__name__} key {k!r}")
            out[str(k)] = _prepare(v, depth + 1, max_depth)
        return out
    if isinstance(obj, (list, tuple)):
        return [_prepare(v, depth + 1, max_depth) for v in obj]
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise MessageError(f"cannot encode object of type {t.__module__}.{t.__qualname__}; "
                       "only None/bool/int/float/str/bytes, lists, str-keyed dicts and "
                       "numeric numpy/jax arrays are supported")


def _packb(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True, strict_types=True)
    except OverflowError as e:
        raise MessageError(f"integer out of the 64-bit range: {e}") from e


def encode(obj: Any, max_bytes: int | None = None,
           max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """Encodes ``obj`` to msgpack bytes (see the module docstring for types).

    Args:
      obj: the object to encode (nested containers of supported leaves).
      max_bytes: if given, raise when the encoded size exceeds it.
      max_depth: maximum container nesting (top level = depth 0).

    Returns:
      The encoded message, ``bytes``.

    Raises:
      MessageError: unsupported type/dtype, non-str dict key, nesting deeper
        than ``max_depth``, integer out of range, or result larger than
        ``max_bytes``.
    """
    data = _packb(_prepare(obj, 0, max_depth))
    if max_bytes is not None and len(data) > max_bytes:
        raise MessageError(f"encoded message is {len(data)} bytes, more than "
                           f"max_bytes={max_bytes}")
    return data


def encode_map_with_raw_list(head: dict, key: str, encoded_elements: Sequence[bytes]) -> bytes:
    """Encodes ``{**head, key: [e0, e1, ...]}`` where each ``e_i`` is already encoded.

    Lets the client size chunks exactly without encoding items twice: the
    result decodes with :func:`decode` to the same object as
    ``encode({**head, key: [decode(e) for e in encoded_elements]})``.

    Args:
      head: str-keyed dict of the other entries (encoded with :func:`encode`).
      key: str key for the list; must not be in ``head``.
      encoded_elements: outputs of :func:`encode`, one per list element.

    Raises:
      MessageError / TypeError: bad ``head``, ``key`` type or duplicate key.
    """
    if not isinstance(key, str) or key in head:
        raise MessageError(f"key must be a str not already in head, got {key!r}")
    packer = msgpack.Packer(use_bin_type=True, strict_types=True)
    prepared = _prepare(head, 0, DEFAULT_MAX_DEPTH)
    parts = [packer.pack_map_header(len(prepared) + 1)]
    for k, v in prepared.items():
        parts.append(_packb(k))
        parts.append(_packb(v))
    parts.append(_packb(key))
    parts.append(packer.pack_array_header(len(encoded_elements)))
    parts.extend(encoded_elements)
    return b"".join(parts)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _decode_array_payload(data: bytes) -> np.ndarray:
    n = len(data)
    if n < 4:
        raise MessageError(f"array ext payload too short ({n} bytes)")
    hlen = int.from_bytes(data[:4], "little")
    if hlen == 0 or hlen > _MAX_HEADER_BYTES or 4 + hlen > n:
        raise MessageError(f"array ext header length {hlen} invalid for a {n}-byte payload")
    try:
        header = msgpack.unpackb(data[4:4 + hlen], raw=False, use_list=True,
                                 strict_map_key=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad message
        raise MessageError(f"array ext header is not valid msgpack: {e}") from e
    if not (isinstance(header, list) and len(header) == 2):
        raise MessageError(f"array ext header must be [dtype_str, shape], got {header!r:.100}")
    dtype_str, shape = header
    if type(dtype_str) is not str:
        raise MessageError(f"array dtype must be a str, got {type(dtype_str).__name__}")
    if dtype_str not in ALLOWED_DTYPES:
        raise MessageError(f"array dtype {dtype_str!r} not allowed; allowed (little-endian): "
                           f"{sorted(ALLOWED_DTYPES)}")
    if type(shape) is not list or len(shape) > _MAX_NDIM:
        raise MessageError(f"array shape must be a list of at most {_MAX_NDIM} ints, "
                           f"got {shape!r:.100}")
    for s in shape:
        if type(s) is not int or s < 0:
            raise MessageError(f"array shape entries must be non-negative ints, got {shape!r:.100}")
    dtype = np.dtype(dtype_str)
    expected = math.prod(shape) * dtype.itemsize
    raw = memoryview(data)[4 + hlen:]
    if raw.nbytes != expected:
        raise MessageError(f"array byte count mismatch: shape {tuple(shape)} dtype {dtype_str} "
                           f"needs {expected} bytes, got {raw.nbytes}")
    if dtype.kind == "b" and expected and int(np.frombuffer(raw, np.uint8).max()) > 1:
        raise MessageError("bool array holds bytes other than 0/1")
    # bytearray(...) copies: the result is writeable and owns its memory.
    return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_NDARRAY:
        return _decode_array_payload(data)
    if code == EXT_NPSCALAR:
        arr = _decode_array_payload(data)
        if arr.ndim != 0:
            raise MessageError(f"numpy scalar ext must have shape [], got {list(arr.shape)}")
        return arr[()]
    raise MessageError(f"unknown msgpack ExtType code {code}")


_LEAF_TYPES = (type(None), bool, int, float, str, bytes, np.ndarray, np.generic)


def _validate_tree(obj: Any, max_depth: int) -> None:
    stack = [(obj, 0)]
    while stack:
        o, d = stack.pop()
        if d > max_depth:
            raise MessageError(f"nesting deeper than max_depth={max_depth}")
        if isinstance(o, dict):
            for k, v in o.items():
                if type(k) is not str:
                    raise MessageError(f"dict keys must be str, got {type(k).__name__} "
                                       f"key {k!r:.50}")
                stack.append((v, d + 1))
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
        elif not isinstance(o, _LEAF_TYPES):
            raise MessageError(f"unsupported decoded type {type(o).__name__}")


# msgpack first byte -> (kind, fixed size or length-field bytes); see the msgpack spec.
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_BLOB = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}   # bin / str: length bytes
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}                                # ext: length bytes (+1 type)
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_ARRAY = {0xDC: 2, 0xDD: 4}
_MAP = {0xDE: 2, 0xDF: 4}


def scan(data: bytes | bytearray | memoryview, max_objects: int = DEFAULT_MAX_OBJECTS,
         max_depth: int = DEFAULT_MAX_DEPTH) -> int:
    """Walks one msgpack message without building it; returns its object count.

    Cost: O(number of objects), stopping at ``max_objects``; no allocation
    proportional to the message (only a stack of at most ``max_depth``).

    Args:
      data: the message bytes.
      max_objects: limit on objects (containers, scalars, strings, bins, exts).
      max_depth: container nesting limit (top level = depth 0).

    Raises:
      MessageError: more objects, deeper nesting, a declared length the bytes
        cannot hold, a reserved first byte (0xc1), truncation or trailing bytes.
    """
    buf = data if isinstance(data, bytes) else memoryview(data).cast("B")
    n = len(buf)
    pos = 0
    count = 0
    stack = [1]  # objects still to read at each open level
    while stack:
        if stack[-1] == 0:
            stack.pop()
            continue
        stack[-1] -= 1
        if pos >= n:
            raise MessageError("malformed message: truncated")
        count += 1
        if count > max_objects:
            raise MessageError(f"message holds more than max_objects={max_objects} objects")
        b = buf[pos]
        pos += 1
        size = None  # children to push
        if b <= 0x7F or b >= 0xE0:
            continue
        if 0x80 <= b <= 0x8F:
            size = 2 * (b & 0x0F)
        elif 0x90 <= b <= 0x9F:
            size = b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            pos += b & 0x1F
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _BLOB or b in _EXT:
            w = _BLOB.get(b) or _EXT[b]
            if pos + w > n:
                raise MessageError("malformed message: truncated length")
            pos += w + int.from_bytes(buf[pos:pos + w], "big") + (1 if b in _EXT else 0)
        elif b in _FIXEXT:
            pos += 1 + _FIXEXT[b]
        elif b in _ARRAY or b in _MAP:
            w = _ARRAY.get(b) or _MAP[b]
            if pos + w > n:
                raise MessageError("malformed message: truncated length")
            size = int.from_bytes(buf[pos:pos + w], "big") * (2 if b in _MAP else 1)
            pos += w
        else:
            raise MessageError(f"malformed message: reserved msgpack byte 0x{b:02x}")
        if pos > n:
            raise MessageError("malformed message: a declared length exceeds the message")
        if size:
            if size > n - pos:  # every object takes at least one byte
                raise MessageError(f"malformed message: a container declares {size} entries, "
                                   f"only {n - pos} bytes remain")
            if len(stack) > max_depth:
                raise MessageError(f"nesting deeper than max_depth={max_depth}")
            stack.append(size)
    if pos != n:
        raise MessageError("trailing bytes after the message")
    return count


def decode(data: bytes | bytearray | memoryview, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
           max_depth: int = DEFAULT_MAX_DEPTH, max_objects: int = DEFAULT_MAX_OBJECTS) -> Any:
    """Decodes and validates one message produced by :func:`encode`.

    Args:
      data: the message bytes (any contiguous buffer).
      max_bytes: size limit in bytes, checked before any parsing.
      max_depth: maximum container nesting (top level = depth 0).
      max_objects: limit on msgpack objects, checked by :func:`scan` before
        any object is built.

    Returns:
      The object: dicts (str keys), lists, plain scalars, ``bytes``, writeable
      numpy arrays and numpy scalars.

    Raises:
      TypeError: ``data`` is not a bytes-like object.
      MessageError: oversized, malformed or unsafe message (module docstring).
    """
    try:
        view = memoryview(data)
    except TypeError as e:
        raise TypeError(f"decode expects bytes-like data, got {type(data).__name__}") from e
    if view.nbytes > max_bytes:
        raise MessageError(f"message is {view.nbytes} bytes, more than max_bytes={max_bytes}")
    if view.nbytes == 0:
        raise MessageError("empty message")
    scan(view, max_objects=max_objects, max_depth=max_depth)
    n = view.nbytes
    try:
        obj = msgpack.unpackb(view, raw=False, use_list=True, strict_map_key=False,
                              ext_hook=_ext_hook, max_str_len=n, max_bin_len=n, max_ext_len=n,
                              max_array_len=min(n, max_objects),
                              max_map_len=min(n, max_objects))
    except MessageError:
        raise
    except msgpack.exceptions.ExtraData as e:
        raise MessageError("trailing bytes after the message") from e
    except msgpack.exceptions.StackError as e:
        raise MessageError(f"nesting deeper than max_depth={max_depth}") from e
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad message
        raise MessageError(f"malformed message: {type(e).__name__}: {e}") from e
    _validate_tree(obj, max_depth)
    return obj
