"""`train run --pack P`: P seeds of one setup trained together, as one grouped network.

Each seed keeps everything it has when trained alone: its initial weights (seed, "init"),
its data order (seed, epoch, "shuffle"), its views (seed, epoch, batch, "views"), its own
optimizer state, and its checkpoints, metrics, manifest and resume.pt in exactly the format
of a seed trained alone, so packed and unpacked runs resume each other. Packing changes how
the arithmetic is scheduled: one `GroupedNetwork` (ssl_dynamics/packed.py) computes the
seeds' forward and backward passes, and one optimizer over its tensors updates them (Adam
and SGD act element by element, so that is P optimizers). The result agrees with separate
training up to rounding (docs/science.md gives the measured drift).

Only seeds at the same epoch share steps. A pack whose seeds stand at different epochs
(a kill between two seeds' commits, seeds added later) first trains the seeds that are
behind, packed among themselves, until they reach the others. A seed that would be alone is
paired with a throw-away copy of itself, so every seed of a packed run goes through grouped
kernels. Whether those kernels depend on the number of groups is the library's choice: on
the CPU in channels_last at width 8 they do not, and a seed's bits do not depend on the
pack's size (a pack resumed with seeds brought level equals an uninterrupted one); at width
4 an odd pack's 12-channel stem takes another vector kernel, and such a resumed seed
agrees with the uninterrupted one up to rounding (5e-5 after 3 epochs). Both are measured
in tests/test_pack.py. A pack resumed with the same seeds together is bit-identical.

After each epoch the grouped weights and optimizer state are copied back into each seed's
own network and optimizer, and `loop.commit_epoch` writes the seed's epoch as always.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .. import artifacts as art
from ..augment import make_generator
from ..config import RunConfig, SetupConfig
from ..devices import exact_fp32
from ..objectives import Objective, objective_for
from ..packed import GroupedNetwork, grouped, load_optimizer_states, optimizer_state_of, pack_views
from .loop import (Diverged, SeedState, TrainOptions, aim, batches_per_epoch, build_optimizer,
                   commit_epoch, compiled, divergence, diverged, open_seed, set_determinism)
from .schedules import learning_rate


@dataclass
class Pack:
    """A grouped network over `slots` (seed states; the last may repeat the first: a
    throw-away partner) and its optimizer; the first `real` slots are committed."""

    slots: list[SeedState]
    real: int
    model: GroupedNetwork
    step_model: torch.nn.Module
    optimizer: torch.optim.Optimizer


def epoch_order(seed: int, epoch: int, n: int, device) -> torch.Tensor:
    """The seed's shuffling of epoch `epoch` (as `loop.run_epoch` draws it)."""
    return torch.randperm(n, generator=make_generator(seed, epoch, "shuffle")).to(device)


def pack_batch(objective: Objective, train_x: torch.Tensor, orders: list[torch.Tensor],
               seeds: list[int], epoch: int, b: int, bs: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Views [P, V*bs, 3, H, W] and image indices of batch b for each seed: each seed's own
    shuffling and its own (seed, epoch, b, "views") generator, as a seed trained alone."""
    idx = [order[b * bs:(b + 1) * bs] for order in orders]
    gens = [make_generator(seed, epoch, b, "views") for seed in seeds]
    return objective.packed_views([train_x[i] for i in idx], gens), idx


def make_pack(states: list[SeedState], setup: SetupConfig, opts: TrainOptions) -> Pack:
    """The grouped network and optimizer of `states` (all at one epoch), on opts.device."""
    slots = states if len(states) > 1 else states * 2  # a lone seed gets a throw-away partner
    model = grouped([s.model for s in slots])
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, setup)
    load_optimizer_states(model, optimizer, [s.optimizer.state_dict() for s in slots])
    step_model = compiled(model, opts.compile_mode) if opts.compile else model
    return Pack(slots, len(states), model, step_model, optimizer)


def run_pack_epoch(pack: Pack, train_x: torch.Tensor, targets: torch.Tensor, opts: TrainOptions,
                   on_batch: Callable[[], None] | None = None) -> list[dict]:
    """Train epoch `epoch + 1` of every slot in place; each real seed's metrics (not on disk;
    a seed's loss that is not finite is the caller's to handle). The seeds never mix, so one
    seed's NaN leaves the others' arithmetic alone."""
    setup, epoch = pack.slots[0].setup, pack.slots[0].epoch + 1
    dev = torch.device(opts.device)
    objective = objective_for(setup)
    n, seeds = len(train_x), [s.seed for s in pack.slots]
    bs, nb = min(setup.batch_size, n), batches_per_epoch(n, setup)
    lr = learning_rate(setup, epoch - 1, nb)
    for group in pack.optimizer.param_groups:
        group["lr"] = lr
    pack.model.train()
    t0 = time.perf_counter()
    orders = [epoch_order(seed, epoch, n, dev) for seed in seeds]
    loss_sums = [torch.zeros((), device=dev) for _ in seeds]
    correct_sums = [torch.zeros((), device=dev) for _ in seeds]
    seen = 0
    with exact_fp32(opts.device, opts.bf16):  # fp32 on a GPU without TF32 convolutions
        for b in range(nb):
            views, idx = pack_batch(objective, train_x, orders, seeds, epoch, b, bs)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opts.bf16):
                out = pack.step_model(pack_views(views, opts.channels_last))["out"]
            scored = [objective.loss(out[p], targets[idx[p]]) for p in range(len(seeds))]
            pack.optimizer.zero_grad(set_to_none=True)
            torch.stack([loss for loss, _ in scored]).sum().backward()
            pack.optimizer.step()
            for p, (loss, correct) in enumerate(scored):
                loss_sums[p] += loss.detach() * len(correct)
                correct_sums[p] += correct.sum()
            seen += len(scored[0][1])
            if on_batch:
                on_batch()
    seconds = time.perf_counter() - t0
    for state in pack.slots:
        state.epoch = epoch
    return [{"epoch": epoch, "loss": float(loss_sums[p]) / seen, "train_acc": float(correct_sums[p]) / seen,
             "lr": lr, "seconds": round(seconds, 4), "images_per_s": round(nb * bs / max(seconds, 1e-9), 1),
             "pack": pack.real, "slots": len(pack.slots)} for p in range(pack.real)]


def unpack(pack: Pack) -> None:
    """Copy each real seed's weights and optimizer state back into its own network/optimizer."""
    for p, state in enumerate(pack.slots[:pack.real]):
        state.model.load_state_dict(pack.model.state_dict_of(p))
        state.optimizer.load_state_dict(optimizer_state_of(pack.model, pack.optimizer, p))


def train_pack(paths: art.RunPaths, run: RunConfig, setup: SetupConfig, seeds: list[int],
               train_x: torch.Tensor, targets: torch.Tensor, dataset_sha: str, opts: TrainOptions,
               on_batch: Callable[[], None] | None = None,
               on_epoch: Callable[[int, int, dict], None] | None = None,
               until: int | None = None) -> list[dict]:
    """Train `seeds` of `setup` to epoch `until` (default `setup.epochs`) as packs, resuming
    each seed from its last commit; seeds behind the others are brought level first.

    The caller holds every seed's lock. `on_epoch(seed, epoch, metrics)` runs after a seed's
    epoch is on disk. Returns the seeds' manifests.
    """
    set_determinism(opts.deterministic)
    until = setup.epochs if until is None else until
    states = [open_seed(paths, run, setup, seed, dataset_sha, opts) for seed in seeds]
    for state in states:
        aim(state, until)
    lost: list[str] = []  # seeds that diverged: recorded, dropped, reported at the end
    while states and (low := min(s.epoch for s in states)) < until:
        behind = [s for s in states if s.epoch == low]
        stop = min([s.epoch for s in states if s.epoch > low] + [until])
        pack = make_pack(behind, setup, opts)
        for _ in range(low, stop):
            metrics = run_pack_epoch(pack, train_x, targets, opts, on_batch)
            unpack(pack)
            why = {s.seed: w for s, m in zip(behind, metrics) if (w := divergence(s, m))}
            for state, m in zip(behind, metrics):
                if state.seed in why:
                    lost.append(diverged(paths, state, why[state.seed], m))
                    continue
                commit_epoch(paths, run, state, dataset_sha, opts, m)
                if on_epoch:
                    on_epoch(state.seed, state.epoch, m)
            if why:  # the others go on in a pack of their own
                states = [s for s in states if s.seed not in why]
                break
    if lost:
        raise Diverged(lost)
    return [s.manifest for s in states]
