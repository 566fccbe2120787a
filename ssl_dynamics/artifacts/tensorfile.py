"""The safetensors file format, written deterministically and read without copies.

A safetensors file is an 8-byte little-endian header length, a JSON header (name ->
dtype, shape, [start, end) byte offsets into the data section, plus `__metadata__`) and
the data section, each tensor's bytes back to back.

Reading here puts the file's bytes into one buffer (a reusable one from `Buffers`, pinned
for a GPU) and returns tensors that are views into it. Against `safetensors.torch.load`
on a 44.7 MB checkpoint this leaves out a fresh 44.7 MB `bytes` object (the page faults of
a new allocation cost about as much as the reading), the copy into new tensors and, on a
GPU, the copy into pinned memory (benchmarks/checkpoint_load.py). The header is validated
as strictly as the reference reader does: known dtypes, sizes that match the shapes,
tensors that tile the data section exactly.
"""
from __future__ import annotations

import json
import math
import struct
import threading
from pathlib import Path

import torch

from ..errors import UserError

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                      torch.uint8: "U8", torch.bool: "BOOL"}
TORCH_DTYPES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
HEADER_LIMIT = 100 * 2**20  # a header past 100 MiB is not a checkpoint of ours: refuse early
DIM_LIMIT = 2**62  # a dimension beyond this is not a tensor of ours (torch sizes are int64)


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors format written byte-for-byte deterministically.

    The reference writer orders header keys through a hash map, so two identical states
    can give different bytes. Here keys are sorted, so equal weights give equal files
    and the manifest's sha256 doubles as a content hash across runs and machines.
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8-byte alignment
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


class Buffers:
    """A free list of byte buffers for whole files, reused from read to read (fresh
    buffers of tens of MB cost a page fault per 4 KiB on every read). `pinned` buffers
    let a GPU copy from them without waiting. A buffer given back with a CUDA event is
    handed out again only once the event (the copy out of it) has completed."""

    def __init__(self, pinned: bool = False):
        self.pinned = pinned
        self._free: list[tuple[torch.Tensor, object]] = []
        self._taken: dict[int, torch.Tensor] = {}  # storage address -> buffer handed out
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor:
        with self._lock:
            fits = [i for i, (buf, _) in enumerate(self._free) if buf.numel() >= nbytes]
            ready = [i for i in fits if self._free[i][1] is None or self._free[i][1].query()]
            buf, event = self._free.pop((ready or fits)[0]) if fits else (None, None)
        if event is not None:
            event.synchronize()
        if buf is None:
            buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=self.pinned)
        with self._lock:
            self._taken[buf.untyped_storage().data_ptr()] = buf
        return buf

    def give(self, view: torch.Tensor, event=None) -> None:
        """Give back the buffer that `view` (any view of a taken buffer) lies in."""
        with self._lock:
            buf = self._taken.pop(view.untyped_storage().data_ptr(), None)
            if buf is not None:
                self._free.append((buf, event))


def read_file(path: Path, buffers: Buffers | None = None) -> torch.Tensor:
    """The file's bytes as a uint8 tensor [size] (a view into a buffer from `buffers`, or a
    new buffer). A file that changes size while it is read is refused."""
    with open(path, "rb", buffering=0) as f:
        size = f.seek(0, 2)
        f.seek(0)
        buf = buffers.take(size) if buffers is not None else torch.empty(max(size, 1), dtype=torch.uint8)
        try:
            view = memoryview(buf.numpy())[:size]
            got = 0
            while got < size and (n := f.readinto(view[got:])):
                got += n
            if got != size or f.read(1):
                raise UserError(f"{path} changed while it was read")
        except BaseException:
            if buffers is not None:
                buffers.give(buf)
            raise
    return buf[:size]


def header_of(data: torch.Tensor | bytes, path: Path) -> tuple[dict, int]:
    """(parsed header, data-section start) of safetensors bytes; a malformed header is a
    UserError naming `path`."""
    raw = memoryview(data.numpy() if isinstance(data, torch.Tensor) else data)
    if len(raw) < 8:
        raise UserError(f"corrupt checkpoint {path}: shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(HEADER_LIMIT, len(raw) - 8):
        raise UserError(f"corrupt checkpoint {path}: header length {n} does not fit the file")
    try:  # the format's header is UTF-8 JSON (json.loads of bytes would also take UTF-16/32)
        header = json.loads(bytes(raw[8:8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"corrupt checkpoint {path}: unreadable header") from None
    except KeyError as e:
        raise UserError(f"corrupt checkpoint {path}: the header names {e.args[0]} twice") from None
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UserError(f"corrupt checkpoint {path}: unreadable header")
    return header, 8 + n


def expected_size(path: Path) -> int | None:
    """The size a safetensors file's own header implies (data-section start + the end of its
    last tensor), reading only the header; None when there is no readable header (a file too
    short or damaged to have one, or entries without valid offsets). A size that differs
    means a truncated or appended file. A file that cannot be opened raises its OSError."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        data = head + f.read(min(n, HEADER_LIMIT))
    try:
        header, start = header_of(data, path)
    except UserError:
        return None
    return implied_size(header, start)


def implied_size(header: dict, start: int) -> int | None:
    """The file size a parsed safetensors header implies (`start`: where its data section
    begins); None when an entry has no valid offsets."""
    ends = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            return None
        ends.append(offsets[1])
    return start + max(ends, default=0)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        names = [k for k, _ in pairs]
        raise KeyError(next(k for k in names if names.count(k) > 1))
    return out


def _entry(name: str, spec: object, path: Path) -> tuple[torch.dtype, list[int], int, int]:
    """(dtype, shape, start, end) of one header entry, each checked."""
    bad = f"corrupt checkpoint {path}: tensor {name} has"
    if not isinstance(spec, dict) or spec.get("dtype") not in TORCH_DTYPES:
        raise UserError(f"{bad} an unknown dtype")
    shape, offsets = spec.get("shape"), spec.get("data_offsets")
    if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < DIM_LIMIT for d in shape)):
        raise UserError(f"{bad} an invalid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets) and offsets[0] <= offsets[1]):
        raise UserError(f"{bad} invalid data offsets")
    dtype = TORCH_DTYPES[spec["dtype"]]
    if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
        raise UserError(f"{bad} {offsets[1] - offsets[0]} bytes for shape {shape}")
    return dtype, shape, offsets[0], offsets[1]


def tensors_of(data: torch.Tensor, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(name -> tensor, `__metadata__`) of safetensors bytes `data` (uint8 [size]). The
    tensors are views into `data` (a tensor whose offset is not a multiple of its element
    size is copied out); the tensors must tile the data section exactly, as the format
    requires."""
    header, start = header_of(data, path)
    metadata = header.pop("__metadata__", {})
    entries = sorted(((_entry(name, spec, path), name) for name, spec in header.items()),
                     key=lambda e: (e[0][2], e[0][3]))
    end = 0
    state = {}
    for (dtype, shape, lo, hi), name in entries:
        if lo != end:
            raise UserError(f"corrupt checkpoint {path}: tensor {name} does not start where the "
                            f"previous one ends")
        end = hi
        if start + hi > len(data):
            raise UserError(f"corrupt checkpoint {path}: tensor {name} runs past the end of the file")
        raw = data[start + lo:start + hi]
        if raw.data_ptr() % dtype.itemsize:
            raw = raw.clone()  # views of a wider type must be aligned to it
        try:
            state[name] = raw.view(dtype).view(shape) if raw.numel() else torch.empty(shape, dtype=dtype)
        except RuntimeError as e:  # e.g. an empty shape whose other dimensions torch refuses
            raise UserError(f"corrupt checkpoint {path}: tensor {name}: {e}") from None
    if start + end != len(data):
        raise UserError(f"corrupt checkpoint {path}: {len(data) - start - end} bytes after the last tensor")
    return state, metadata
