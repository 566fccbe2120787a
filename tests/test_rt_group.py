"""Batched inspection (`inspect rt --group G`): several checkpoints of one setup per forward
pass give exactly the store of one-at-a-time evaluation (fp32, CPU)."""
import shutil

import numpy as np
import pytest

from _util import rt
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect.rt_plan import Task, group_tasks, resolve_group
from ssl_dynamics.inspect.rtdata import load_rt


def test_group_tasks_keeps_setups_apart():
    tasks = [Task(s, seed, e, -1) for s in ("a", "b") for seed in (0, 1) for e in range(3)]
    groups = group_tasks(tasks, 4)
    assert [len(g) for g in groups] == [4, 2, 4, 2]
    assert all(len({t.setup for t in g}) == 1 for g in groups)
    assert [t for g in groups for t in g] == tasks


def test_grouped_store_equals_one_at_a_time(tiny_rt, tmp_path):
    """tiny_rt was evaluated one checkpoint at a time; G = 4 makes groups of 4 and 2 per
    setup (6 checkpoints each), and the stored arrays must be identical."""
    run = tmp_path / "run"
    shutil.copytree(tiny_rt, run)
    res = rt(run, tmp_path / "grouped.zarr", group=4)
    assert res["evaluated"] == 24
    one, grouped = load_rt(run / "inspect" / "rt.zarr"), load_rt(tmp_path / "grouped.zarr")
    for setup, a in one.items():
        b = grouped[setup]
        assert b.valid.all()
        for field in ("correct", "p_true", "correct_second", "p_true_second"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype and np.array_equal(x, y), (setup, field)


def test_group_values():
    assert resolve_group("auto", "cpu", "resnet18_cifar") == 1
    assert resolve_group("auto", "cuda", "timm:resnet18") == 1
    assert resolve_group("3", "cpu", "resnet18_cifar") == 3
    for bad in ("0", "x"):
        with pytest.raises(UserError, match="--group"):
            resolve_group(bad, "cpu", "resnet18_cifar")
    with pytest.raises(UserError, match="--group above 1 needs the CIFAR ResNet-18"):
        resolve_group("2", "cpu", "timm:resnet18")


def test_grouped_evaluation_still_checks_every_sha256(tiny_run, tmp_path):
    from ssl_dynamics import artifacts as art
    from conftest import TINY_BANK

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    p = art.RunPaths(run).checkpoint("supervised", 1, 1)
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF  # a weight, not the header: only the sha256 can tell
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="seed-01/epoch-0001.safetensors: its sha256 differs"):
        rt(run, setups=["supervised"], group=3, **TINY_BANK)


def test_cpu_store_does_not_depend_on_the_number_of_cores(tiny_rt, tmp_path):
    """On the CPU each core evaluates its own checkpoint on one thread, so a machine with
    one core (one evaluator, in the calling thread) and one with three (three evaluator
    threads) store the same bits."""
    import torch

    from ssl_dynamics.inspect import rt as rt_mod

    run = tmp_path / "run"
    shutil.copytree(tiny_rt, run)
    threads = torch.get_num_threads()
    stores = {}
    try:
        for cores in (1, 3):
            torch.set_num_threads(cores)
            assert rt_mod.cpu_evaluators(rt_mod.EvalOptions("cpu")) == cores
            stores[cores] = tmp_path / f"cores{cores}.zarr"
            assert rt(run, stores[cores])["evaluated"] == 24
            assert torch.get_num_threads() == cores  # restored after the evaluation
    finally:
        torch.set_num_threads(threads)
    one, three = load_rt(stores[1]), load_rt(stores[3])
    for setup, a in one.items():
        b = three[setup]
        assert a.valid.all() and b.valid.all()
        assert np.array_equal(a.correct, b.correct) and np.array_equal(a.p_true, b.p_true), setup


@pytest.mark.parametrize("value, message", [("0", "--group 0: use auto or a positive number of checkpoints"),
                                            ("two", "--group 'two'")])
def test_bad_group_is_one_line_exit_2(tiny_run, tmp_path, monkeypatch, capsys, value, message):
    import sys

    from ssl_dynamics.inspect.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    monkeypatch.setattr(sys, "argv", ["inspect", "rt", str(run), "--group", value, "--no-progress"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err
    assert not any((run / "inspect").rglob("*"))  # refused before anything was written


def test_fp32_evaluation_on_a_gpu_turns_tf32_off_and_restores_it():
    """The store says fp32: on a GPU, cuDNN's default TF32 convolutions are off while
    `inspect rt` evaluates (bf16 and the CPU leave the setting alone), and restored after."""
    import torch

    from ssl_dynamics.inspect.evaluate import exact_fp32

    before = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        with exact_fp32("cuda:0", bf16=False):
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is True
        for device, bf16 in (("cuda", True), ("cpu", False)):
            with exact_fp32(device, bf16):
                assert torch.backends.cudnn.allow_tf32 is True
        with pytest.raises(RuntimeError), exact_fp32("cuda", bf16=False):
            raise RuntimeError  # restored on the way out of a failure too
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_grouped_equals_one_at_a_time_over_many_chunks(tiny_rt, tmp_path, monkeypatch):
    """Real banks (10,240+ views) take many forward passes; the test bank takes one at the
    default sizes. With passes of 8 views, the grouped store must still equal one-at-a-time
    evaluation bit for bit (the chunks' order and the batches' rounding both matter)."""
    from conftest import TINY_BANK

    from ssl_dynamics.inspect import evaluate

    monkeypatch.setattr(evaluate, "EVAL_CHUNK", 8)
    monkeypatch.setattr(evaluate, "MIN_GROUP_CHUNK", 2)
    run = tmp_path / "run"
    shutil.copytree(tiny_rt, run)
    shutil.rmtree(run / "inspect")
    rt(run, tmp_path / "one.zarr", **TINY_BANK)
    rt(run, tmp_path / "grouped.zarr", group=4, **TINY_BANK)
    one, grouped = load_rt(tmp_path / "one.zarr"), load_rt(tmp_path / "grouped.zarr")
    for setup, a in one.items():
        for field in ("correct", "p_true", "correct_second", "p_true_second"):
            x, y = getattr(a, field), getattr(grouped[setup], field)
            assert (x is None) == (y is None)
            if x is not None:
                assert np.array_equal(x, y), (setup, field)
