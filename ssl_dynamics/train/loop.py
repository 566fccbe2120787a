"""Training one (setup, seed): a checkpoint after every epoch, resumable after a kill.

Randomness is derived, never carried: the initial weights from (seed, "init"), the
shuffling of epoch e from (seed, e, "shuffle") and the views of batch b from
(seed, e, b, "views"). A restarted run therefore needs only the last weights, the
optimizer state and the epoch to continue exactly where it stopped.

An epoch is committed by writing, in order: its checkpoint, metrics.jsonl, resume.pt (which
names the checkpoint's sha256), then manifest.json. The manifest is what `train status` and
phase two read, so an epoch becomes visible only once everything needed to continue from it
is on disk. A kill before resume.pt redoes the epoch (a redone epoch writes the same bytes
with deterministic kernels); a kill between resume.pt and the manifest is rolled forward at
the next start: the checkpoint is checked against the sha256 in resume.pt and entered in
the manifest, and nothing is retrained.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .. import artifacts as art
from ..augment import make_generator
from ..config import RunConfig, SetupConfig
from ..devices import exact_fp32, resolve_device  # noqa: F401  (resolve_device: re-exported for callers)
from ..errors import UserError
from ..models import Network, build_network
from ..objectives import objective_for
from .options import TrainOptions, TrainRequest, parse_pack  # noqa: F401  (re-exported)
from .schedules import learning_rate


# cuBLAS is deterministic only with a fixed workspace; torch releases before 2.14 refuse a
# deterministic matmul on a GPU without this setting (":4096:8" is the one CUDA documents).
CUBLAS_WORKSPACE = ":4096:8"


def set_determinism(on: bool) -> None:
    if on:  # read when cuBLAS first runs: set before any matmul of this process
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
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


@dataclass
class SeedState:
    """Everything of one seed that lives across epochs."""

    setup: SetupConfig
    seed: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    manifest: dict
    epoch: int  # last committed epoch
    checkpoint_dtype: str = "fp32"  # storage type of the seed's saved weights


def open_seed(paths: art.RunPaths, run: RunConfig, setup: SetupConfig, seed: int,
              dataset_sha: str, opts: TrainOptions) -> SeedState:
    """The seed's state on opts.device: resumed from disk, or initialised (epoch 0 committed)."""
    model = init_network(run, setup, seed)
    optimizer = build_optimizer(model, setup)
    art.remove_stale_temps(paths.seed_dir(setup.name, seed))
    manifest_path = paths.manifest(setup.name, seed)
    if not manifest_path.exists():  # checked before any write too (prepare.check_manifests)
        from .prepare import check_manifests

        check_manifests(paths, [(setup.name, seed)])
    manifest = (art.read_manifest(manifest_path) if manifest_path.exists() else
                {"setup": setup.name, "seed": seed, "epochs": setup.epochs, "complete": False,
                 "checkpoints": {}})
    start = _resume(paths, setup, seed, model, optimizer, manifest)
    model.to(torch.device(opts.device))
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    _move_optimizer_state(optimizer, torch.device(opts.device))
    # a seed keeps its checkpoints' dtype; a new seed takes its setup's (an archive stays one dtype)
    dtype = opts.checkpoint_dtype or (seed_checkpoint_dtype(paths, setup.name, seed, manifest) if start is not None
                                      else next(iter(checkpoint_dtypes(paths, setup.name).values()), "fp32"))
    state = SeedState(setup, seed, model, optimizer, manifest, start, dtype)
    if start is None:
        state.epoch = 0
        commit_epoch(paths, run, state, dataset_sha, opts, metrics=None)
    return state


def aim(state: SeedState, until: int | None) -> None:
    """Record in the manifest (with the next commit) the farthest epoch an extension beyond
    the planned ones was asked to reach, so `train status` can tell one that was cut short."""
    if until is not None and until > state.setup.epochs:
        before = state.manifest.get("extend_target")
        state.manifest["extend_target"] = max(until, before if isinstance(before, int) else 0)


def checkpoint_dtypes(paths: art.RunPaths, setup: str, seeds=None) -> dict[int, str]:
    """seed -> storage type of its checkpoints as its manifest records it, for the seeds of
    `seeds` (default: the setup's seed folders) whose readable manifest records one (read
    from the manifests alone: no checkpoint is opened, a damaged manifest is passed over)."""
    out = {}
    for seed in paths.seeds(setup) if seeds is None else seeds:
        try:
            dtype = recorded_checkpoint_dtype(art.read_manifest(paths.manifest(setup, seed)))
        except (UserError, OSError):  # none yet, or damaged: its own run says so
            continue
        if dtype is not None:
            out[seed] = dtype
    return out


def recorded_checkpoint_dtype(manifest: dict) -> str | None:
    """The checkpoint dtype a seed's manifest records (None: made before it was recorded)."""
    how = manifest.get("trained_with")
    return how["checkpoint_dtype"] if isinstance(how, dict) and how.get("checkpoint_dtype") in \
        art.CHECKPOINT_DTYPES else None


def seed_checkpoint_dtype(paths: art.RunPaths, setup: str, seed: int, manifest: dict) -> str:
    """The storage type of a seed's checkpoints: as its manifest records it, or, for seeds
    that predate the record, as its newest checkpoint holds its weights (fp32 when none)."""
    if (recorded := recorded_checkpoint_dtype(manifest)) is not None:
        return recorded
    if not manifest["checkpoints"]:
        return "fp32"
    state, _ = art.load_checkpoint(paths.checkpoint(setup, seed, max(map(int, manifest["checkpoints"]))))
    return "bf16" if any(t.dtype == torch.bfloat16 for t in state.values()) else "fp32"


def _resume(paths, setup, seed, model, optimizer, manifest) -> int | None:
    """Load the committed state into model/optimizer; its epoch, or None for a fresh seed.

    The manifest is brought in line with resume.pt when a kill fell between the two."""
    resume_path = paths.resume(setup.name, seed)
    trained = [int(e) for e in manifest["checkpoints"] if int(e) > 0]
    if not resume_path.exists():
        if trained:
            raise UserError(f"{paths.seed_dir(setup.name, seed)} has checkpoints up to epoch "
                            f"{max(trained)} but no resume.pt: its optimizer state is lost, so it "
                            f"cannot continue exactly; delete that folder to retrain the seed")
        return None
    state = art.load_resume(resume_path)
    if state is None:
        raise UserError(f"resume state {resume_path} is unreadable or malformed: the seed's "
                        f"optimizer state is lost, so it cannot continue exactly; delete "
                        f"{paths.seed_dir(setup.name, seed)} to retrain the seed from scratch")
    start = int(state["epoch"])
    # Before resume.pt named its checkpoint's sha256, it was written after the manifest: a
    # kill in between left it one epoch behind, which is rolled back (that epoch is redone).
    # Any other resume state behind the manifest is an older copy put back.
    legacy_lag = "checkpoint_sha256" not in state and start == max(trained, default=0) - 1
    if start < max(trained, default=0) and not legacy_lag:
        raise UserError(f"resume state {resume_path} is of epoch {start}, but the manifest has "
                        f"committed epoch {max(trained)}: it is an older copy; put back the newest "
                        f"resume.pt, or delete {paths.seed_dir(setup.name, seed)} to retrain the seed")
    ckpt = paths.checkpoint(setup.name, seed, start)
    data = art.read_checkpoint_bytes(ckpt)
    sha = art.sha256_bytes(data)
    # resume.pt written since the manifest names the newer bytes; older resume files do not
    if (state.get("checkpoint_sha256") or manifest["checkpoints"].get(str(start))) != sha:
        raise UserError(f"corrupt checkpoint {ckpt}: its sha256 differs from the one recorded "
                        f"when it was written; restore it from a copy, or delete "
                        f"{paths.seed_dir(setup.name, seed)} to retrain the seed")
    weights = state.get("model") or art.parse_checkpoint(data, ckpt)[0]
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as e:  # shapes of another width, head or optimizer
        raise UserError(f"{resume_path} does not fit the network and optimizer of this config "
                        f"({str(e).splitlines()[0]}); delete {paths.seed_dir(setup.name, seed)} "
                        f"to retrain the seed") from None
    if max(map(int, manifest["checkpoints"]), default=-1) != start or \
            manifest["checkpoints"].get(str(start)) != sha:  # killed before the manifest's write
        record_epoch(manifest, setup, start, sha)
        art.write_json_atomic(paths.manifest(setup.name, seed), manifest)
    return start


def record_epoch(manifest: dict, setup: SetupConfig, epoch: int, sha: str) -> None:
    """Enter epoch `epoch` (checkpoint sha256 `sha`) as the manifest's last, in place."""
    manifest["checkpoints"] = ({k: v for k, v in manifest["checkpoints"].items() if int(k) < epoch}
                               | {str(epoch): sha})
    manifest["complete"] = epoch >= setup.epochs
    manifest.pop("diverged", None)  # an epoch past a divergence committed: a retry went through
    if epoch > setup.epochs:
        manifest["extended_to"] = epoch
    elif "extended_to" in manifest:
        del manifest["extended_to"]


def run_epoch(state: SeedState, train_x: torch.Tensor, targets: torch.Tensor, opts: TrainOptions,
              step_model: torch.nn.Module | None = None,
              on_batch: Callable[[], None] | None = None) -> dict:
    """Train epoch `state.epoch + 1` in place; returns its metrics (not yet on disk; a loss
    that is not finite is the caller's to handle: `diverged`)."""
    setup, seed, epoch = state.setup, state.seed, state.epoch + 1
    dev = torch.device(opts.device)
    objective = objective_for(setup)
    model = state.model if step_model is None else step_model  # a compiled module has no truth value
    n = len(train_x)
    bs, nb = min(setup.batch_size, n), batches_per_epoch(n, setup)
    lr = learning_rate(setup, epoch - 1, nb)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(n, generator=make_generator(seed, epoch, "shuffle")).to(dev)
    loss_sum, correct_sum, seen = torch.zeros((), device=dev), torch.zeros((), device=dev), 0
    with exact_fp32(opts.device, opts.bf16):  # fp32 on a GPU without TF32 convolutions
        for b in range(nb):
            idx = order[b * bs:(b + 1) * bs]
            views = objective.views(train_x[idx], make_generator(seed, epoch, b, "views"))
            if opts.channels_last:
                views = views.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opts.bf16):
                out = model(views)["out"]
            loss, correct = objective.loss(out, targets[idx])
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            loss_sum += loss.detach() * len(correct)
            correct_sum += correct.sum()
            seen += len(correct)
            if on_batch:
                on_batch()
    seconds = time.perf_counter() - t0
    state.epoch = epoch
    return {"epoch": epoch, "loss": float(loss_sum) / seen, "train_acc": float(correct_sum) / seen,
            "lr": lr, "seconds": round(seconds, 4), "images_per_s": round(nb * bs / max(seconds, 1e-9), 1)}


def commit_epoch(paths: art.RunPaths, run: RunConfig, state: SeedState, dataset_sha: str,
                 opts: TrainOptions, metrics: dict | None) -> None:
    """Write epoch `state.epoch`: checkpoint, metrics, resume.pt, then the manifest (the
    commit: what status and phase two see)."""
    setup, seed, epoch = state.setup, state.seed, state.epoch
    dtype = art.CHECKPOINT_DTYPES[state.checkpoint_dtype]
    sha = art.save_checkpoint(paths.checkpoint(setup.name, seed, epoch), state.model,
                              checkpoint_meta(run, setup, seed, epoch, dataset_sha), dtype)
    how = {**opts.record(), "checkpoint_dtype": state.checkpoint_dtype}
    _rewrite_metrics(paths, setup, seed, upto=epoch - 1 if metrics else 0,
                     new=metrics and {**metrics, "trained_with": how})
    resume = {"epoch": epoch, "checkpoint_sha256": sha, "optimizer": state.optimizer.state_dict()}
    if dtype is not None:  # the checkpoint holds rounded weights: keep the exact ones here
        resume["model"] = art.model_state(state.model)
    art.save_resume(paths.resume(setup.name, seed), resume)
    record_epoch(state.manifest, setup, epoch, sha)
    state.manifest["trained_with"] = how  # of the last epoch; metrics.jsonl has every epoch's
    art.write_json_atomic(paths.manifest(setup.name, seed), state.manifest)


def train_seed(paths: art.RunPaths, run: RunConfig, setup: SetupConfig, seed: int,
               train_x: torch.Tensor, targets: torch.Tensor, dataset_sha: str,
               opts: TrainOptions, on_batch: Callable[[], None] | None = None,
               on_epoch: Callable[[int, dict], None] | None = None,
               until: int | None = None) -> dict:
    """Train one seed to `until` (default `setup.epochs`), resuming from its last commit.

    train_x: uint8 [N, 3, H, W] and targets [N] already on opts.device.
    Returns the manifest. `on_epoch(epoch, metrics)` runs after each epoch is on disk.
    """
    set_determinism(opts.deterministic)
    state = open_seed(paths, run, setup, seed, dataset_sha, opts)
    aim(state, until)
    step_model = compiled(state.model, opts.compile_mode) if opts.compile else None
    for _ in range(state.epoch, setup.epochs if until is None else until):
        metrics = run_epoch(state, train_x, targets, opts, step_model, on_batch)
        if why := divergence(state, metrics):
            raise Diverged([diverged(paths, state, why, metrics)])
        commit_epoch(paths, run, state, dataset_sha, opts, metrics)
        if on_epoch:
            on_epoch(state.epoch, metrics)
    return state.manifest


class Diverged(UserError):
    """Seeds whose loss stopped being finite: their manifests say at which epoch. Raised once
    every other seed of the work is trained."""

    def __init__(self, what: list[str]):
        self.what = what
        super().__init__(f"{len(what)} run{'s' if len(what) > 1 else ''} diverged: {'; '.join(what)}. "
                         f"Every other run was trained; a rerun retries these (lower the learning "
                         f"rate in a new --out if they diverge again)")


def divergence(state: SeedState, metrics: dict) -> str | None:
    """Why epoch `state.epoch`, just trained, must not be committed: its mean loss is not
    finite, or its weights are not (the epoch's last step can overflow after its loss was
    computed); None when it may be."""
    if not math.isfinite(metrics["loss"]):
        return f"loss became {metrics['loss']}"
    if not all(bool(torch.isfinite(t).all()) for t in state.model.state_dict().values()
               if t.is_floating_point()):
        return "weights became non-finite"
    return None


def diverged(paths: art.RunPaths, state: SeedState, why: str, metrics: dict) -> str:
    """Record in the seed's manifest that it diverged (`why`, from `divergence`) in epoch
    `state.epoch` (not committed); what to report."""
    state.manifest["diverged"] = {"epoch": state.epoch, "loss": str(metrics["loss"]), "why": why}
    art.write_json_atomic(paths.manifest(state.setup.name, state.seed), state.manifest)
    return f"{state.setup.name} seed {state.seed}: {why} at epoch {state.epoch}"


def compiled(model: torch.nn.Module, mode: str = "default") -> torch.nn.Module:
    """torch.compile'd view of `model` (same parameters; checkpoints are saved from `model`)."""
    return torch.compile(model, mode=None if mode == "default" else mode)


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
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    if new is not None:
        lines.append(json.dumps(new, sort_keys=True))
    art.write_bytes_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode())
