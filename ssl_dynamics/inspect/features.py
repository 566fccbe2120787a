"""Representations, extracted once per (setup, seed, epoch) and cached.

The representation is the D-d input of the last linear layer (`Network.features`; D = 8 x
width, 512 at the thesis's width 64) of every train and test image without augmentation:
each setup sees its images the way its
training pipeline delivered them minus the randomness ([0, 1] for SimCLR, normalized for
the others). Probes, t-SNE and KL read the cache, never the checkpoints again.

    <work>/features.zarr/<setup>/seed-SS/epoch-EEEE/{train,test}  float32 [N, D]
                          (attrs: complete, checkpoint_sha256)

A cached entry counts only once its `complete` attribute is set, after both arrays are
written, so an interrupted extraction is redone; an entry whose recorded checkpoint
sha256 is not the manifest's (the checkpoint was replaced) is extracted again, with or
without --no-verify (which skips only hashing the checkpoint file), and so is an entry
whose metadata or arrays cannot be read. The cache is opened on first use; a damaged root
is one line naming it.
Epoch 0 of any setup is a randomly initialised network: the "random init" baseline.
"""
from __future__ import annotations

import shutil

import numpy as np
import torch

from .. import artifacts as art
from ..augment import normalize, to_float
from ..data import Dataset
from ..errors import UserError
from .workspace import Workspace

FEATURE_BATCH = 1024  # images per forward pass during extraction
# Table B.1 and Figs 5.1, 5.2, 5.4 use longer-trained models than the dynamics runs
# (thesis section 5.1: SimCLR 200, supervised 200, random labels 30, with augmentation 500).
THESIS_EPOCHS = {"simclr": 200, "supervised": 200, "random_labels": 30, "random_labels_aug": 500}


# Augmentations whose pipeline feeds [0, 1] pixels without normalization (the thesis: SimCLR's
# views and the no-augmentation setup); every other one normalizes with the CIFAR mean/std.
RAW_INPUT = ("simclr", "none")


def eval_transform(augment: str):
    """The deterministic part of a setup's training pipeline."""
    return to_float if augment in RAW_INPUT else (lambda x: normalize(to_float(x)))


@torch.no_grad()
def extract(model: torch.nn.Module, images: torch.Tensor, augment: str, device: str,
            batch: int = FEATURE_BATCH) -> np.ndarray:
    from ..devices import exact_fp32

    model = model.to(device).eval()
    tf = eval_transform(augment)
    with exact_fp32(device, False):  # fp32 on a GPU without TF32, as `inspect rt`
        out = [model.features(tf(images[i:i + batch].to(device))).float().cpu()
               for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


class FeatureCache:
    def __init__(self, ws: Workspace, device: str = "cpu", data: dict | None = None,
                 verify: bool = True, echo=print):
        self.ws, self.run = ws, ws.run
        self.cfg, self.paths = ws.run.cfg, ws.run.paths
        self.device, self.verify, self.echo = device, verify, echo
        self.data = data or {}
        self._group = None
        self._dataset: Dataset | None = None

    @property
    def group(self):
        """The cache's root group, opened (made) on first use: a damaged root is a UserError
        naming it, raised inside the analysis that reads the cache, not before."""
        if self._group is None:
            import zarr

            path = self.ws.features
            try:
                self._group = zarr.open_group(str(path), mode="a")
            except Exception as e:  # noqa: BLE001  (zarr and json raise many kinds)
                raise UserError(f"damaged representation cache {path}: its metadata cannot be read "
                                f"({type(e).__name__}); it only caches features: remove it to "
                                f"extract them again") from None
        return self._group

    @property
    def dataset(self) -> Dataset:
        """The run's dataset, checked against its recorded checksum (loaded on first use)."""
        if self._dataset is None:
            self._dataset = self.run.load_dataset(self.data.get("dataset"), self.data.get("data_root"))
        return self._dataset

    def seeds_with(self, setup: str, epoch: int) -> list[int]:
        return [s for s in self.cfg.seeds if self.paths.checkpoint(setup, s, epoch).exists()]

    def get(self, setup: str, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(train [N, D], test [N_test, D]) features, extracting them on first use."""
        key = f"{setup}/seed-{seed:02d}/epoch-{epoch:04d}"
        ckpt = self.paths.checkpoint(setup, seed, epoch)
        cached = self._cached(key, self._checkpoint_sha(ckpt))
        if cached is not None:
            return cached
        data = art.verified_bytes(ckpt, self.verify)
        net, _ = art.load_network(ckpt, verify=False, data=data)
        augment = self.cfg.setups[setup].augment
        self.echo(f"extracting representations: {setup} seed {seed} epoch {epoch}")
        train = extract(net, self.dataset.train_x, augment, self.device)
        test = extract(net, self.dataset.test_x, augment, self.device)
        g = self.group.require_group(key)
        g.attrs["complete"] = False
        for name, arr in (("train", train), ("test", test)):
            g.create_array(name, data=arr, chunks=(min(len(arr), 8192), arr.shape[1]), overwrite=True)
        g.update_attributes({"complete": True, "checkpoint_sha256": art.sha256_bytes(data)})  # one write
        return train, test

    def _checkpoint_sha(self, ckpt) -> str:
        """The sha256 the cached entry must record: the manifest's, always (--no-verify skips
        only hashing the file); the file's own when --no-verify meets a checkpoint that its
        manifest does not list."""
        try:
            return art.manifest_sha256(ckpt)
        except UserError:
            if self.verify:
                raise
            return art.sha256_file(ckpt)

    def _cached(self, key: str, want: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The entry's arrays when it is complete and made from checkpoint `want`; None
        otherwise. A damaged entry is removed (it is extracted again)."""
        try:
            if key not in self.group or not self.group[key].attrs.get("complete"):
                return None
            g = self.group[key]
            if g.attrs.get("checkpoint_sha256") != want:
                self.echo(f"{key}: the checkpoint changed since its features were cached; extracting again")
                return None
            return g["train"][:], g["test"][:]
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  (zarr, json and numpy raise many kinds)
            self.echo(f"{key}: damaged cached features ({type(e).__name__}); extracting again")
            shutil.rmtree(self.ws.features / key, ignore_errors=True)
            return None


def resolve_epoch(run: art.Run, setup: str, epoch: int | None) -> tuple[int, str]:
    """`--epoch` for one setup and how it was chosen.

    Default: the thesis's epoch for the representation analyses (THESIS_EPOCHS) when the
    run has it for some seed (e.g. after `train extend`), else the setup's last epoch.
    """
    last = run.cfg.setups[setup].epochs
    if epoch is not None:
        top = max([last] + [max(run.paths.epochs(setup, s) or [0]) for s in run.cfg.seeds])
        if not 0 <= epoch <= top:
            raise UserError(f"{setup} has epochs 0-{top}, not {epoch}")
        return epoch, "asked for"
    thesis = THESIS_EPOCHS.get(setup)
    if thesis is not None and thesis != last and any(
            run.paths.checkpoint(setup, s, thesis).exists() for s in run.cfg.seeds):
        return thesis, "the thesis's epoch"
    if thesis is None or thesis == last:
        return last, "last epoch of the run"
    how = f": `train extend {run.paths.root} --setup {setup} --to {thesis}` makes it" if thesis > last else ""
    return last, f"last epoch of the run (the thesis used {thesis}{how})"
