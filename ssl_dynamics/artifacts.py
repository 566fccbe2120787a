"""The run directory: the contract between phase one and phase two.

    <run>/run.json                                   shared config + provenance
    <run>/random_labels.npy                          the one label permutation (all seeds)
    <run>/checkpoints/<setup>/setup.json             resolved config of the setup
    <run>/checkpoints/<setup>/seed-SS/epoch-EEEE.safetensors   weights, epoch 0 = init
    <run>/checkpoints/<setup>/seed-SS/resume.pt      optimizer + epoch (weights_only loadable)
    <run>/checkpoints/<setup>/seed-SS/metrics.jsonl  one JSON line per epoch
    <run>/checkpoints/<setup>/seed-SS/manifest.json  sha256 of every checkpoint + status
    <run>/inspect/...                                phase two (see inspect/)

Every write goes to a temporary file in the same folder, is fsynced, then renamed over
the target, so a kill leaves either the old file or the new one, never a partial one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from .config import SCHEMA_VERSION, canonical_json
from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it
CHECKPOINT_FORMAT = "ssl-dynamics-checkpoint/1"  # written into every checkpoint's metadata
EPOCH_RE = re.compile(r"^epoch-(\d{4,})\.safetensors$")
SEED_RE = re.compile(r"^seed-(\d{2,})$")


# --------------------------------------------------------------------------- atomic I/O

@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success fsync it and rename over target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temporary files a killed writer left behind (one writer per folder)."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else []:
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: str | Path, obj: Any) -> None:
    write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"corrupt JSON file {path}: {e.msg} at line {e.lineno}") from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- paths

class RunPaths:
    """Where everything of one run lives; the only place that spells file names."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def random_labels(self) -> Path:
        return self.root / "random_labels.npy"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def setup_dir(self, setup: str) -> Path:
        return self.checkpoints / setup

    def setup_json(self, setup: str) -> Path:
        return self.setup_dir(setup) / "setup.json"

    def seed_dir(self, setup: str, seed: int) -> Path:
        return self.setup_dir(setup) / f"seed-{seed:02d}"

    def checkpoint(self, setup: str, seed: int, epoch: int) -> Path:
        return self.seed_dir(setup, seed) / f"epoch-{epoch:04d}.safetensors"

    def resume(self, setup: str, seed: int) -> Path:
        return self.seed_dir(setup, seed) / "resume.pt"

    def metrics(self, setup: str, seed: int) -> Path:
        return self.seed_dir(setup, seed) / "metrics.jsonl"

    def manifest(self, setup: str, seed: int) -> Path:
        return self.seed_dir(setup, seed) / "manifest.json"

    @property
    def inspect(self) -> Path:
        return self.root / "inspect"

    def setups(self) -> list[str]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(p.name for p in self.checkpoints.iterdir() if (p / "setup.json").exists())

    def seeds(self, setup: str) -> list[int]:
        d = self.setup_dir(setup)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := SEED_RE.match(p.name)))

    def epochs(self, setup: str, seed: int) -> list[int]:
        d = self.seed_dir(setup, seed)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := EPOCH_RE.match(p.name)))


# --------------------------------------------------------------------------- checkpoints

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                      torch.uint8: "U8", torch.bool: "BOOL"}


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


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> str:
    """Weights (and BN buffers) as safetensors with JSON metadata; returns the sha256."""
    metadata = {"format": CHECKPOINT_FORMAT, "schema_version": str(SCHEMA_VERSION),
                "meta": canonical_json(meta)}
    data = safetensors_bytes(unwrap(model).state_dict(), metadata)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta). No pickled code is executed. Corrupt files raise UserError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise UserError(f"missing checkpoint {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for truncated/garbled files
        raise UserError(f"corrupt checkpoint {path}: {type(e).__name__}") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"corrupt checkpoint {path}: not a {CHECKPOINT_FORMAT} file")
    return state, json.loads(metadata.get("meta", "{}"))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile's wrapper, so state-dict keys stay clean."""
    return getattr(model, "_orig_mod", model)


def save_resume(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_resume(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"corrupt resume state {path}: {type(e).__name__}; delete it to restart "
                        f"that seed from its last checkpoint") from None
