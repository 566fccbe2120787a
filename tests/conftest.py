import os
import shutil
from dataclasses import replace

import pytest

# Keep test runs reproducible and within the 2-core budget.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# The bank of the tiny evaluated run: 3 SimCLR batches of 8 images, 3 replays.
TINY_BANK = dict(n_probe=24, n_replays=3, simclr_batch=8)


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny phase-one run: 4 setups x 2 seeds x 2 epochs on 48 synthetic images.
    Shared by every test module: copy it before changing anything in it."""
    from ssl_dynamics.config import override, preset
    from ssl_dynamics.train.grid import train_grid
    from ssl_dynamics.train.loop import TrainOptions

    root = tmp_path_factory.mktemp("runs") / "run"
    cfg = override(preset("smoke"), ["epochs=2", "batch_size=16", "train_subset=48"])
    train_grid(root, replace(cfg, seeds=(0, 1)), list(cfg.setups), TrainOptions(device="cpu"),
               progress=False, echo=lambda *_: None)
    return root


@pytest.fixture(scope="session")
def tiny_rt(tiny_run, tmp_path_factory):
    """`tiny_run` with its r_t store evaluated on TINY_BANK (copy it before changing it)."""
    from _util import rt

    root = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(tiny_run, root)
    rt(root, device="cpu", **TINY_BANK)
    return root
