"""Read a TensorFlow 1 checkpoint (tensor bundle) in pure Python: no TensorFlow needed.

A checkpoint `<prefix>` is `<prefix>.index` (an SSTable mapping variable name -> where its bytes
are) plus `<prefix>.data-NNNNN-of-MMMMM` shards holding raw little-endian tensors. Format sources:
tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc}, protobuf/tensor_bundle.proto and the
LevelDB-derived table in tsl/lib/io (block layout, 48-byte footer). Only what BERT checkpoints
use is supported: uncompressed index blocks, unpartitioned tensors, numeric dtypes.

    ckpt = TFCheckpoint("uncased_L-2_H-128_A-2/bert_model.ckpt")
    ckpt.shapes()["bert/pooler/dense/kernel"]   # (128, 128)
    ckpt.read("bert/pooler/dense/kernel")        # numpy array
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtinker.core.errors import QTinkerError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # 1-byte compression type + 4-byte crc

# tensorflow/core/framework/types.proto (DT_STRING = 7 and resource types are not readable as arrays)
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
               9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one variable lives: BundleEntryProto, decoded."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    partitioned: bool = False

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"dtype {self.dtype}")


# ---------------------------------------------------------------- protobuf / varint primitives

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) for every field of a serialized message."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, _, value in _proto_fields(buf):
        if number == 2:  # repeated Dim dim = 2; Dim { int64 size = 1; string name = 2; }
            size = next((v for n, _, v in _proto_fields(value) if n == 1), 0)
            dims.append(int(size))
        elif number == 3 and value:  # unknown_rank
            raise ValueError("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    values = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "partitioned": False}
    for number, _, value in _proto_fields(buf):
        if number == 1:
            values["dtype"] = value
        elif number == 2:
            values["shape"] = _parse_shape(value)
        elif number in (3, 4, 5):
            values[{3: "shard_id", 4: "offset", 5: "size"}[number]] = value
        elif number == 7:
            values["partitioned"] = True
    return TensorEntry(name=name, **values)


# ---------------------------------------------------------------- SSTable (LevelDB table) reading

def _block(data: bytes, offset: int, size: int, where: str) -> bytes:
    if offset + size + BLOCK_TRAILER_SIZE > len(data):
        raise ValueError(f"{where}: block at {offset}+{size} runs past the end of the file")
    compression = data[offset + size]
    if compression != 0:
        raise ValueError(f"{where}: compressed index blocks (type {compression}) are not supported")
    return data[offset:offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def read_index(index_path: Path) -> tuple[dict, dict[str, TensorEntry]]:
    """Parse `<prefix>.index`: (header fields, {variable name: TensorEntry})."""
    data = index_path.read_bytes()
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise ValueError(f"{index_path.name}: not a TensorFlow checkpoint index (bad magic number)")
    footer = data[-FOOTER_SIZE:]
    _, _, pos = _block_handle(footer)  # metaindex handle (unused)
    index_offset, index_size, _ = _block_handle(footer, pos)
    header: dict = {}
    entries: dict[str, TensorEntry] = {}
    for _, handle in _block_entries(_block(data, index_offset, index_size, index_path.name)):
        offset, size, _ = _block_handle(handle)
        for key, value in _block_entries(_block(data, offset, size, index_path.name)):
            name = key.decode("utf-8")
            if name == "":  # BundleHeaderProto: num_shards = 1, endianness = 2, version = 3
                header = {{1: "num_shards", 2: "endianness"}.get(n, f"field{n}"): v for n, _, v in _proto_fields(value)}
            else:
                entries[name] = _parse_entry(name, value)
    return header, entries


# ---------------------------------------------------------------- the checkpoint

class TFCheckpoint:
    """A TF1 checkpoint on disk; `prefix` is the path without `.index` (a folder or .index path also works)."""

    def __init__(self, prefix: str | Path):
        self.prefix = find_prefix(Path(prefix))
        index = Path(str(self.prefix) + ".index")
        try:
            self.header, self.entries = read_index(index)
        except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
            raise QTinkerError(f"{index}: unreadable checkpoint index ({exc}); the checkpoint is damaged, fetch it again") from exc
        if self.header.get("endianness", 0) != 0:
            raise QTinkerError(f"{index}: big-endian checkpoints are not supported; re-save it on a little-endian machine")
        self.num_shards = int(self.header.get("num_shards", 1) or 1)

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def names(self) -> list[str]:
        return sorted(self.entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: e.shape for name, e in self.entries.items()}

    def read(self, name: str) -> np.ndarray:
        """The variable's value as a numpy array (a copy; the file is not kept open)."""
        entry = self.entries.get(name)
        if entry is None:
            raise QTinkerError(f"{self.prefix}: no variable {name!r} in the checkpoint")
        dtype = DTYPES.get(entry.dtype)
        if dtype is None or entry.partitioned:
            what = "partitioned tensor" if entry.partitioned else f"{entry.dtype_name} tensor"
            raise QTinkerError(f"{self.prefix}: variable {name!r} is a {what}, which this reader does not support")
        count = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
        if count * dtype.itemsize != entry.size:
            raise QTinkerError(f"{self.prefix}: variable {name!r} has {entry.size} bytes but shape {entry.shape} "
                               f"needs {count * dtype.itemsize}; the checkpoint is damaged")
        path = self.shard_path(entry.shard_id)
        try:
            with path.open("rb") as f:
                f.seek(entry.offset)
                raw = f.read(entry.size)
        except OSError as exc:
            raise QTinkerError(f"{path}: cannot read the checkpoint data ({exc}); the file is missing or unreadable") from exc
        if len(raw) != entry.size:
            raise QTinkerError(f"{path}: truncated: variable {name!r} needs bytes {entry.offset}..{entry.offset + entry.size} "
                               f"but the file ends earlier; fetch the checkpoint again")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()


def find_prefix(path: Path) -> Path:
    """Resolve a folder / `.index` file / prefix to the checkpoint prefix (bert_model.ckpt preferred)."""
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if not indexes:
            raise QTinkerError(f"{path}: no TensorFlow checkpoint (*.index) in this folder; expected bert_model.ckpt.index")
        preferred = [p for p in indexes if p.name == "bert_model.ckpt.index"]
        if len(preferred) != 1 and len(indexes) > 1:
            names = ", ".join(p.name for p in indexes)
            raise QTinkerError(f"{path}: several checkpoints ({names}); pass the prefix of the one to convert")
        return Path(str((preferred or indexes)[0])[: -len(".index")])
    if path.name.endswith(".index"):
        path = Path(str(path)[: -len(".index")])
    if not Path(str(path) + ".index").exists():
        raise QTinkerError(f"{path}: no checkpoint index {path.name}.index next to it; pass the folder holding bert_model.ckpt.*")
    return path
