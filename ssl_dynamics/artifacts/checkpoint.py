"""Checkpoints: deterministic safetensors files, and the one checked way to load a network.

A checkpoint is a safetensors file (no pickled code runs on load) whose header metadata
holds `format`, `schema_version` and `meta` (setup, seed, epoch, backbone, width,
head_dim, the dataset's sha256 and the full setup config): enough to rebuild the network
from the file alone. `load_network(path)` is the only way phase two turns a file into a
network: it checks the file against the sha256 its seed's manifest recorded, rebuilds the
network from the file's own metadata and refuses missing tensors and non-finite weights.
"""
from __future__ import annotations

import functools
import io
import json
import struct
from pathlib import Path
from typing import Any

import torch

from ..config import SCHEMA_VERSION, canonical_json, check_schema
from ..errors import UserError
from .atomic import read_json, sha256_bytes, write_bytes_atomic
from .paths import EPOCH_RE
from .tensorfile import (HEADER_LIMIT, Buffers, expected_size, header_of, implied_size, read_file, safetensors_bytes,
                         tensors_of)

CHECKPOINT_FORMAT = "ssl-dynamics-checkpoint/1"  # written into every checkpoint's metadata
CHECKPOINT_DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # weights' storage type on disk


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile's wrapper, so state-dict keys stay clean."""
    return getattr(model, "_orig_mod", model)


def model_state(model: torch.nn.Module, weight_dtype: torch.dtype | None = None) -> dict:
    """The state dict to save; `weight_dtype` (e.g. bf16) stores the float PARAMETERS in that
    type. BatchNorm running statistics stay fp32: they are tiny and eval mode divides by them."""
    model = unwrap(model)
    state = model.state_dict()
    if weight_dtype is not None:
        params = {name for name, _ in model.named_parameters()}
        state = {k: v.to(weight_dtype) if k in params and v.is_floating_point() else v
                 for k, v in state.items()}
    return state


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict[str, Any],
                    weight_dtype: torch.dtype | None = None) -> str:
    """Weights (and BN buffers) as safetensors with JSON metadata; returns the sha256."""
    metadata = {"format": CHECKPOINT_FORMAT, "schema_version": str(SCHEMA_VERSION),
                "meta": canonical_json(meta)}
    data = safetensors_bytes(model_state(model, weight_dtype), metadata)
    write_bytes_atomic(path, data)
    return sha256_bytes(data)


def _meta(metadata: dict, path: Path) -> dict:
    """The `meta` object of a header's `__metadata__`, or UserError naming what is wrong."""
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"corrupt checkpoint {path}: not a {CHECKPOINT_FORMAT} file")
    check_schema(metadata.get("schema_version"), f"checkpoint {path}")
    try:
        meta = json.loads(metadata.get("meta", "{}"))
    except (json.JSONDecodeError, TypeError):
        raise UserError(f"corrupt checkpoint {path}: its metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise UserError(f"corrupt checkpoint {path}: its metadata is not a JSON object")
    return meta


def parse_checkpoint(data: torch.Tensor, path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, meta) of checkpoint bytes (a uint8 tensor, whose memory the tensors
    view); anything malformed is a UserError naming `path`."""
    path = Path(path)
    state, metadata = tensors_of(data, path)
    return state, _meta(metadata, path)


def check_header(path: str | Path, shapes: dict[str, tuple[int, ...]]) -> dict:
    """Read only a checkpoint's header: its meta, refusing bad metadata and tensors that
    differ from `shapes` (name -> shape of the network it must load into)."""
    path = Path(path)
    header, start = _header(path)
    size, have = implied_size(header, start), path.stat().st_size
    if size is not None and size != have:  # cut short by a failed copy, say: found before any work
        raise UserError(f"corrupt checkpoint {path}: {size_mismatch(have, size)}")
    meta = _meta(header.get("__metadata__", {}), path)
    have = {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    check_shapes(have, shapes, path)
    return meta


def header_meta(path: str | Path) -> tuple[dict, int]:
    """(meta, schema version) of a checkpoint, reading only its header."""
    path = Path(path)
    metadata = _header(path)[0].get("__metadata__", {})
    return _meta(metadata, path), check_schema(metadata.get("schema_version"), f"checkpoint {path}")


def _header(path: Path) -> tuple[dict, int]:
    """(the safetensors header, where the data begins); a UserError for a missing, short or
    malformed file."""
    if not path.is_file():
        raise UserError(f"missing checkpoint {path}")
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        return header_of(head + f.read(min(n, HEADER_LIMIT)), path)  # refuses a short read


def size_mismatch(have: int, size: int) -> str:
    """Why a checkpoint of `have` bytes whose header implies `size` is refused, and what to do."""
    return (f"it is {have} bytes where its header implies {size} (cut short or appended to); "
            f"restore it from a copy, or delete the seed's folder and train it again")


def read_checkpoint_bytes(path: str | Path, buffers: Buffers | None = None) -> torch.Tensor:
    """The file's bytes, a uint8 tensor (in a buffer from `buffers` if given)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing checkpoint {path}")
    return read_file(path, buffers)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta), unverified, the tensors as stored, each owning its memory. No
    pickled code is executed."""
    state, meta = parse_checkpoint(read_checkpoint_bytes(path), path)
    return {k: v.clone() for k, v in state.items()}, meta


def manifest_sha256(path: Path) -> str:
    """The sha256 that the seed's manifest recorded for checkpoint `path`."""
    m = EPOCH_RE.match(path.name)
    manifest = path.parent / "manifest.json"
    if not m or not manifest.is_file():
        raise UserError(f"checkpoint {path} has no manifest.json beside it to verify against "
                        f"(--no-verify skips the check)")
    entry = read_json(manifest, dict).get("checkpoints", {}).get(str(int(m.group(1))))
    if not isinstance(entry, str):
        raise UserError(f"checkpoint {path} is not in its manifest (--no-verify skips the check)")
    return entry


def verified_bytes(path: str | Path, verify: bool = True, buffers: Buffers | None = None) -> torch.Tensor:
    """The file's bytes (uint8 tensor), checked against its manifest's sha256 unless
    verify is False. Refused bytes go back to `buffers`."""
    path = Path(path)
    data = read_checkpoint_bytes(path, buffers)
    try:
        if verify and sha256_bytes(data) != manifest_sha256(path):
            size = expected_size(path)
            if size is not None and size != len(data):  # no option reads a file cut short
                raise UserError(f"corrupt checkpoint {path}: {size_mismatch(len(data), size)}")
            raise UserError(f"corrupt checkpoint {path}: its sha256 differs from the one its manifest "
                            f"recorded (changed after training); restore it from a copy, or delete "
                            f"the seed's folder and train it again (--no-verify reads a file that "
                            f"was changed on purpose)")
    except BaseException:
        if buffers is not None:
            buffers.give(data)
        raise
    return data


def load_network(path: str | Path, verify: bool = True, data: torch.Tensor | None = None):
    """(network in eval mode on the CPU, meta) of one checkpoint, every check passed.

    Checks: the manifest's sha256 (unless `verify` is False), the format and metadata,
    the architecture named by the metadata, every tensor present with its shape, and
    finite weights. `data` passes bytes already read (and verified) by the caller.
    """
    from ..models import build_network

    state, meta = load_weights(path, verify, data)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        net = build_network(meta["backbone"], int(meta["head_dim"]), int(meta["width"]))
    net.load_state_dict(state, assign=True)
    return net.eval(), meta


def load_weights(path: str | Path, verify: bool = True, data: torch.Tensor | None = None,
                 buffers: Buffers | None = None,
                 views: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, meta) of one checkpoint with every check of `load_network`, without
    building the network: `inspect rt`'s loader threads need only the tensors, and
    building a network is ~30 ms of Python that holds the GIL.

    By default the tensors are float32 (integer buffers as stored) and own their memory.
    With `views` they stay in their stored dtype as views into the file's bytes (`data`,
    or a buffer from `buffers` that the caller gives back once done with them): no copy,
    for a copy into a network's parameters right after."""
    path = Path(path)
    state, meta = parse_checkpoint(verified_bytes(path, verify, buffers) if data is None else data, path)
    missing = [k for k in ("backbone", "width", "head_dim") if k not in meta]
    if missing:
        raise UserError(f"corrupt checkpoint {path}: its metadata lacks {', '.join(missing)}")
    try:
        shapes = network_shapes(meta["backbone"], int(meta["head_dim"]), int(meta["width"]))
    except (ValueError, TypeError, RuntimeError) as e:
        raise UserError(f"checkpoint {path}: cannot rebuild its network: {e}") from None
    check_state(state, shapes, path)
    if not views:  # own copies: nothing keeps the file's buffer alive, torch.save works
        state = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
                 for k, v in state.items()}
    return state, meta


@functools.lru_cache(maxsize=16)
def network_shapes(backbone: str, head_dim: int, width: int) -> dict[str, tuple[int, ...]]:
    """The state dict's tensor shapes of a network (built once per architecture, on meta)."""
    from ..models import build_network

    with torch.device("meta"):
        net = build_network(backbone, head_dim, width)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_shapes(have: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """Refuse a checkpoint whose tensors (name -> shape) lack, add or reshape any of `shapes`."""
    lacking, extra = sorted(set(shapes) - set(have)), sorted(set(have) - set(shapes))
    if lacking or extra:
        what = f"lacks {_names(lacking)}" if lacking else f"has unknown tensors {_names(extra)}"
        raise UserError(f"corrupt checkpoint {path}: it {what}")
    wrong = [k for k in shapes if tuple(shapes[k]) != tuple(have[k])]
    if wrong:
        raise UserError(f"corrupt checkpoint {path}: {wrong[0]} has shape {have[wrong[0]]}, "
                        f"the network needs {tuple(shapes[wrong[0]])}")


def check_state(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """Refuse gaps, extras, wrong shapes and NaN/inf in a checkpoint's tensors."""
    check_shapes({k: tuple(t.shape) for k, t in state.items()}, shapes, path)
    floats = [(k, t) for k, t in state.items() if t.is_floating_point() and t.numel()]
    if not floats:
        return
    # A sum is NaN or inf if any term is (one pass at memory speed, ~10x faster than a
    # max |x| on the CPU); only a tensor whose sum is not finite, which huge finite
    # weights can also give by overflowing, gets the exact check.
    sums = torch.stack([t.sum(dtype=torch.float32) for _, t in floats])
    for i in torch.nonzero(~torch.isfinite(sums)).flatten().tolist():
        name, t = floats[i]
        if not torch.isfinite(t).all():
            raise UserError(f"checkpoint {path} has non-finite weights (NaN/inf) in {name}")


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def save_resume(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def resume_epoch(path: str | Path) -> int | None:
    """The epoch a resume file was written for, without reading its tensors (memory-mapped);
    None when it is absent or unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else None


def load_resume(path: str | Path) -> dict[str, Any] | None:
    """The resume state, or None when the file is unreadable or not a resume state (an epoch
    number, an optimizer state, and if present the checkpoint's sha256 and a model state):
    the caller decides what then."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(state, dict):
        return None
    epoch, optimizer = state.get("epoch"), state.get("optimizer")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
        return None
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)):
        return None
    if not isinstance(state.get("checkpoint_sha256", ""), str) or \
            not isinstance(state.get("model", {}), dict):
        return None
    return state
