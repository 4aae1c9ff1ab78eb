"""Byte codecs for one tensor of a model update (numpy only, no Flower types).

Each blob starts with the tensor's shape (varints: the number of dimensions, then each), so a blob
decodes on its own. What follows, and the error each codec allows (the tests hold them to it):

- `none`: the array as `np.save` writes it (what Flower sends for a plain array); exact.
- `fp16`: IEEE half precision, 2 bytes a value; relative error <= 2**-11 (values clipped to +-65504).
- `int8`: a float32 scale (max |x| / 127), then one signed byte a value; error <= scale / 2.
- `topk`: the k = ceil(ratio * n) values largest in magnitude as fp16, then their positions as
  varint gaps (about 1 byte each at ratio 0.01-0.03); the others decode as 0 (the error feedback
  residual carries them to the next round).
- `stc`: sparse ternary compression: the same top k, each sent as +-mu (mu = their mean magnitude,
  one float32) with one bit per sign, then the varint gaps.

No codec stores the zeros of a sparse tensor: bytes on the wire are what is actually sent.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

UPLINK_CODECS = ("none", "fp16", "int8", "topk", "stc")
DOWNLINK_CODECS = ("none", "fp16")
SPARSE = ("topk", "stc")
FP16_MAX = 65504.0


class CodecError(ValueError):
    """A blob that does not decode (truncated, or not made by this codec)."""


# --- varints (LEB128, unsigned), vectorized --------------------------------------------------------


def varints(values: NDArray[Any]) -> bytes:
    """Unsigned LEB128 of each value, 7 bits a byte, the high bit set on all but a value's last byte."""
    v = np.asarray(values, dtype=np.uint64).ravel()
    if v.size == 0:
        return b""
    lengths = np.ones(v.size, dtype=np.int64)
    for bits in range(7, 64, 7):
        lengths += v >= np.uint64(1 << bits)
    owner = np.repeat(np.arange(v.size), lengths)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(owner.size) - starts[owner]
    low = (v[owner] >> (np.uint64(7) * position.astype(np.uint64))) & np.uint64(0x7F)
    more = position < lengths[owner] - 1
    return (low | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8).tobytes()


def read_varints(data: bytes | memoryview, count: int, offset: int = 0) -> tuple[NDArray[np.uint64], int]:
    """`count` varints from data[offset:]; the values and the offset after the last."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64), offset
    raw = np.frombuffer(data, dtype=np.uint8, offset=offset)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size < count:
        raise CodecError(f"{count} varints expected, {ends.size} found")
    ends = ends[:count]
    used = raw[: ends[-1] + 1].astype(np.uint64)
    owner = np.zeros(used.size, dtype=np.int64)
    owner[ends[:-1] + 1] = 1
    owner = np.cumsum(owner)
    starts = np.concatenate(([0], ends[:-1] + 1))
    position = (np.arange(used.size) - starts[owner]).astype(np.uint64)
    values = np.zeros(count, dtype=np.uint64)
    np.add.at(values, owner, (used & np.uint64(0x7F)) << (np.uint64(7) * position))
    return values, offset + int(ends[-1]) + 1


def _shape_header(shape: tuple[int, ...], *extra: int) -> bytes:
    return varints(np.array([len(shape), *shape, *extra], dtype=np.uint64))


def _read_header(data: bytes, extra: int = 0) -> tuple[tuple[int, ...], list[int], int]:
    (ndim,), offset = read_varints(data, 1)
    values, offset = read_varints(data, int(ndim) + extra, offset)
    numbers = [int(v) for v in values]
    return tuple(numbers[: int(ndim)]), numbers[int(ndim) :], offset


# --- the codecs --------------------------------------------------------------------------------------


def kept(size: int, ratio: float) -> int:
    """How many values top-k and STC keep of `size`: ceil(ratio * size), at least one."""
    return min(size, max(1, math.ceil(ratio * size))) if size else 0


def _top(flat: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """The positions of the k values largest in magnitude, ascending."""
    if k >= flat.size:
        return np.arange(flat.size, dtype=np.int64)
    return np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]).astype(np.int64)


def _gaps(positions: NDArray[np.int64]) -> bytes:
    """Ascending positions as the gaps between them, minus one (the first as it is)."""
    gaps = np.diff(positions, prepend=-1) - 1
    return varints(gaps)


def _positions(data: bytes, k: int, offset: int) -> tuple[NDArray[np.int64], int]:
    gaps, end = read_varints(data, k, offset)
    return np.cumsum(gaps.astype(np.int64) + 1) - 1, end


def encode(codec: str, array: NDArray[Any], ratio: float = 0.01) -> bytes:
    """One tensor as `codec`'s bytes."""
    if codec == "none":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        return buffer.getvalue()
    flat = np.asarray(array, dtype=np.float32).ravel()
    shape = tuple(int(d) for d in np.shape(array))
    if codec == "fp16":
        return _shape_header(shape) + np.clip(flat, -FP16_MAX, FP16_MAX).astype("<f2").tobytes()
    if codec == "int8":
        peak = float(np.max(np.abs(flat))) if flat.size else 0.0
        scale = peak / 127.0 if peak > 0 else 1.0
        quantized = np.clip(np.rint(flat / scale), -127, 127).astype(np.int8)
        return _shape_header(shape) + np.float32(scale).astype("<f4").tobytes() + quantized.tobytes()
    if codec in SPARSE:
        k = kept(flat.size, ratio)
        positions = _top(flat, k)
        values = flat[positions]
        if codec == "topk":
            body = np.clip(values, -FP16_MAX, FP16_MAX).astype("<f2").tobytes()
        else:
            mu = float(np.mean(np.abs(values))) if k else 0.0
            body = np.float32(mu).astype("<f4").tobytes() + np.packbits(values < 0).tobytes()
        return _shape_header(shape, k) + body + _gaps(positions)
    raise CodecError(f"unknown codec {codec!r}: one of {', '.join(UPLINK_CODECS)}")


def decode(codec: str, data: bytes) -> NDArray[Any]:
    """One tensor from `codec`'s bytes (float32, except `none`, which keeps the sent dtype)."""
    try:
        return _decode(codec, data)
    except (ValueError, IndexError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"a {codec} blob of {len(data)} bytes does not decode: {exc}") from None


def _decode(codec: str, data: bytes) -> NDArray[Any]:
    if codec == "none":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if codec in ("fp16", "int8"):
        shape, _, offset = _read_header(data)
        if codec == "fp16":
            return np.frombuffer(data, dtype="<f2", offset=offset).astype(np.float32).reshape(shape)
        scale = np.frombuffer(data, dtype="<f4", count=1, offset=offset)[0]
        values = np.frombuffer(data, dtype=np.int8, offset=offset + 4)
        return (values.astype(np.float32) * scale).reshape(shape)
    if codec in SPARSE:
        shape, (k,), offset = _read_header(data, extra=1)
        if codec == "topk":
            values = np.frombuffer(data, dtype="<f2", count=k, offset=offset).astype(np.float32)
            offset += 2 * k
        else:
            mu = np.frombuffer(data, dtype="<f4", count=1, offset=offset)[0]
            signs = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=(k + 7) // 8, offset=offset + 4))[:k]
            values = np.where(signs == 1, -mu, mu).astype(np.float32)
            offset += 4 + (k + 7) // 8
        positions, _ = _positions(data, k, offset)
        dense = np.zeros(int(np.prod(shape)), dtype=np.float32)
        dense[positions] = values
        return dense.reshape(shape)
    raise CodecError(f"unknown codec {codec!r}: one of {', '.join(UPLINK_CODECS)}")


def encode_all(codec: str, arrays: list[NDArray[Any]], ratio: float = 0.01) -> list[bytes]:
    return [encode(codec, a, ratio) for a in arrays]


def decode_all(codec: str, blobs: list[bytes]) -> list[NDArray[Any]]:
    return [decode(codec, b) for b in blobs]
