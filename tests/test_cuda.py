"""CUDA paths: run only where torch sees a GPU (benchmarks/gpu_check.sh runs them there)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from _util import checkpoint_drift
from ssl_dynamics import artifacts as art
from ssl_dynamics.augment import apply_params, make_generator, sample_params
from ssl_dynamics.config import override, preset, thesis_setups
from ssl_dynamics.inspect.evaluate import evaluate
from ssl_dynamics.models import build_network
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions
from ssl_dynamics.objectives import objective_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("kind", ["simclr", "supervised", "none", "normalize"])
def test_augmentation_same_on_gpu_and_cpu(kind):
    # 1100 views: the CPU applies SimCLR in chunks of 512, the GPU in one pass
    x = torch.randint(0, 256, (1100, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = sample_params(kind, len(x), make_generator(1, 2, 3), 32)
    cpu = apply_params(kind, x, p)
    gpu = apply_params(kind, x.cuda(), p).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5)


def test_train_bf16_channels_last_on_gpu(tmp_path):
    cfg = override(preset("smoke"), ["epochs=1", "train_subset=64"])
    opts = TrainOptions(device="cuda", bf16=True, channels_last=True)
    status = train_grid(tmp_path, replace(cfg, seeds=(0,)), ["simclr", "supervised"], opts,
                        progress=False, echo=lambda *_: None)
    assert all(s.state == "complete" for s in status)
    for setup in ("simclr", "supervised"):
        line = art.RunPaths(tmp_path).metrics(setup, 0).read_text().splitlines()[-1]
        assert "NaN" not in line
        state, _ = art.load_checkpoint(art.RunPaths(tmp_path).checkpoint(setup, 0, 1))
        assert all(v.device.type == "cpu" for v in state.values())  # saved device-free


def test_evaluation_gpu_matches_cpu_fp32():
    torch.manual_seed(0)
    setup = thesis_setups()["supervised"]
    net = build_network("resnet18_cifar", 10, width=16).eval()
    views = torch.rand(2, 32, 1, 3, 32, 32)
    targets = torch.randint(0, 10, (32,))
    c_cpu, p_cpu = evaluate(net, objective_for(setup), views, targets, 256)
    c_gpu, p_gpu = evaluate(net.cuda(), objective_for(setup), views.cuda(), targets.cuda(), 256)
    assert np.allclose(p_cpu, p_gpu, atol=1e-4) and (c_cpu == c_gpu).mean() > 0.99


# --------------------------------------------------------------------------- packing, batched eval

def test_packed_views_on_gpu_are_each_seeds_own():
    from ssl_dynamics.objectives import objective_for as obj_for

    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8).cuda()
    for setup in ("simclr", "supervised"):
        objective = obj_for(thesis_setups()[setup])
        packed = objective.packed_views([x[:16], x[16:]], [make_generator(s, 1, 0, "views") for s in (0, 1)])
        for p, part in enumerate((x[:16], x[16:])):
            alone = objective.views(part, make_generator(p, 1, 0, "views"))
            assert torch.allclose(packed[p], alone, atol=1e-6)


def test_packed_training_on_gpu_agrees_with_separate(tmp_path):
    cfg = replace(override(preset("smoke"), ["epochs=1", "train_subset=64", "lr=3e-4", "width=8"]), seeds=(0, 1))
    setups = ["simclr", "supervised"]
    for name, opts in (("sep", TrainOptions(device="cuda", channels_last=True)),
                       ("pack", TrainOptions(device="cuda", channels_last=True, pack=2)),
                       ("bf16", TrainOptions(device="cuda", channels_last=True, bf16=True, pack=2))):
        status = train_grid(tmp_path / name, cfg, setups, opts, progress=False, echo=lambda *_: None)
        assert all(s.state == "complete" for s in status)
    for setup in setups:
        for seed in (0, 1):
            diff = checkpoint_drift(tmp_path / "sep", tmp_path / "pack", setup, seed, 1)
            assert diff < 5e-3, (setup, seed, diff)  # 4 steps at lr 3e-4; TF32 and cudnn rounding
            c, _ = art.load_checkpoint(art.RunPaths(tmp_path / "bf16").checkpoint(setup, seed, 1))
            assert all(torch.isfinite(v).all() for v in c.values() if v.is_floating_point())


def test_grouped_evaluation_on_gpu_matches_one_at_a_time():
    from ssl_dynamics.inspect.evaluate import evaluate_group
    from ssl_dynamics.packed import GroupedNetwork

    setup = thesis_setups()["supervised"]
    nets = []
    for p in range(3):
        torch.manual_seed(p)
        nets.append(build_network("resnet18_cifar", 10, width=16).cuda().eval())
    views = torch.rand(2, 64, 1, 3, 32, 32).cuda()
    targets = torch.randint(0, 10, (64,)).cuda()
    model = GroupedNetwork(nets[0], 3, shared_input=True, device="cuda").eval()
    model.load_state_dicts([n.state_dict() for n in nets])
    for bf16 in (False, True):
        together = evaluate_group(model, objective_for(setup), views, targets, 256, bf16)
        for net, (c, p) in zip(nets, together):
            c1, p1 = evaluate(net, objective_for(setup), views, targets, 256, bf16)
            assert (c1 == c).mean() > 0.97 and np.abs(p1 - p).max() < (5e-2 if bf16 else 1e-3)


# --------------------------------------------------------------------------- inspect rt end to end

def _as_bf16_checkpoints(run) -> None:
    """Re-save every checkpoint of `run` with bf16 weights (manifests updated)."""
    manifests = sorted(run.glob("checkpoints/*/seed-*/manifest.json"))
    assert manifests
    for manifest in manifests:
        m = art.read_json(manifest)
        for epoch in m["checkpoints"]:
            path = manifest.parent / f"epoch-{int(epoch):04d}.safetensors"
            net, meta = art.load_network(path)
            m["checkpoints"][epoch] = art.save_checkpoint(path, net, meta, torch.bfloat16)
        art.write_json_atomic(manifest, m)


def rt_on_two_devices(run, tmp_path, devices=("cpu", "cuda")) -> None:
    """inspect rt of the same bf16-weight run on two devices (fp32 arithmetic, one at a time
    and two per pass): the stored correctness agrees and p_true is close."""
    from _util import private_copy, rt
    from ssl_dynamics.inspect.rtdata import load_rt

    run = private_copy(run, tmp_path)
    _as_bf16_checkpoints(run)
    bank = dict(n_probe=24, n_replays=3, simclr_batch=8)
    stores = {}
    for device in devices:
        for group in (1, 2):
            store = run / "inspect" / f"{device}-{group}.zarr"
            rt(run, store, device=device, group=group, **bank)
            stores[device, group] = load_rt(store)
    first = stores[devices[0], 1]
    for key, other in stores.items():
        for s, d in first.items():
            assert d.valid.all() and other[s].valid.all(), key
            # fp32 on both (inspect rt turns TF32 off): cuDNN and CPU kernels round differently;
            # close, not equal, while wrong weights are far off
            assert (other[s].correct == d.correct).mean() > 0.98, (key, s)
            assert np.nanmax(np.abs(other[s].p_true - d.p_true)) < 5e-3, (key, s)


def test_inspect_rt_on_gpu_matches_cpu_with_bf16_checkpoints(tiny_run, tmp_path):
    rt_on_two_devices(tiny_run, tmp_path)
