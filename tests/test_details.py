"""Details that break silently when they are wrong: the rows and notes of Tables 4.1/4.2
and Figs 4.4/4.5 (`binomial_rows`), a dataset subset at its boundary, the representation
cache's extraction in batches, --epoch and --no-verify, `train extend --seeds`, an existing
bank kept when a store refuses it, new settings before training, the disk estimate, the
labels random-label setups train on, and an epoch's mean loss. Each test fails when its
detail is changed (a wrong replay, stream, bound, label array or weighting)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_dynamics.errors import UserError

# ------------------------------------------------------------------------------ binomial rows


def _setup_rt(correct: np.ndarray, epochs=(3,)):
    from ssl_dynamics.inspect.rtdata import SetupRt

    s, e, _, k = correct.shape
    return SetupRt("x", correct.astype(np.uint8), correct.astype(np.float32), np.ones((s, e), bool),
                   np.arange(s), np.array(epochs), np.zeros(k, int), np.zeros(k, int), np.arange(k))


def test_fig45_shows_the_r_tilde_of_every_replay_and_the_mean_r_t():
    """Fig. 4.5 plots r~ of each augmentation j (not replay 0 M times) and p_hat = mean r_t."""
    from ssl_dynamics.inspect import binomial_rows as bn

    c = np.zeros((2, 1, 2, 3))
    c[0, 0, 0] = [1, 0, 0]; c[0, 0, 1] = [0, 1, 1]  # seed 0: replay 0, replay 1
    c[1, 0, 0] = [1, 1, 0]; c[1, 0, 1] = [0, 0, 1]  # seed 1
    r = np.array([[0.2, 0.5, 0.9]])  # r_t at the epoch: already sorted
    notes = []
    out = bn.spread_entry(_setup_rt(c), r, 0, notes)
    assert out["step"] == 1 and list(out["order"]) == [0, 1, 2]
    assert np.array_equal(out["r_tilde"], [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    assert out["p_hat"] == pytest.approx(1.6 / 3)  # the mean, not the median 0.5
    assert notes and "every image" in notes[0]


def test_spread_step_keeps_50_while_that_shows_20_images():
    """ceil(K / 50) images are shown: 999 probes still give 20 at step 50; 950 give 19."""
    from ssl_dynamics.inspect.binomial_rows import spread_step

    assert spread_step(1000) == 50
    assert spread_step(999) == 50
    assert spread_step(950) == 47
    assert spread_step(10) == 1


def test_ordinals_of_the_notes():
    from ssl_dynamics.inspect.binomial_rows import ordinal

    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 47, 101, 111, 112)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "47th",
         "101st", "111th", "112th"]


def test_never_note_names_the_largest_p_hat_and_its_epoch():
    from ssl_dynamics.inspect.binomial_rows import never_note

    text = never_note("s", 0.5, np.array([np.nan, 0.2, 0.4, 0.1]), np.array([0, 1, 2, 5]), "r_t")
    assert text == "s: r_t never reaches p0 = 0.5 (largest 0.400 at epoch 2)"


def test_table41_row_with_two_pooled_groups_says_the_pooled_tests_are_undefined():
    """N = 2 seeds, p_hat 0.2, K = 40: expected 25.6, 12.8, 1.6 -> groups {0}, {1-2}: dof 0.
    The row names only the pooled (multi-bin) group, and its note says why p_pooled is NaN."""
    from ssl_dynamics.inspect import binomial_rows as bn

    c = np.zeros((2, 1, 1, 40))
    c[0, 0, 0, :10] = 1
    c[1, 0, 0, 5:11] = 1
    notes = []
    row, _ = bn.chi_entry("x", _setup_rt(c), 0, 0.5, 0.2, 0, 20, notes)
    assert row["dof_pooled"] == 0
    assert row["pooled_tails"] == "1-2"
    assert "pooled tests undefined" in row["note"]
    assert row["n_seeds"] == 2 and row["epoch"] == 3


def test_fig44_noise_curve_is_the_first_draw_of_the_table42_mae():
    """The noise Fig. 4.4 draws is the MAE stream's first draw: its MAE against sorted r_t
    is per_draw[0] (another stream would show noise the table never measured)."""
    from ssl_dynamics.inspect import binomial_rows as bn

    c = (np.random.default_rng(0).random((3, 1, 2, 20)) < 0.6).astype(np.uint8)
    r = c.mean(axis=(0, 2))  # r_t [E, K]
    row, fig = bn.mae_entry("x", _setup_rt(c), r, 0, 0.5, float(r.mean()), 4, 0, 10)
    assert (row["n_seeds"], row["replays"]) == (3, 2)
    assert fig["noise"].shape == (20,)
    assert np.mean(np.abs(np.sort(r[0]) - fig["noise"])) == pytest.approx(fig["per_draw"][0], abs=1e-12)


def test_a_within_seed_correlation_of_exactly_zero_gets_no_note():
    """One image, seed 0 right on both replays, seed 1 on one: P_w = P_b, rho_within = 0,
    which is no negative estimate to explain."""
    from ssl_dynamics.inspect import binomial_rows as bn

    c = np.zeros((2, 1, 2, 1))
    c[0, 0, :, 0] = [1, 1]
    c[1, 0, :, 0] = [1, 0]
    row, _ = bn.mae_entry("x", _setup_rt(c), np.array([[0.75]]), 0, 0.5, 0.75, 4, 0, 10)
    assert row["rho_within"] == 0.0
    assert row["note"] == ""

# ------------------------------------------------------------------------------ data


def test_a_subset_one_image_short_of_the_whole_split_is_still_a_subset():
    """train_subset = N - 1 keeps N - 1 images (and says so in the name); N keeps the split."""
    from ssl_dynamics.data import load_dataset

    ds = load_dataset("synthetic", train_subset=255, subset_seed=3)
    assert len(ds.train_y) == len(ds.train_x) == 255 and ds.name == "synthetic[255@3]"
    assert len(np.unique(ds.source_index())) == 255
    whole = load_dataset("synthetic", train_subset=256)
    assert len(whole.train_y) == 256 and whole.name == "synthetic" and whole.train_source is None

# ------------------------------------------------------------------------------ features


def test_representations_extracted_in_small_batches_equal_one_pass():
    """Real datasets take several FEATURE_BATCH passes: the passes must tile the images."""
    from ssl_dynamics.inspect.features import extract
    from ssl_dynamics.models import build_network

    torch.manual_seed(0)
    net = build_network("resnet18_cifar", 10, 4).eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    whole = extract(net, images, "supervised", "cpu")
    assert whole.shape == (5, 32)
    assert np.allclose(extract(net, images, "supervised", "cpu", batch=2), whole, atol=1e-5)


def test_an_epoch_is_asked_for_up_to_the_last_one_trained(tiny_run, tmp_path):
    """--epoch takes 0 to the last planned epoch, and beyond it the epochs `train extend`
    trained for some seed."""
    import shutil

    from _util import private_copy
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.inspect.features import resolve_epoch

    run = art.Run.open(tiny_run)  # 2 epochs
    assert resolve_epoch(run, "supervised", 2) == (2, "asked for")
    assert resolve_epoch(run, "supervised", 0) == (0, "asked for")
    with pytest.raises(UserError, match="epochs 0-2, not 3"):
        resolve_epoch(run, "supervised", 3)
    paths = art.RunPaths(private_copy(tiny_run, tmp_path))
    shutil.copy(paths.checkpoint("supervised", 1, 2), paths.checkpoint("supervised", 1, 3))  # as extended
    assert resolve_epoch(art.Run.open(paths.root), "supervised", 3) == (3, "asked for")


def test_no_verify_extracts_a_checkpoint_its_manifest_does_not_list(tiny_run, tmp_path):
    """--no-verify skips the manifest: a checkpoint it lacks is cached under the file's own
    sha256; with verification the same checkpoint is refused."""
    import json

    from _util import private_copy, quiet
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.inspect.features import FeatureCache
    from ssl_dynamics.inspect.workspace import open_workspace

    run = private_copy(tiny_run, tmp_path)
    paths = art.RunPaths(run)
    mpath = paths.manifest("supervised", 0)
    manifest = json.loads(mpath.read_text())
    del manifest["checkpoints"]["1"]
    mpath.write_text(json.dumps(manifest))
    ws = open_workspace(run, echo=quiet)
    with pytest.raises(UserError, match="not in its manifest"):
        FeatureCache(ws, "cpu", verify=True, echo=quiet).get("supervised", 0, 1)
    train, test = FeatureCache(ws, "cpu", verify=False, echo=quiet).get("supervised", 0, 1)
    assert train.shape == (48, 32) and test.shape[1] == 32
    import zarr

    entry = zarr.open_group(str(ws.features / "supervised/seed-00/epoch-0001"), mode="r")
    assert entry.attrs["checkpoint_sha256"] == art.sha256_file(paths.checkpoint("supervised", 0, 1))

# ------------------------------------------------------------------------------ train extend


def test_extend_trains_only_the_seeds_asked_for_and_refuses_others(tiny_run, tmp_path):
    from _util import private_copy, quiet
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train.extend import extend_grid
    from ssl_dynamics.train.loop import TrainOptions

    run = private_copy(tiny_run, tmp_path)  # supervised: 2 epochs, seeds 0 and 1
    with pytest.raises(UserError, match=r"seeds \[5\] are not in"):
        extend_grid(run, ["supervised"], 3, TrainOptions(device="cpu"), seeds=(1, 5), echo=quiet, progress=False)
    extend_grid(run, ["supervised"], 3, TrainOptions(device="cpu"), seeds=(1,), echo=quiet, progress=False)
    paths = art.RunPaths(run)
    assert paths.epochs("supervised", 1) == [0, 1, 2, 3]
    assert paths.epochs("supervised", 0) == [0, 1, 2]

# ------------------------------------------------------------------------------ inspect rt


def test_an_existing_bank_that_a_store_refuses_is_kept(tiny_rt, tmp_path):
    """Only a bank built by the refused call is removed; an existing one (--bank of another
    store's bank) stays: it holds that other store's probe images and views."""
    from _util import private_copy, rt
    from conftest import TINY_BANK

    run = private_copy(tiny_rt, tmp_path)
    other = tmp_path / "other-bank.h5"
    rt(run, tmp_path / "other.zarr", setups=["supervised"], bank_path=other, **{**TINY_BANK, "bank_seed": 7})
    with pytest.raises(UserError, match="different bank"):
        rt(run, setups=["supervised"], bank_path=other)
    assert other.exists()

# ------------------------------------------------------------------------------ prepare / grid


def _synthetic_run(**changes):
    from dataclasses import replace

    from ssl_dynamics.config import override, preset

    return replace(override(preset("smoke"), ["train_subset=48"]), seeds=(0,), **changes)


def test_new_run_settings_before_any_training_replace_the_label_permutation(tmp_path):
    """A run with nothing trained takes another label_seed: its old permutation is replaced,
    not compared against the new one and refused."""
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.data import load_dataset
    from ssl_dynamics.train.prepare import check_run, label_permutation, prepare_run

    cfg = _synthetic_run(dataset="synthetic")
    ds = load_dataset("synthetic", train_subset=48)
    quiet = lambda *_: None  # noqa: E731
    paths = prepare_run(tmp_path / "run", cfg, list(cfg.setups), ds, quiet)
    new = _synthetic_run(dataset="synthetic", label_seed=cfg.label_seed + 1)
    assert check_run(paths, new, list(new.setups), ds) == ["run"]
    prepare_run(tmp_path / "run", new, list(new.setups), ds, quiet)
    assert np.array_equal(np.load(art.RunPaths(tmp_path / "run").random_labels),
                          label_permutation(ds.train_y, new.label_seed))


def test_a_setup_whose_seeds_do_not_all_record_bf16_is_counted_as_fp32(tiny_run, tmp_path):
    """Seed 0 records bf16, seed 1 predates the record (it may hold fp32 weights): the
    estimate must not assume bf16 for the setup."""
    from _util import private_copy
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train.grid import recorded_dtype

    paths = art.RunPaths(private_copy(tiny_run, tmp_path))
    for seed in (0, 1):
        m = art.read_json(paths.manifest("supervised", seed))
        m["trained_with"]["checkpoint_dtype"] = "bf16"
        art.write_json_atomic(paths.manifest("supervised", seed), m)
    assert recorded_dtype(paths, "supervised") == "bf16"
    del m["trained_with"]  # seed 1 as written before the dtype was recorded
    art.write_json_atomic(paths.manifest("supervised", 1), m)
    assert recorded_dtype(paths, "supervised") == "fp32"


def test_disk_estimate_counts_the_initial_checkpoint_and_resume_state_of_a_new_seed():
    """A new seed (done -1) writes epochs 0..until and a resume.pt; one after epoch 1 writes
    only the epochs still missing (its resume.pt is rewritten at about the same size); a
    finished seed writes nothing."""
    from ssl_dynamics.config import preset
    from ssl_dynamics.train.prepare import checkpoint_bytes, disk_estimate

    cfg = preset("smoke")
    ckpt, resume = checkpoint_bytes(cfg, cfg.setups["supervised"])
    assert disk_estimate(cfg, [("supervised", 0, -1, 2)]) == 3 * ckpt + resume
    assert disk_estimate(cfg, [("supervised", 0, 1, 2)]) == ckpt
    assert disk_estimate(cfg, [("supervised", 0, 0, 2)]) == 2 * ckpt
    assert disk_estimate(cfg, [("supervised", 0, 2, 2)]) == 0

# ------------------------------------------------------------------------------ training loop


def test_random_label_setups_train_on_the_runs_permutation(tmp_path, monkeypatch):
    """The grid hands random_labels the stored permutation and supervised the true labels."""
    from dataclasses import replace

    from ssl_dynamics import artifacts as art
    from ssl_dynamics.config import override, preset
    from ssl_dynamics.train import grid
    from ssl_dynamics.train.loop import TrainOptions

    seen = {}
    monkeypatch.setattr(grid, "train_seed", lambda paths, cfg, sc, seed, x, targets, *a, **k:
                        seen.setdefault(sc.name, targets.clone()))
    cfg = replace(override(preset("smoke"), ["epochs=1", "train_subset=48"]), seeds=(0,))
    grid.train_grid(tmp_path / "run", cfg, ["supervised", "random_labels"], TrainOptions(device="cpu"),
                    progress=False, echo=lambda *_: None)
    true_y = grid.load_dataset(cfg.dataset, cfg.data_root, 48, cfg.subset_seed).train_y
    permuted = torch.from_numpy(np.load(art.RunPaths(tmp_path / "run").random_labels))
    assert torch.equal(seen["supervised"], true_y)
    assert torch.equal(seen["random_labels"], permuted) and not torch.equal(permuted, true_y)


def test_an_epochs_loss_is_the_mean_over_its_images(monkeypatch):
    """Batch losses are weighted by their images: 40 images in batches of 16, 16 and 8 whose
    losses are 2, 2 and 1 report (16*2 + 16*2 + 8*1) / 40 = 1.8, not the batches' mean 5/3
    nor their sum over the images."""
    from dataclasses import replace

    from ssl_dynamics.config import preset
    from ssl_dynamics.train import loop

    sc = replace(preset("smoke").setups["supervised"], batch_size=16, drop_last=False)
    real = loop.objective_for(sc)

    class Constant:
        def views(self, x, g):
            return real.views(x, g)

        def loss(self, out, targets):
            return out.sum() * 0 + len(targets) / 8, torch.ones(len(targets), dtype=torch.bool)

    monkeypatch.setattr(loop, "objective_for", lambda setup: Constant())
    torch.manual_seed(0)
    model = loop.build_network("resnet18_cifar", sc.head_dim, 4)
    state = loop.SeedState(sc, 0, model, loop.build_optimizer(model, sc), {}, 0)
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    metrics = loop.run_epoch(state, x, torch.zeros(40, dtype=torch.int64), loop.TrainOptions(device="cpu"))
    assert metrics["epoch"] == 1 and metrics["train_acc"] == 1.0
    assert metrics["loss"] == pytest.approx(1.8)
