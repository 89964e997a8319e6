"""Tests of the safe msgpack codec (serl_ext/transport/codec.py)."""

import msgpack
import numpy as np
import pytest

from serl_ext.transport.codec import (
    ALLOWED_DTYPES,
    EXT_NDARRAY,
    EXT_NPSCALAR,
    MessageError,
    decode,
    encode,
    encode_map_with_raw_list,
)

ALL_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
              "uint64", "float16", "float32", "float64"]


def _array_ext_bytes(header_obj, raw: bytes, code: int = EXT_NDARRAY, hlen=None) -> bytes:
    """Hand-builds an array ExtType message (to craft malformed ones)."""
    header = msgpack.packb(header_obj)
    n = len(header) if hlen is None else hlen
    return msgpack.packb(msgpack.ExtType(code, n.to_bytes(4, "little") + header + raw))


def _assert_tree_equal(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_tree_equal(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_tree_equal(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_round_trip_every_dtype(dtype):
    rng = np.random.default_rng(0)
    x = (rng.random((3, 4)) * 100).astype(dtype)
    y = decode(encode(x))
    assert y.dtype == np.dtype(dtype) and y.shape == (3, 4)
    np.testing.assert_array_equal(x, y)
    # numpy scalars keep their type
    s = x.reshape(-1)[5]
    t = decode(encode(s))
    assert type(t) is type(s) and t == s


def test_round_trip_nested_transition():
    obs = {"state": np.arange(39, dtype=np.float32),
           "pixels": np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)}
    tr = {"observations": obs, "actions": np.array([0.1, -0.2, 0.3, 1.0], np.float32),
          "rewards": 1.0, "masks": 0.0, "dones": True, "next_observations": obs,
          "interventions": np.bool_(True), "action_source": np.int8(2),
          "info": {"msg": "ok", "blob": b"\x00\xff", "none": None, "ints": [1, -2, 2**63 - 1],
                   "tuple": (1, "a")}}
    out = decode(encode(tr))
    expected = dict(tr)
    expected["info"] = dict(tr["info"], tuple=[1, "a"])  # tuples decode as lists
    _assert_tree_equal(out, expected)
    assert type(out["interventions"]) is np.bool_ and type(out["action_source"]) is np.int8


def test_zero_d_empty_and_non_contiguous_arrays():
    zero_d = np.array(3.5, np.float64)
    empty = np.zeros((0, 5), np.int16)
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    strided = base[::2, ::3]          # not contiguous
    transposed = base.T               # Fortran order
    out = decode(encode([zero_d, empty, strided, transposed]))
    assert isinstance(out[0], np.ndarray) and out[0].shape == () and out[0] == 3.5
    assert out[1].shape == (0, 5) and out[1].dtype == np.int16
    np.testing.assert_array_equal(out[2], [[0, 3], [12, 15]])
    np.testing.assert_array_equal(out[3], base.T)
    assert out[3].flags.c_contiguous


def test_big_endian_input_is_normalised_to_little_endian():
    x = np.arange(5, dtype=">f4") * 1.5
    y = decode(encode(x))
    assert y.dtype.str == "<f4"
    np.testing.assert_array_equal(y, [0.0, 1.5, 3.0, 4.5, 6.0])


def test_big_endian_on_the_wire_is_refused():
    raw = np.arange(3, dtype=">i4").tobytes()
    with pytest.raises(MessageError, match="not allowed"):
        decode(_array_ext_bytes([">i4", [3]], raw))


def test_decoded_arrays_are_writeable_copies():
    data = encode({"a": np.arange(4, dtype=np.int32)})
    out = decode(data)
    assert out["a"].flags.writeable
    out["a"][0] = 100  # would raise on a read-only view
    assert decode(data)["a"][0] == 0  # the wire bytes were not modified


def test_jax_arrays_encode_as_numpy():
    jnp = pytest.importorskip("jax.numpy")
    out = decode(encode({"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)}))
    assert isinstance(out["w"], np.ndarray) and out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], np.arange(6).reshape(2, 3))


def test_wire_format_matches_documentation():
    # header = [dtype_str, shape], then the raw C-order bytes
    x = np.array([[1, 2], [3, 4]], dtype=np.uint16)
    hand = _array_ext_bytes(["<u2", [2, 2]], x.tobytes())
    assert encode(x) == hand
    assert ALLOWED_DTYPES == {np.dtype(d).newbyteorder("<").str for d in ALL_DTYPES}


def test_encode_map_with_raw_list_equals_plain_encode():
    items = [[i, {"x": np.full(2, i, np.float32)}] for i in range(3)]
    head = {"type": "data", "client": "c"}
    raw = encode_map_with_raw_list(head, "items", [encode(it) for it in items])
    _assert_tree_equal(decode(raw), decode(encode({**head, "items": items})))
    with pytest.raises(MessageError):
        encode_map_with_raw_list(head, "type", [])


# ----------------------------------------------------------------- refusals


@pytest.mark.parametrize("bad", [
    np.array([object(), 1], dtype=object),
    np.array([1 + 2j]),
    np.array(["a", "b"]),
    np.zeros(2, dtype=[("a", "<f4")]),
    np.array(["2020-01-01"], dtype="datetime64[D]"),
    {1: "int key"},
    {("a",): 1},
    {1.5},
    object(),
    2**64,
])
def test_encode_refuses_unsupported(bad):
    with pytest.raises(MessageError):
        encode(bad)


def test_encode_refuses_too_deep_and_too_big():
    deep = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(MessageError, match="max_depth"):
        encode(deep)
    with pytest.raises(MessageError, match="max_bytes"):
        encode(np.zeros(1000, np.uint8), max_bytes=500)


@pytest.mark.parametrize("data", [
    b"\xc1",                                  # never-used msgpack byte
    b"\x92\x01",                              # truncated array
    msgpack.packb(1) + b"\x00",               # trailing bytes
    b"\xdc\xff\xff",                          # array32 header with no elements
    b"\xa3ab",                                # truncated str
    b"\xa2\xff\xfe",                          # invalid utf-8 str
    b"",                                      # empty
])
def test_decode_refuses_malformed_bytes(data):
    with pytest.raises(MessageError):
        decode(data)


def test_decode_refuses_oversized_before_parsing():
    big = encode(np.zeros(10_000, np.uint8))
    with pytest.raises(MessageError, match="max_bytes"):
        decode(big, max_bytes=1000)
    # garbage that is oversized is refused for its size, not its content
    with pytest.raises(MessageError, match="max_bytes"):
        decode(b"\xc1" * 2000, max_bytes=1000)
    assert decode(big, max_bytes=len(big)).shape == (10_000,)


def test_decode_refuses_object_and_unknown_dtypes():
    for dt in ["|O", "<c8", "<U1", "|V4", "<M8[D]", "<f16", "f4"]:
        with pytest.raises(MessageError, match="not allowed"):
            decode(_array_ext_bytes([dt, [1]], b"\x00" * 8))


def test_decode_refuses_byte_count_mismatch():
    raw = np.arange(6, dtype="<f4").tobytes()
    with pytest.raises(MessageError, match="byte count"):
        decode(_array_ext_bytes(["<f4", [2, 3]], raw[:-1]))       # truncated
    with pytest.raises(MessageError, match="byte count"):
        decode(_array_ext_bytes(["<f4", [2, 3]], raw + b"\x00"))  # extra
    with pytest.raises(MessageError, match="byte count"):
        decode(_array_ext_bytes(["<f4", [2**40, 2**40]], raw))    # absurd shape


@pytest.mark.parametrize("header", [
    [5, [2]],                # dtype not a str
    ["<f4", 2],              # shape not a list
    ["<f4", [2, "x"]],       # shape entry not an int
    ["<f4", [True, 1]],      # bool is not an int here
    ["<f4", [-1]],           # negative dim
    ["<f4", [1.0]],          # float dim
    ["<f4"],                 # missing shape
    {"dtype": "<f4"},        # map instead of list
    ["<f4", [1] * 33],       # too many dims
])
def test_decode_refuses_wrong_header_types(header):
    with pytest.raises(MessageError):
        decode(_array_ext_bytes(header, b"\x00" * 8))


def test_decode_refuses_broken_ext_framing():
    with pytest.raises(MessageError, match="header length"):
        decode(_array_ext_bytes(["<f4", [1]], b"\x00" * 4, hlen=10_000))
    with pytest.raises(MessageError, match="too short"):
        decode(msgpack.packb(msgpack.ExtType(EXT_NDARRAY, b"\x01")))
    with pytest.raises(MessageError, match="unknown msgpack ExtType"):
        decode(msgpack.packb(msgpack.ExtType(7, b"abc")))
    with pytest.raises(MessageError, match="shape"):  # scalar ext with a shape
        decode(_array_ext_bytes(["<f4", [1]], b"\x00" * 4, code=EXT_NPSCALAR))
    with pytest.raises(MessageError, match="unsupported"):  # msgpack timestamp ext
        decode(msgpack.packb(msgpack.Timestamp(1, 0)))
    with pytest.raises(MessageError, match="0/1"):
        decode(_array_ext_bytes(["|b1", [2]], b"\x01\x07"))


def test_decode_refuses_non_str_keys():
    for obj in [{1: 2}, {b"k": 1}, {"ok": {3.5: 1}}, [{None: 1}]]:
        data = msgpack.packb(obj, use_bin_type=True)
        with pytest.raises(MessageError, match="keys must be str"):
            decode(data)


def test_decode_refuses_too_deep_nesting():
    obj = "leaf"
    for _ in range(33):
        obj = {"k": obj}
    data = msgpack.packb(obj)
    with pytest.raises(MessageError, match="max_depth"):
        decode(data)
    assert decode(data, max_depth=33) is not None
    # deeper than msgpack's own parser stack is refused too, not crashed
    with pytest.raises(MessageError):
        decode(b"\x91" * 5000 + b"\x01")


def test_decode_type_error_for_non_bytes():
    with pytest.raises(TypeError):
        decode("not bytes")


# ------------------------------------------------------------------ bounded decoding


@pytest.mark.parametrize("mib", [16, 64])
def test_hostile_frame_of_empty_maps_costs_bounded_time_and_memory(mib):
    """Issue 15 item 5: a frame of empty maps (16 MiB took 16 s and 2.3 GB before the pre-scan)
    is refused before msgpack allocates anything. Bounds are generous (a loaded 2-core box)."""
    import time
    import tracemalloc

    n = mib * 1024 * 1024 - 5
    frame = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n  # array32 of n empty maps
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(MessageError, match="max_objects"):
        decode(frame, max_bytes=64 * 1024 * 1024)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 10.0, elapsed          # measured ~0.2-1.7 s; was 16 s (16 MiB)
    assert peak < 32 * 1024 * 1024, peak    # measured ~2 MB; was 2.3 GB


def test_max_objects_limit_and_legit_messages():
    msg = {"items": [[i, {"x": np.zeros(3, np.float32), "r": 1.0}] for i in range(100)]}
    data = encode(msg)
    assert decode(data, max_objects=1000)["items"][99][0] == 99  # ~ 700 objects
    with pytest.raises(MessageError, match="max_objects=100 "):
        decode(data, max_objects=100)
    big = encode({"w": np.zeros((512, 1024), np.float32)})   # big arrays count once
    assert decode(big, max_objects=4)["w"].shape == (512, 1024)


@pytest.mark.parametrize("frame", [
    b"\xdd\xff\xff\xff\xff\xc0",          # array32 declaring 4e9 entries, 1 byte follows
    b"\xdf\x00\x10\x00\x00" + b"\xc0" * 8,  # map32 declaring 1M pairs
    b"\xc6\xff\xff\xff\xff\x00",          # bin32 declaring 4 GiB
    b"\xdb\x7f\xff\xff\xff",              # str32 declaring 2 GiB
    b"\xc9\x7f\xff\xff\xff\x01",          # ext32 declaring 2 GiB
    b"\xc1",                              # reserved byte
    b"\x92\xc0",                          # truncated array
])
def test_declared_lengths_beyond_the_frame_refused(frame):
    from serl_ext.transport.codec import scan

    with pytest.raises(MessageError):
        scan(frame)
    with pytest.raises(MessageError):
        decode(frame)


def test_scan_counts_and_depth():
    from serl_ext.transport.codec import scan

    # map, "a", list, 1, 2, map, "b", None
    assert scan(encode({"a": [1, 2, {"b": None}]})) == 8
    nested = msgpack.packb([[[[1]]]])
    assert scan(nested, max_depth=4) == 5
    with pytest.raises(MessageError, match="max_depth=2"):
        scan(nested, max_depth=2)
    with pytest.raises(MessageError, match="trailing"):
        scan(nested + b"\xc0")
