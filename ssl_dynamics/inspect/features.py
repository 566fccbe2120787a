"""Representations, extracted once per (setup, seed, epoch) and cached.

The representation is the 512-d input of the last linear layer (`Network.features`) of
every train and test image without augmentation: each setup sees its images the way its
training pipeline delivered them minus the randomness ([0, 1] for SimCLR, normalized for
the others). Probes, t-SNE and KL read the cache, never the checkpoints again.

    <run>/inspect/features.zarr/<setup>/seed-SS/epoch-EEEE/{train,test}  float32 [N, D]
                                 (attrs: complete, checkpoint sha256)

A cached entry counts only once its `complete` attribute is set, after both arrays are
written, so an interrupted extraction is redone. Epoch 0 of any setup is a randomly
initialised network: the "random init" baseline of Table B.1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..augment import normalize, to_float
from ..config import RunConfig
from ..data import Dataset, load_dataset
from ..errors import UserError
from ..models import build_network
from ..train.grid import load_run_config

FEATURE_BATCH = 1024  # images per forward pass during extraction


def eval_transform(augment: str):
    """The deterministic part of a setup's training pipeline."""
    return to_float if augment == "simclr" else (lambda x: normalize(to_float(x)))


@torch.no_grad()
def extract(model: torch.nn.Module, images: torch.Tensor, augment: str, device: str,
            batch: int = FEATURE_BATCH) -> np.ndarray:
    model = model.to(device).eval()
    tf = eval_transform(augment)
    out = [model.features(tf(images[i:i + batch].to(device))).float().cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


class FeatureCache:
    def __init__(self, run_dir: str | Path, device: str = "cpu", data_root: str | None = None,
                 echo=print):
        import zarr

        self.run_dir = Path(run_dir)
        self.paths = art.RunPaths(run_dir)
        self.cfg, self.meta = load_run_config(run_dir)
        if data_root:
            from dataclasses import replace

            self.cfg = replace(self.cfg, data_root=str(data_root))
        self.device = device
        self.echo = echo
        self.group = zarr.open_group(str(self.paths.inspect / "features.zarr"), mode="a")
        self._dataset: Dataset | None = None

    @property
    def dataset(self) -> Dataset:
        """The run's dataset, checked against its recorded checksum (loaded on first use)."""
        if self._dataset is None:
            c = self.cfg
            ds = load_dataset(c.dataset, c.data_root, c.train_subset, c.subset_seed, download=False)
            if ds.identity()["sha256"] != self.meta["dataset"]["sha256"]:
                raise UserError(f"the dataset {c.dataset} found here differs from the one "
                                f"{self.run_dir} was trained on; pass --data-root to the original")
            self._dataset = ds
        return self._dataset

    def seeds_with(self, setup: str, epoch: int) -> list[int]:
        return [s for s in self.cfg.seeds if self.paths.checkpoint(setup, s, epoch).exists()]

    def get(self, setup: str, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(train [N, D], test [N_test, D]) features, extracting them on first use."""
        key = f"{setup}/seed-{seed:02d}/epoch-{epoch:04d}"
        ckpt = self.paths.checkpoint(setup, seed, epoch)
        if key in self.group and self.group[key].attrs.get("complete"):
            g = self.group[key]
            return g["train"][:], g["test"][:]
        state, _ = art.load_checkpoint(ckpt)
        sc = self.cfg.setups[setup]
        net = build_network(self.cfg.backbone, sc.head_dim, self.cfg.width)
        net.load_state_dict(state)
        self.echo(f"extracting representations: {setup} seed {seed} epoch {epoch}")
        train = extract(net, self.dataset.train_x, sc.augment, self.device)
        test = extract(net, self.dataset.test_x, sc.augment, self.device)
        g = self.group.require_group(key)
        g.attrs["complete"] = False
        for name, arr in (("train", train), ("test", test)):
            g.create_array(name, data=arr, chunks=(min(len(arr), 8192), arr.shape[1]), overwrite=True)
        g.attrs.update({"complete": True, "checkpoint_sha256": art.sha256_file(ckpt)})
        return train, test


def resolve_epoch(cfg: RunConfig, setup: str, epoch: int | None) -> int:
    """`--epoch` for one setup: default its last; an epoch it lacks is a one-line error."""
    last = cfg.setups[setup].epochs
    if epoch is None:
        return last
    if not 0 <= epoch <= last:
        raise UserError(f"{setup} has epochs 0-{last}, not {epoch}")
    return epoch
