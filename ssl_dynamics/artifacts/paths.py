"""Where everything of one run directory lives: the only place that spells its file names.

    <run>/run.json                                   shared config + provenance
    <run>/random_labels.npy                          the one label permutation (all seeds)
    <run>/checkpoints/<setup>/setup.json             resolved config of the setup
    <run>/checkpoints/<setup>/seed-SS/epoch-EEEE.safetensors   weights, epoch 0 = init
    <run>/checkpoints/<setup>/seed-SS/resume.pt      optimizer + epoch (weights_only loadable)
    <run>/checkpoints/<setup>/seed-SS/metrics.jsonl  one JSON line per epoch
    <run>/checkpoints/<setup>/seed-SS/manifest.json  sha256 of every checkpoint + status
    <run>/inspect/...                                phase two's default work folder
    <run>/jobs/<stamp>.json, <run>/jobs/<stamp>/     cluster submissions: record, job logs
    <run>/logs/<stamp>/worker-K-<device>.log         output of `train run --devices` workers
"""
from __future__ import annotations

import re
from pathlib import Path

EPOCH_RE = re.compile(r"^epoch-(\d{4,})\.safetensors$")
SEED_RE = re.compile(r"^seed-(\d{2,})$")


class RunPaths:
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

    @property
    def lock(self) -> Path:
        """Held while run.json, setup.json and the label permutation are created or checked."""
        return self.root / ".run.lock"

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

    def seed_lock(self, setup: str, seed: int) -> Path:
        """Held by the one worker that trains this (setup, seed)."""
        return self.seed_dir(setup, seed) / ".train.lock"

    @property
    def inspect(self) -> Path:
        return self.root / "inspect"

    @property
    def jobs(self) -> Path:
        """Records of cluster submissions (`train submit`) and the jobs' own logs."""
        return self.root / "jobs"

    @property
    def logs(self) -> Path:
        """Per-worker logs of `train run --devices`."""
        return self.root / "logs"

    def setups(self) -> list[str]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(p.name for p in self.checkpoints.iterdir() if (p / "setup.json").exists())

    def unconfigured(self) -> list[str]:
        """Setup folders whose seeds hold a manifest or checkpoints but that have no setup.json
        (deleted, or a partial copy). Seed folders holding only their lock (what a change of
        untrained settings leaves) do not count."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p.name for p in self.checkpoints.iterdir()
                      if p.is_dir() and not (p / "setup.json").exists()
                      and any(self.manifest(p.name, s).exists() or self.epochs(p.name, s)
                              for s in self.seeds(p.name)))

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
