"""Smaller archives (`--checkpoint-dtype bf16`): bf16 weights on disk, exact fp32 resume,
and a disk-space check that counts the smaller files."""
from collections import namedtuple
from dataclasses import replace

import pytest
import torch

from ssl_dynamics import artifacts as art
from ssl_dynamics.config import override, preset
from ssl_dynamics.errors import UserError
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions
from ssl_dynamics.train.prepare import disk_estimate

BF16 = TrainOptions(device="cpu", deterministic=True, checkpoint_dtype="bf16")


def tiny(epochs=3, seeds=(0, 1)):
    cfg = override(preset("smoke"), [f"epochs={epochs}", "batch_size=16", "train_subset=48", "width=8"])
    return replace(cfg, seeds=tuple(seeds))


def quiet(*_a, **_k):
    return None


class Killed(Exception):
    pass


@pytest.mark.parametrize("pack", [1, 2])
def test_bf16_checkpoints_resume_exactly(tmp_path, monkeypatch, pack):
    """Killed after epoch 2's checkpoint but before its resume.pt (and manifest): the rerun
    redoes epoch 2 from resume.pt's fp32 weights and writes the same bytes."""
    opts = replace(BF16, pack=pack, channels_last=pack > 1)
    cfg = tiny()
    train_grid(tmp_path / "full", cfg, ["supervised"], opts, progress=False, echo=quiet)
    real = art.save_resume

    def killed_at_epoch_2(path, state):
        if state["epoch"] == 2:
            raise Killed
        real(path, state)

    monkeypatch.setattr(art, "save_resume", killed_at_epoch_2)
    with pytest.raises(Killed):
        train_grid(tmp_path / "cut", cfg, ["supervised"], opts, progress=False, echo=quiet)
    monkeypatch.setattr(art, "save_resume", real)
    cut = art.RunPaths(tmp_path / "cut")
    assert cut.checkpoint("supervised", 0, 2).exists()  # on disk, not committed:
    assert "2" not in art.read_json(cut.manifest("supervised", 0))["checkpoints"]
    assert art.load_resume(cut.resume("supervised", 0))["epoch"] == 1
    train_grid(tmp_path / "cut", cfg, ["supervised"], opts, progress=False, echo=quiet)
    full = art.RunPaths(tmp_path / "full")
    for seed in cfg.seeds:
        assert art.read_json(full.manifest("supervised", seed))["checkpoints"] == \
            art.read_json(cut.manifest("supervised", seed))["checkpoints"]
    state, _ = art.load_checkpoint(cut.checkpoint("supervised", 0, 3))
    assert state["head.weight"].dtype == torch.bfloat16
    assert state["backbone.stem.1.running_var"].dtype == torch.float32  # BN statistics stay fp32
    resume = art.load_resume(cut.resume("supervised", 0))
    assert resume["model"]["head.weight"].dtype == torch.float32
    assert torch.equal(resume["model"]["head.weight"].bfloat16(), state["head.weight"])


def test_disk_estimate_halves_with_bf16():
    cfg = preset("thesis")
    todo = [(name, seed, -1, sc.epochs) for name, sc in cfg.setups.items() for seed in cfg.seeds]
    fp32, bf16 = disk_estimate(cfg, todo, "fp32"), disk_estimate(cfg, todo, "bf16")
    assert 0.49 < bf16 / fp32 < 0.52  # BN statistics, metadata and fp32 resume files stay
    assert 0.95e12 < fp32 < 1.1e12  # the grid's ~1 TB of fp32 checkpoints


def test_disk_check_counts_bf16_files(tmp_path, monkeypatch):
    import shutil

    cfg = tiny(epochs=2, seeds=(0,))
    todo = [("simclr", 0, -1, 2)]
    free = (disk_estimate(cfg, todo, "fp32") + disk_estimate(cfg, todo, "bf16")) // 2
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(free, 0, free))
    with pytest.raises(UserError, match="not enough disk space"):
        train_grid(tmp_path, cfg, ["simclr"], replace(BF16, checkpoint_dtype="fp32"), progress=False, echo=quiet)
    train_grid(tmp_path, cfg, ["simclr"], BF16, progress=False, echo=quiet)
    assert art.RunPaths(tmp_path).checkpoint("simclr", 0, 2).exists()


def test_disk_check_counts_the_dtype_a_bf16_setup_goes_on_with(tmp_path, monkeypatch):
    """Without --checkpoint-dtype, a setup whose seeds record bf16 goes on in bf16 (resumed
    seeds keep it, new ones take it): the disk check counts bf16 files, not fp32 ones; a
    setup of two dtypes is counted at fp32 (an upper bound)."""
    import shutil

    cfg = tiny(epochs=2, seeds=(0,))
    train_grid(tmp_path, cfg, ["simclr"], BF16, progress=False, echo=quiet, until={"simclr": 1})
    todo = [("simclr", 0, 1, 2), ("simclr", 1, -1, 2)]
    free = (disk_estimate(cfg, todo, "fp32") + disk_estimate(cfg, todo, "bf16")) // 2
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(free, 0, free))
    grown = replace(cfg, seeds=(0, 1))
    with pytest.raises(UserError, match="not enough disk space"):  # asked for fp32
        train_grid(tmp_path, grown, ["simclr"], replace(BF16, checkpoint_dtype="fp32"), progress=False, echo=quiet)
    train_grid(tmp_path, grown, ["simclr"], replace(BF16, checkpoint_dtype=None), progress=False, echo=quiet)
    assert art.RunPaths(tmp_path).checkpoint("simclr", 1, 2).exists()
    from ssl_dynamics.train.grid import recorded_dtype

    paths = art.RunPaths(tmp_path)
    assert recorded_dtype(paths, "simclr") == "bf16" and recorded_dtype(paths, "supervised") == "fp32"
    m = art.read_json(paths.manifest("simclr", 1))
    m["trained_with"]["checkpoint_dtype"] = "fp32"
    art.write_json_atomic(paths.manifest("simclr", 1), m)
    assert recorded_dtype(paths, "simclr") == "fp32"


# ---- load_weights: the loader of inspect rt, every check of load_network without a network ----

def _saved(tmp_path, edit=None):
    from ssl_dynamics.models import build_network

    torch.manual_seed(0)
    net = build_network("resnet18_cifar", 10, 8)
    if edit:
        with torch.no_grad():
            edit(net)
    path = tmp_path / "seed-00" / "epoch-0001.safetensors"
    path.parent.mkdir(parents=True)
    sha = art.save_checkpoint(path, net, {"backbone": "resnet18_cifar", "head_dim": 10, "width": 8})
    art.write_json_atomic(path.parent / "manifest.json", {"checkpoints": {"1": sha}})
    return path, net


def test_load_weights_equals_load_network(tmp_path):
    path, net = _saved(tmp_path)
    state, meta = art.load_weights(path)
    via_net = art.load_network(path)[0].state_dict()
    assert state.keys() == via_net.keys() == net.state_dict().keys() and meta["width"] == 8
    assert all(torch.equal(state[k], via_net[k]) for k in state)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_load_weights_names_the_non_finite_tensor(tmp_path, bad):
    def poison(net):
        net.backbone.stages[1][0].conv1.weight[0, 0, 0, 0] = bad

    path, _ = _saved(tmp_path, poison)
    with pytest.raises(UserError, match=r"non-finite weights \(NaN/inf\) in backbone.stages.1.0.conv1.weight"):
        art.load_weights(path)


def test_load_weights_accepts_huge_finite_weights(tmp_path):
    def huge(net):  # their sum overflows float32: only the exact check may decide
        net.head.weight.fill_(3e38)

    path, _ = _saved(tmp_path, huge)
    state, _ = art.load_weights(path)
    assert float(state["head.weight"].max()) == pytest.approx(3e38, rel=1e-6)


@pytest.mark.parametrize("pack", [1, 2])
def test_a_resume_without_the_option_keeps_the_seeds_dtype(tmp_path, pack):
    """A seed begun with bf16 checkpoints and resumed without --checkpoint-dtype stays bf16
    (it used to switch to fp32 midway); a seed that is new takes its setup's dtype (bf16
    here: an archive stays one dtype; test_train has an explicit dtype winning)."""
    cfg = tiny(seeds=(0, 1))
    plain = replace(BF16, checkpoint_dtype=None, pack=pack, channels_last=pack > 1)
    train_grid(tmp_path, replace(cfg, seeds=(0,)), ["supervised"], replace(plain, checkpoint_dtype="bf16"),
               progress=False, echo=quiet, until={"supervised": 1})
    train_grid(tmp_path, cfg, ["supervised"], plain, progress=False, echo=quiet)
    paths = art.RunPaths(tmp_path)

    def dtypes(seed):
        return [art.load_checkpoint(paths.checkpoint("supervised", seed, e))[0]["head.weight"].dtype
                for e in range(4)]

    assert dtypes(0) == [torch.bfloat16] * 4
    assert dtypes(1) == [torch.bfloat16] * 4
    for seed, want in ((0, "bf16"), (1, "bf16")):
        assert art.read_json(paths.manifest("supervised", seed))["trained_with"]["checkpoint_dtype"] == want
