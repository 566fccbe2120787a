"""The bank: K probe images and M replays of each augmentation, built once, stored.

Every checkpoint of every seed is evaluated on exactly these inputs. The views are made
with the phase-one augmentation code (`augment.sample_params` / `apply_params`) from a
fixed generator and stored as float32 next to their parameters, so a later machine, a
later library version or another shard evaluates the very same pixels.

    bank.h5
      attrs: schema_version, n_probe (K), n_replays (M), seed, simclr_batch, dataset_sha256,
             fingerprint (sha256 of indices, labels and all views)
      probe_indices [K], labels [K]
      <kind>/views  float32 [M_kind, K, V, 3, H, W]   V = 2 views for simclr, else 1
      <kind>/params/<name> [M_kind, K*V]              the drawn augmentation parameters
      <kind>.attrs: fingerprint

`none` is a point mass (normalize only), so it stores a single replay.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..augment import apply_params, make_generator, sample_params
from ..config import SCHEMA_VERSION
from ..errors import UserError

DEFAULT_PROBES = 1024  # K: the thesis's probe set size
DEFAULT_REPLAYS = 10  # M: augmentations per image
DEFAULT_BANK_SEED = 0
DEFAULT_SIMCLR_BATCH = 256  # B: SimCLR correctness is within fixed batches of B images
VIEWS_PER_IMAGE = {"simclr": 2, "supervised": 1, "none": 1}


@dataclass(frozen=True)
class Bank:
    probe_indices: np.ndarray  # [K]
    labels: np.ndarray  # [K]
    views: dict[str, np.ndarray]  # kind -> float32 [M, K, V, 3, H, W]
    fingerprints: dict[str, str]
    seed: int
    simclr_batch: int
    dataset_sha256: str
    fingerprint: str

    @property
    def n_probe(self) -> int:
        return len(self.probe_indices)


def choose_probes(n_train: int, k: int, seed: int) -> np.ndarray:
    """K distinct training indices, a seeded draw (kept in drawn order: it fixes the batches)."""
    if k < 1:
        raise UserError("the probe set needs at least one image")
    k = min(k, n_train)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g)[:k].numpy().astype(np.int64)


def replay_views(kind: str, images: torch.Tensor, n_replays: int, seed: int) -> tuple[np.ndarray, dict]:
    """[M, K, V, 3, H, W] views of uint8 images [K, 3, H, W] and their parameters."""
    v = VIEWS_PER_IMAGE[kind]
    m = 1 if kind == "none" else n_replays
    x = images.repeat_interleave(v, dim=0)  # views 2k, 2k+1 come from image k
    views, params = [], {}
    for j in range(m):
        p = sample_params(kind, len(x), make_generator(seed, "bank", kind, j), x.shape[-1])
        views.append(apply_params(kind, x, p).reshape(len(images), v, *x.shape[1:]).numpy())
        for name, t in p.items():
            params.setdefault(name, []).append(t.numpy())
    return np.stack(views).astype(np.float32), {k: np.stack(a) for k, a in params.items()}


def _hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def build_bank(path: str | Path, train_x: torch.Tensor, train_y: torch.Tensor, kinds: list[str],
               dataset_sha256: str, n_probe: int = DEFAULT_PROBES, n_replays: int = DEFAULT_REPLAYS,
               seed: int = DEFAULT_BANK_SEED, simclr_batch: int = DEFAULT_SIMCLR_BATCH) -> Bank:
    """Build and atomically write the bank for the given augmentation kinds."""
    import h5py

    idx = choose_probes(len(train_x), n_probe, seed)
    images = train_x[torch.from_numpy(idx)]
    labels = train_y[torch.from_numpy(idx)].numpy()
    views, fps = {}, {}
    with art.atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("probe_indices", data=idx)
            f.create_dataset("labels", data=labels)
            for kind in sorted(set(kinds)):
                v, params = replay_views(kind, images, n_replays, seed)
                g = f.create_group(kind)
                # one chunk per replay: evaluation reads whole replays
                g.create_dataset("views", data=v, chunks=(1, *v.shape[1:]))
                for name, arr in params.items():
                    g.create_dataset(f"params/{name}", data=arr)
                fps[kind] = _hash(idx, labels, v)
                g.attrs["fingerprint"] = fps[kind]
                views[kind] = v
            fingerprint = _hash(np.frombuffer("".join(fps[k] for k in sorted(fps)).encode(), np.uint8))
            f.attrs.update({"schema_version": SCHEMA_VERSION, "n_probe": len(idx),
                            "n_replays": n_replays, "seed": seed, "simclr_batch": simclr_batch,
                            "dataset_sha256": dataset_sha256, "fingerprint": fingerprint})
    return Bank(idx, labels, views, fps, seed, simclr_batch, dataset_sha256, fingerprint)


def load_bank(path: str | Path) -> Bank:
    import h5py

    path = Path(path)
    if not path.exists():
        raise UserError(f"no bank at {path}: run `inspect rt` first")
    try:
        with h5py.File(path, "r") as f:
            kinds = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
            return Bank(
                probe_indices=f["probe_indices"][:], labels=f["labels"][:],
                views={k: f[f"{k}/views"][:] for k in kinds},
                fingerprints={k: str(f[k].attrs["fingerprint"]) for k in kinds},
                seed=int(f.attrs["seed"]), simclr_batch=int(f.attrs["simclr_batch"]),
                dataset_sha256=str(f.attrs["dataset_sha256"]), fingerprint=str(f.attrs["fingerprint"]),
            )
    except (OSError, KeyError) as e:
        raise UserError(f"corrupt bank {path}: {e}") from None


def resolve_settings(path: str | Path, kinds: list[str], n_train: int, dataset_sha256: str,
                     n_probe: int | None = None, n_replays: int | None = None,
                     seed: int | None = None, simclr_batch: int | None = None) -> dict:
    """Bank settings: those of an existing bank (refusing any that contradict it), else defaults."""
    import h5py

    given = {"n_probe": n_probe, "n_replays": n_replays, "seed": seed, "simclr_batch": simclr_batch}
    defaults = {"n_probe": DEFAULT_PROBES, "n_replays": DEFAULT_REPLAYS, "seed": DEFAULT_BANK_SEED,
                "simclr_batch": DEFAULT_SIMCLR_BATCH}
    path = Path(path)
    if not path.exists():
        return {k: defaults[k] if v is None else v for k, v in given.items()}
    try:
        with h5py.File(path, "r") as f:
            a = {k: int(f.attrs[k]) for k in defaults}
            have_sha = str(f.attrs["dataset_sha256"])
            missing = [k for k in kinds if k not in f]
    except (OSError, KeyError) as e:
        raise UserError(f"corrupt bank {path}: {e}") from None
    if n_probe is not None:
        given["n_probe"] = min(n_probe, n_train)
    diffs = [f"{k} {a[k]} != {v}" for k, v in given.items() if v is not None and a[k] != v]
    if have_sha != dataset_sha256:
        diffs.append("dataset")
    if diffs:
        raise UserError(f"{path} was built with other settings ({'; '.join(diffs)}); "
                        f"drop those options to use it, or pass --bank with a new path")
    if missing:
        raise UserError(f"{path} has no replays for augmentation {', '.join(missing)}; "
                        f"pass --bank with a new path to build a complete one")
    return a
