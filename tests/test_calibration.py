"""The calibrated binomial comparison and the heterogeneity analysis, end to end on arrays with
known truth: equally hard images, and images whose difficulty is drawn from a Beta."""
import numpy as np
import pytest

from ssl_dynamics.inspect.binomial import run_binomial
from ssl_dynamics.inspect.heterogeneity import run_heterogeneity
from ssl_dynamics.inspect.outputs import Outputs
from ssl_dynamics.inspect.rtdata import SetupRt

N, M, K = 30, 10, 1024  # the thesis's design: 30 seeds, 10 replays, 1024 probe images
EPOCHS = np.array([0, 1, 2])
SIMS = 200  # null datasets per calibration: enough to separate p = 0.005 from p > 0.05


def setup_from_rates(name, rates, seed, n=N, m=M):
    """Indicators for epochs 0..2 where image k is correct with probability rates[e, k]."""
    rng = np.random.default_rng(seed)
    e, k = rates.shape
    correct = (rng.random((n, e, m, k)) < rates[None, :, None, :]).astype(np.uint8)
    labels = np.arange(k) % 10
    return SetupRt(setup=name, correct=correct, p_true=correct.astype(np.float32),
                   valid=np.ones((n, e), bool), seeds=np.arange(n), epochs=EPOCHS[:e],
                   labels=labels, targets=labels, probe_indices=np.arange(k))


def homogeneous(seed, p=0.4, m=M):
    return setup_from_rates("simclr", np.array([[0.1] * K, [p] * K, [p] * K]), seed, m=m)


def heterogeneous(seed, a=2.0, b=3.0, name="supervised"):
    pk = np.random.default_rng(seed + 100).beta(a, b, size=K)
    return setup_from_rates(name, np.stack([np.full(K, 0.1), pk, pk]), seed)


def row(res, table, p0):
    return next(r for r in res["tables"][table] if r["p0"] == p0)


def test_homogeneous_images_are_not_called_heterogeneous(tmp_path):
    res = run_binomial({"simclr": homogeneous(0)}, Outputs(tmp_path), p0s=(0.25,), null_sims=SIMS)
    mae = row(res, "table4_2_mae", 0.25)
    # the thesis's statistic sits at the design's floor (about 0.049, see docs/science.md) ...
    assert mae["epoch"] == 1 and 0.044 < mae["mae_mean"] < 0.056
    assert mae["null_mae"] == pytest.approx(0.049, abs=0.003)
    # ... and calibrated it does not call them different (a large p alone would not show that
    # images are equally hard; the rho checks below do)
    assert mae["p"] > 0.01 and abs(mae["z"]) < 3.5
    chi = row(res, "table4_1_chisquare", 0.25)
    assert chi["rho_ci_low"] == 0.0 and chi["rho"] < 0.02 and chi["p_rho0"] > 0.01
    assert chi["p_thesis_sim"] > 0.01


def test_identical_replays_have_a_tenfold_lower_floor(tmp_path):
    one = homogeneous(1, m=1)  # no augmentation: one replay stands for M identical ones
    res = run_binomial({"random_labels": one}, Outputs(tmp_path), p0s=(0.25,), null_sims=SIMS)
    mae = row(res, "table4_2_mae", 0.25)
    assert mae["null_mae"] == pytest.approx(0.0044, abs=0.0015)
    assert mae["p"] > 0.01
    # one replay: no within-seed correlation to estimate; NaN (not 0) and the plain null
    assert np.isnan(mae["rho_within"]) and "rho_within undefined" in mae["note"]
    assert mae["null_mae_within"] == pytest.approx(mae["null_mae"], abs=0.0015)


def test_negative_within_seed_correlation_is_reported_and_simulated_as_zero(tmp_path):
    """Every seed gets exactly half of each image's 10 replays right at epoch 1: two replays
    of one seed are both right with P_w = (5 * 4) / (10 * 9) = 2/9, of two seeds with
    P_b = 1/4, so rho_w = (2/9 - 1/4) / (1/2 - 1/4) = -1/9."""
    d = homogeneous(5)
    correct = d.correct.copy()
    rng = np.random.default_rng(6)
    for i in range(N):
        for k in range(K):
            correct[i, 1, :, k] = rng.permutation([1] * 5 + [0] * 5)
    d = SetupRt("simclr", correct, correct.astype(np.float32), d.valid, d.seeds, d.epochs, d.labels,
                d.targets, d.probe_indices)
    mae = row(run_binomial({"simclr": d}, Outputs(tmp_path), p0s=(0.25,), null_sims=SIMS),
              "table4_2_mae", 0.25)
    assert mae["epoch"] == 1 and mae["rho_within"] == pytest.approx(-1 / 9)
    assert "< 0" in mae["note"]
    # simulated with independent replays: the within-seed null is the plain one
    assert mae["null_mae_within"] == pytest.approx(mae["null_mae"], abs=0.003)


def test_range_levels_are_recorded_beside_the_fractions(tmp_path):
    import json

    import h5py

    data = {"simclr": homogeneous(0), "supervised": heterogeneous(2)}
    res = run_binomial(data, Outputs(tmp_path), p0s="range", null_sims=20)
    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        g = f["binomial"]
        assert g.attrs["p0_mode"] == "range" and json.loads(g.attrs["p0s"]) == [0.25, 0.5, 0.75]
        for s in data:
            levels = g[f"{s}/p0_levels"][()]
            assert [r["p0"] for r in res["tables"]["table4_2_mae"] if r["setup"] == s] == levels.tolist()
    run_binomial(data, Outputs(tmp_path / "fixed"), p0s=(0.25, 0.5), null_sims=20)
    with h5py.File(tmp_path / "fixed" / "analysis.h5", "r") as f:
        assert f["binomial"].attrs["p0_mode"] == "fixed"
        assert f["binomial/simclr/p0_levels"][()].tolist() == [0.25, 0.5]


def test_heterogeneous_images_are_detected_and_rho_recovered(tmp_path):
    res = run_binomial({"supervised": heterogeneous(2)}, Outputs(tmp_path), p0s=(0.25,), null_sims=SIMS)
    mae = row(res, "table4_2_mae", 0.25)
    assert mae["p"] == pytest.approx(2 / (SIMS + 1)) and mae["z"] > 10  # two-sided minimum
    assert mae["p_within"] == pytest.approx(2 / (SIMS + 1))
    chi = row(res, "table4_1_chisquare", 0.25)
    # p_k ~ Beta(2, 3): rho = 1 / (2 + 3 + 1)
    assert chi["rho_ci_low"] <= 1 / 6 <= chi["rho_ci_high"] and chi["rho_ci_low"] > 0.1
    assert chi["p_thesis_sim"] == pytest.approx(1 / (SIMS + 1))


def test_within_seed_null_accounts_for_correlated_replays(tmp_path):
    # equally hard images, but each seed's replays of an image share a rate: the plain
    # null calls this heterogeneous, the within-seed null does not
    rng = np.random.default_rng(3)
    scale = 1 / 0.3 - 1
    q = rng.beta(0.4 * scale, 0.6 * scale, size=(N, 1, 1, K))
    correct = (rng.random((N, 1, M, K)) < q).astype(np.uint8)
    correct = np.concatenate([np.zeros_like(correct), correct, correct], axis=1)
    d = SetupRt("simclr", correct, correct.astype(np.float32), np.ones((N, 3), bool), np.arange(N),
                EPOCHS, np.arange(K) % 10, np.arange(K) % 10, np.arange(K))
    mae = row(run_binomial({"simclr": d}, Outputs(tmp_path), p0s=(0.25,), null_sims=SIMS),
              "table4_2_mae", 0.25)
    assert mae["rho_within"] == pytest.approx(0.3, abs=0.03)
    # the plain null calls it heterogeneous (r_t too wide: z < 0), the within-seed one does not
    assert mae["p"] < 0.01 and mae["z"] < -3 and mae["p_within"] > 0.01


def test_heterogeneity_and_agreement(tmp_path):
    same = heterogeneous(4, name="supervised")
    twin = setup_from_rates("random_labels", np.stack([np.full(K, 0.1), *[same.correct[:, 1].mean((0, 1))] * 2]), 5)
    data = {"simclr": homogeneous(6), "supervised": same, "random_labels": twin}
    res = run_heterogeneity(data, Outputs(tmp_path), ref_epochs=(1,))
    rho = {r["setup"]: r for r in res["tables"]["heterogeneity"]}
    assert rho["simclr"]["ci_low"] == 0.0 and rho["simclr"]["rho"] < 0.02
    assert rho["supervised"]["ci_low"] <= 1 / 6 <= rho["supervised"]["ci_high"]
    agree = {(r["setup_a"], r["setup_b"]): r["spearman"] for r in res["tables"]["hardness_agreement"]}
    assert agree[("supervised", "random_labels")] > 0.8  # same per-image difficulty
    assert abs(agree[("simclr", "supervised")]) < 0.15  # unrelated
    assert (tmp_path / "figures" / "fig_heterogeneity.png").exists()
    assert (tmp_path / "figures" / "fig_hardness_agreement.png").exists()


def test_heterogeneity_figure_names_the_reference_setup(tmp_path, monkeypatch):
    # the reference is not the first setup of the data: the aligned panel must name it
    labels = {}

    def keep_labels(self, fig, name):
        labels[name] = [ax.get_xlabel() for ax in fig.axes]
        return tmp_path / f"{name}.png"

    monkeypatch.setattr(Outputs, "save_figure", keep_labels)
    data = {"supervised": heterogeneous(7), "simclr": homogeneous(8)}
    run_heterogeneity(data, Outputs(tmp_path), ref_setup="simclr", ref_epochs=(1,))
    aligned = labels["fig_heterogeneity"][1]
    assert "SimCLR" in aligned and "upervised" not in aligned


def test_agreement_lists_a_pair_of_epochs_once_when_several_reference_epochs_align_to_it():
    from ssl_dynamics.inspect.heterogeneity import agreement

    data = {"simclr": homogeneous(6), "supervised": heterogeneous(4, name="supervised"),
            "random_labels": setup_from_rates("random_labels", np.full((3, K), 0.3), 5)}
    r = {s: np.random.default_rng(i).random((3, K)) for i, s in enumerate(data)}
    # reference epochs 0 and 1 of simclr; the other two setups align both to their epoch 2
    aligned = {"simclr": np.array([0, 1]), "supervised": np.array([2, 2]), "random_labels": np.array([2, 2])}
    rows = agreement(data, r, aligned, "simclr", np.array([0, 1]))
    pairs = [(x["setup_a"], x["setup_b"], x["ref_epoch"]) for x in rows]
    e = [int(v) for v in data["simclr"].epochs[:2]]
    assert pairs == [("simclr", "supervised", e[0]), ("simclr", "random_labels", e[0]),
                     ("supervised", "random_labels", e[0]),
                     ("simclr", "supervised", e[1]), ("simclr", "random_labels", e[1])]
