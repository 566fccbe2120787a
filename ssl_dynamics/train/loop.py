"""Training one (setup, seed): a checkpoint after every epoch, resumable after a kill.

Randomness is derived, never carried: the initial weights from (seed, "init"), the
shuffling of epoch e from (seed, e, "shuffle") and the views of batch b from
(seed, e, b, "views"). A restarted run therefore needs only the last weights, the
optimizer state and the epoch to continue exactly where it stopped.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .. import artifacts as art
from ..augment import make_generator
from ..config import RunConfig, SetupConfig
from ..errors import UserError
from ..models import Network, build_network
from .schedules import learning_rate
from .setups import objective_for


@dataclass(frozen=True)
class TrainOptions:
    """How to run (not what to compute): none of this changes the science in fp32."""

    device: str = "cpu"
    bf16: bool = False  # autocast matmuls/convs to bfloat16 (GPU)
    channels_last: bool = False  # NHWC memory format (faster convs on tensor cores)
    deterministic: bool = False  # torch.use_deterministic_algorithms + no cudnn autotune


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}: use auto, cpu or cuda")
    return name


def set_determinism(on: bool) -> None:
    torch.use_deterministic_algorithms(on, warn_only=False)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on


def init_network(run: RunConfig, setup: SetupConfig, seed: int) -> Network:
    """The epoch-0 network of a seed: built under a forked RNG seeded from (seed, "init")."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(make_generator(seed, "init").initial_seed())
        return build_network(run.backbone, setup.head_dim, run.width)


def build_optimizer(model: torch.nn.Module, cfg: SetupConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def batches_per_epoch(n: int, cfg: SetupConfig) -> int:
    bs = min(cfg.batch_size, n)
    return n // bs if cfg.drop_last else -(-n // bs)


def checkpoint_meta(run: RunConfig, setup: SetupConfig, seed: int, epoch: int,
                    dataset_sha: str) -> dict:
    """What a checkpoint file says about itself: enough to rebuild the network."""
    return {"setup": setup.name, "seed": seed, "epoch": epoch, "backbone": run.backbone,
            "width": run.width, "head_dim": setup.head_dim, "dataset_sha256": dataset_sha,
            "setup_config": setup.to_dict()}


def train_seed(paths: art.RunPaths, run: RunConfig, setup: SetupConfig, seed: int,
               train_x: torch.Tensor, targets: torch.Tensor, dataset_sha: str,
               opts: TrainOptions, on_batch: Callable[[], None] | None = None,
               on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train one seed to `setup.epochs`, resuming from its last completed epoch.

    train_x: uint8 [N, 3, H, W] and targets [N] already on opts.device.
    Returns the manifest. `on_epoch(epoch, metrics)` runs after each epoch is on disk.
    """
    dev = torch.device(opts.device)
    set_determinism(opts.deterministic)
    objective = objective_for(setup)
    model = init_network(run, setup, seed)
    optimizer = build_optimizer(model, setup)
    art.remove_stale_temps(paths.seed_dir(setup.name, seed))
    manifest_path = paths.manifest(setup.name, seed)
    manifest = (art.read_json(manifest_path) if manifest_path.exists() else
                {"setup": setup.name, "seed": seed, "epochs": setup.epochs, "complete": False,
                 "checkpoints": {}})
    start = 0
    resume_path = paths.resume(setup.name, seed)
    if resume_path.exists():
        state = art.load_resume(resume_path)
        start = int(state["epoch"])
        ckpt = paths.checkpoint(setup.name, seed, start)
        weights, _ = art.load_checkpoint(ckpt)
        if manifest["checkpoints"].get(str(start)) != art.sha256_file(ckpt):
            raise UserError(f"corrupt checkpoint {ckpt}: its sha256 differs from the manifest")
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
    model.to(dev)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    _move_optimizer_state(optimizer, dev)
    if not resume_path.exists():
        sha = art.save_checkpoint(paths.checkpoint(setup.name, seed, 0), model,
                                  checkpoint_meta(run, setup, seed, 0, dataset_sha))
        manifest["checkpoints"] = {"0": sha}
        art.write_json_atomic(manifest_path, manifest)
        _save_resume(paths, setup, seed, optimizer, 0)
        _rewrite_metrics(paths, setup, seed, upto=0, new=None)

    n = len(train_x)
    bs = min(setup.batch_size, n)
    nb = batches_per_epoch(n, setup)
    for epoch in range(start + 1, setup.epochs + 1):
        lr = learning_rate(setup, epoch - 1, nb)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=make_generator(seed, epoch, "shuffle")).to(dev)
        loss_sum = torch.zeros((), device=dev)
        correct_sum = torch.zeros((), device=dev)
        seen = 0
        for b in range(nb):
            idx = order[b * bs:(b + 1) * bs]
            views = objective.views(train_x[idx], make_generator(seed, epoch, b, "views"))
            if opts.channels_last:
                views = views.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opts.bf16):
                out = model(views)["out"]
            loss, correct = objective.loss(out, targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(correct)
            correct_sum += correct.sum()
            seen += len(correct)
            if on_batch:
                on_batch()
        seconds = time.perf_counter() - t0
        metrics = {"epoch": epoch, "loss": float(loss_sum) / seen, "train_acc": float(correct_sum) / seen,
                   "lr": lr, "seconds": round(seconds, 4),
                   "images_per_s": round(nb * bs / max(seconds, 1e-9), 1)}
        if not torch.isfinite(loss_sum):
            raise UserError(f"{setup.name} seed {seed}: loss became {float(loss_sum)} at epoch "
                            f"{epoch}; lower the learning rate")
        sha = art.save_checkpoint(paths.checkpoint(setup.name, seed, epoch), model,
                                  checkpoint_meta(run, setup, seed, epoch, dataset_sha))
        _rewrite_metrics(paths, setup, seed, upto=epoch - 1, new=metrics)
        manifest["checkpoints"][str(epoch)] = sha
        manifest["complete"] = epoch == setup.epochs
        art.write_json_atomic(manifest_path, manifest)
        _save_resume(paths, setup, seed, optimizer, epoch)  # last: it commits the epoch
        if on_epoch:
            on_epoch(epoch, metrics)
    return manifest


def _save_resume(paths, setup, seed, optimizer, epoch: int) -> None:
    art.save_resume(paths.resume(setup.name, seed), {
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        # The data order and the views are derived from (seed, epoch, batch); this says how.
        "rng": {"scheme": "SeedSequence(seed, epoch, 'shuffle') / (seed, epoch, batch, 'views')"},
        "torch_rng_state": torch.get_rng_state(),
    })


def _move_optimizer_state(optimizer: torch.optim.Optimizer, dev: torch.device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(dev)


def _rewrite_metrics(paths, setup, seed, upto: int, new: dict | None) -> None:
    """Keep the lines of epochs <= upto (drops lines of an epoch redone after a kill)."""
    path = paths.metrics(setup.name, seed)
    lines = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["epoch"] <= upto:
                    lines.append(line)
            except (json.JSONDecodeError, KeyError):
                continue
    if new is not None:
        lines.append(json.dumps(new, sort_keys=True))
    art.write_bytes_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode())
