"""Choices that only a GPU exercises (precision, TF32, cuBLAS determinism), checked on the CPU
by forcing the branch a GPU would take."""
import os
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch

from ssl_dynamics.config import override, preset
from ssl_dynamics.losses import pair_logits
from ssl_dynamics.objectives import objective_for
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions, TrainRequest


def quiet(*_a, **_k):
    return None


def test_auto_precision_is_bf16_only_on_gpus_that_compute_it_natively(monkeypatch):
    """V100/T4 (compute capability 7.x) report bf16 as supported through emulation, with slow
    fallback convolutions: auto picks fp32 there; an explicit bf16 is still obeyed."""
    from ssl_dynamics.train import options

    assert TrainRequest(device="cpu").resolve().bf16 is False
    monkeypatch.setattr(options, "resolve_device", lambda name: "cuda:0")
    for capability, auto_bf16 in (((7, 0), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert TrainRequest(device="cuda").resolve().bf16 is auto_bf16
        assert TrainRequest(device="cuda", precision="bf16").resolve().bf16 is True
        assert TrainRequest(device="cuda", precision="fp32").resolve().bf16 is False


def test_pair_logits_stay_fp32_inside_an_autocast_region():
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    plain = pair_logits(z, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = pair_logits(z, 0.07)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


@pytest.mark.parametrize("setup", ["simclr", "supervised"])
def test_the_training_metric_adds_nothing_to_the_loss_graph(setup):
    """The per-view correctness is a metric: it must not keep tensors for a backward pass."""
    cfg = preset("smoke").setups[setup]
    objective = objective_for(cfg)
    out = torch.randn(8, 6, requires_grad=True)
    targets = torch.arange(8) % 6

    def saved(fn):
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            fn()
        return len(kept)

    assert saved(lambda: objective.loss(out, targets)) == saved(lambda: objective.loss_value(out, targets))
    loss, correct = objective.loss(out, targets)
    assert not correct.requires_grad and loss.requires_grad


@pytest.mark.parametrize("pack", [1, 2])
def test_fp32_training_on_a_gpu_runs_without_tf32_convolutions(tmp_path, monkeypatch, pack):
    """cuDNN's default lets fp32 convolutions use TF32; "precision: fp32" must be fp32. The
    GPU branch is forced on the CPU: TF32 is off during every batch, restored after, and
    left alone in bf16."""
    from ssl_dynamics.devices import exact_fp32
    from ssl_dynamics.train import grid, loop
    from ssl_dynamics.train import pack as pack_module

    @contextmanager
    def as_on_a_gpu(device, bf16):
        with exact_fp32("cuda:0", bf16):
            yield

    for module in (loop, pack_module):
        monkeypatch.setattr(module, "exact_fp32", as_on_a_gpu)
    seen = []
    monkeypatch.setattr(grid, "train_seed", _recording(grid.train_seed, seen))
    monkeypatch.setattr(grid, "train_pack", _recording(grid.train_pack, seen))
    cfg = replace(override(preset("smoke"), ["epochs=1", "batch_size=16", "train_subset=32", "width=4"]),
                  seeds=(0, 1))
    before = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        for bf16 in (False, True):
            seen.clear()
            opts = TrainOptions(device="cpu", bf16=bf16, pack=pack, channels_last=pack > 1)
            train_grid(tmp_path / f"bf16-{bf16}", cfg, ["supervised"], opts, progress=False, echo=quiet)
            assert seen and set(seen) == {bf16}  # TF32 allowed only for bf16
            assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _recording(real, seen):
    """`real` with an on_batch that records whether cuDNN may use TF32 at that moment."""
    def run(*args, **kw):
        kw["on_batch"] = lambda: seen.append(torch.backends.cudnn.allow_tf32)
        return real(*args, **kw)
    return run


def test_deterministic_training_sets_a_fixed_cublas_workspace(monkeypatch):
    """torch releases before 2.14 refuse deterministic cuBLAS matmuls without it; a value
    the user set is kept."""
    from ssl_dynamics.train.loop import set_determinism

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_determinism(False)
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        set_determinism(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        set_determinism(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        set_determinism(False)


@pytest.mark.parametrize("pack, advice", [(2, "use a smaller --pack"), (1, "one network of this batch does not fit")])
def test_running_out_of_gpu_memory_is_one_line_and_resumable(tmp_path, monkeypatch, pack, advice):
    """A pack too large for a small GPU: one line naming the pack and what to do, not a
    CUDA traceback; what was committed stays."""
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.errors import UserError
    from ssl_dynamics.train import grid

    def out_of_memory(*_a, **_k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(grid, "train_pack" if pack > 1 else "train_seed", out_of_memory)
    cfg = replace(override(preset("smoke"), ["epochs=1", "batch_size=16", "train_subset=32", "width=4"]),
                  seeds=(0, 1))
    opts = TrainOptions(device="cpu", pack=pack, channels_last=pack > 1)
    with pytest.raises(UserError, match=f"cpu ran out of memory training supervised seeds? 0.*--pack {pack}, "
                                        f"batch 16\\): {advice}; a rerun resumes"):
        train_grid(tmp_path, cfg, ["supervised"], opts, progress=False, echo=quiet)
    assert art.RunPaths(tmp_path).run_json.exists()


def test_representations_are_extracted_in_exact_fp32(monkeypatch):
    """probe, t-SNE and KL read features extracted without TF32 on a GPU, as r_t is."""
    from ssl_dynamics.inspect import features
    from ssl_dynamics.models import build_network

    entered = []

    @contextmanager
    def recording(device, bf16):
        entered.append((device, bf16))
        yield

    monkeypatch.setattr("ssl_dynamics.devices.exact_fp32", recording)
    net = build_network("resnet18_cifar", 10, 4)
    out = features.extract(net, torch.zeros(4, 3, 32, 32, dtype=torch.uint8), "supervised", "cpu")
    assert out.shape == (4, 32) and entered == [("cpu", False)]


def test_a_resume_state_of_epoch_0_counts_as_epoch_0():
    from ssl_dynamics.train.grid import _or_none

    assert (_or_none(None), _or_none(0), _or_none(3)) == (-1, 0, 3)
