"""CUDA paths: run only where torch sees a GPU (benchmarks/gpu_check.sh runs them there)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from ssl_dynamics import artifacts as art
from ssl_dynamics.augment import apply_params, make_generator, sample_params
from ssl_dynamics.config import override, preset, thesis_setups
from ssl_dynamics.inspect.evaluate import evaluate
from ssl_dynamics.models import build_network
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions
from ssl_dynamics.objectives import objective_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("kind", ["simclr", "supervised", "none"])
def test_augmentation_same_on_gpu_and_cpu(kind):
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
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
