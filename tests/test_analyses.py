"""Tests for the phase-two analyses: dynamics (Fig. 4.1/4.2), binomial (Tables 4.1/4.2,
Fig. 4.3-4.5, B.1) and classes (Fig. 5.3), on small synthetic r_t arrays."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from scipy.stats import binom

from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect import binomial_rows as bn
from ssl_dynamics.inspect import stats as st
from ssl_dynamics.inspect.binomial import run_binomial
from ssl_dynamics.inspect.classes import run_classes
from ssl_dynamics.inspect.dynamics import default_ref_epochs, reference_alignment, run_dynamics
from ssl_dynamics.inspect.outputs import Outputs
from ssl_dynamics.inspect.plots import compress_ints, seed_count_note, setup_label
from ssl_dynamics.inspect.rtdata import SetupRt

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EPOCHS = np.array([0, 1, 2, 5, 10, 20])  # numbers differ from indices on purpose


def make_setup(name, seed, s=5, m=3, k=200, epochs=EPOCHS, speed=1.0, spread=1.0,
               second=False, valid=None, labels=None):
    """Correctness drawn from per-image difficulties; P(correct) grows with the epoch."""
    rng = np.random.default_rng(seed)
    e = len(epochs)
    labels = rng.integers(0, 10, k) if labels is None else labels
    difficulty = rng.random(k) * spread + 0.15 * labels / 10  # some classes harder
    progress = speed * np.linspace(-0.2, 1.4, e)
    logits = 6 * (progress[:, None, None] - difficulty[None, None, :])  # [E, 1, K]
    logits = logits + rng.normal(0, 0.7, (e, m, k))  # per-augmentation difficulty
    prob = 1 / (1 + np.exp(-logits))

    def draw():
        return (rng.random((s, e, m, k)) < prob[None]).astype(np.uint8)

    correct = draw()
    return SetupRt(
        setup=name, correct=correct, p_true=prob[None].repeat(s, 0).astype(np.float32),
        valid=np.ones((s, e), bool) if valid is None else valid, seeds=np.arange(s),
        epochs=np.asarray(epochs), labels=labels, targets=labels, probe_indices=np.arange(k),
        correct_second=draw() if second else None, p_true_second=None)


def staircase_setup(name, fractions, s=4, m=2, k=100, epochs=None, valid=None):
    """At epoch index e exactly the first fractions[e]*K images are correct (all seeds/augs)."""
    e = len(fractions)
    correct = np.zeros((s, e, m, k), np.uint8)
    for i, f in enumerate(fractions):
        correct[:, i, :, : int(round(f * k))] = 1
    epochs = np.arange(e) * 3 + 1 if epochs is None else np.asarray(epochs)
    return SetupRt(setup=name, correct=correct, p_true=correct.astype(np.float32),
                   valid=np.ones((s, e), bool) if valid is None else valid, seeds=np.arange(s),
                   epochs=epochs, labels=np.arange(k) % 10, targets=np.arange(k) % 10,
                   probe_indices=np.arange(k))


def three_setups():
    return {
        "simclr": make_setup("simclr", 1, speed=0.9, spread=0.6, second=True),
        "supervised": make_setup("supervised", 2, speed=1.2, spread=1.0),
        "random_labels": make_setup("random_labels", 3, speed=0.7, spread=0.2),
    }


FIGURES = ["fig4_1_sorted_rt", "fig4_2_aligned", "fig4_3_binomial_counts", "fig4_3_sorted_rtilde",
           "fig4_4_binomial_noise", "fig4_5_aug_spread", "figB_1_first_second", "fig5_3_class_rt"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """All three analyses on three synthetic setups, run once."""
    run = tmp_path_factory.mktemp("full") / "run"
    data = three_setups()
    out = Outputs(run)
    res = {
        "dynamics": run_dynamics(data, out, ref_setup="simclr", ref_epochs=(1, 5, 20)),
        "binomial": run_binomial(data, out, draws=4, seed=0, null_sims=50),
        "classes": run_classes(data, out, CLASSES),
    }
    return data, out, res


def table(out: Outputs, name: str) -> list[dict]:
    return json.loads((out.tables / f"{name}.json").read_text())["rows"]


# ---------------------------------------------------------------------------- outputs exist


def test_every_figure_png_and_pdf_written(full):
    _, out, res = full
    for name in FIGURES:
        for ext in ("png", "pdf"):
            p = out.figures / f"{name}.{ext}"
            assert p.exists() and p.stat().st_size > 1000, p
    listed = [p for r in res.values() for p in r["figures"]]
    assert sorted(listed) == sorted(str(out.figures / f"{n}.png") for n in FIGURES)


def test_tables_have_expected_rows_and_columns(full):
    _, out, res = full
    aligned = res["dynamics"]["tables"]["aligned_epochs"]
    assert [r["ref_epoch"] for r in aligned] == [1, 5, 20]
    for r in aligned:
        for s in ("simclr", "supervised", "random_labels"):
            assert f"{s}_epoch" in r and f"{s}_mean_rt" in r
        assert r["simclr_epoch"] == r["ref_epoch"]
    chi = res["binomial"]["tables"]["table4_1_chisquare"]
    assert len(chi) == 9
    assert [(r["setup"], r["p0"]) for r in chi[:3]] == [("simclr", 0.25), ("simclr", 0.5), ("simclr", 0.75)]
    for col in ("epoch", "n_seeds", "p_hat0", "chi2_thesis_allbins", "p_thesis_allbins", "chi2_pooled",
                "dof_pooled", "p_pooled", "g_pooled", "p_g", "pooled_tails"):
        assert col in chi[0]
    mae = res["binomial"]["tables"]["table4_2_mae"]
    assert len(mae) == 9 and {"mae_mean", "mae_std", "mae", "p_hat0", "epoch"} <= set(mae[0])
    for r in mae:  # the thesis's "mean ± std" text is the two numbers, rounded
        if r["epoch"] is not None:
            assert r["mae"] == f"{r['mae_mean']:.3f} ± {r['mae_std']:.3f}" and r["mae_std"] > 0
    classes = res["classes"]["tables"]["class_rt"]
    assert len(classes) == 30
    assert [r["class"] for r in classes[:10]] == CLASSES
    assert {"mean_rt_last", "epoch_reaching_0.5", "n_images"} <= set(classes[0])
    fs = res["binomial"]["tables"]["first_second_diff"]
    assert fs and all(r["setup"] == "simclr" for r in fs)
    # the same rows went to CSV and JSON
    for name in ("aligned_epochs", "table4_1_chisquare", "table4_2_mae", "class_rt"):
        assert (out.tables / f"{name}.csv").exists()
        assert len(table(out, name)) == len(
            {**res["dynamics"]["tables"], **res["binomial"]["tables"], **res["classes"]["tables"]}[name])


def test_analysis_h5_groups(full):
    data, out, _ = full
    with h5py.File(out.analysis, "r") as f:
        assert {"dynamics", "binomial", "classes"} <= set(f)
        r = f["dynamics/simclr/r_t"][()]
        np.testing.assert_allclose(r, st.r_t(data["simclr"].correct), rtol=1e-6)
        assert f["binomial/simclr/first_second/r_t_second"].shape == r.shape
        assert f["classes/supervised/class_mean_r_t"].shape == (len(EPOCHS), 10)
        assert list(f["dynamics/alignment/ref_epochs"][()]) == [1, 5, 20]


def test_class_means_match_stats(full):
    data, _, res = full
    rows = res["classes"]["tables"]["class_rt"]
    d = data["supervised"]
    cm = st.per_class_mean(st.r_t(d.correct, d.valid), d.labels, 10)
    got = [r for r in rows if r["setup"] == "supervised"]
    np.testing.assert_allclose([r["mean_rt_last"] for r in got], cm[-1])
    for c, r in enumerate(got):
        t = st.first_epoch_reaching(cm[:, c], 0.5)
        assert r["epoch_reaching_0.5"] == (None if t is None else int(EPOCHS[t]))


# ---------------------------------------------------------------------------- dynamics


def test_aligned_epochs_equal_hand_computed_argmin(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    ref = staircase_setup("simclr", [0.1, 0.3, 0.5, 0.7, 0.9], epochs=[1, 2, 3, 4, 5])
    other = staircase_setup("supervised", [0.05, 0.2, 0.45, 0.6, 0.62, 0.95], epochs=[0, 10, 20, 30, 40, 50])
    data = {"simclr": ref, "supervised": other}
    res = run_dynamics(data, Outputs(tmp_run), "simclr", (1, 3, 4, 5))
    # epoch 0 (the initialization) is no candidate: 0.1 -> 10 (0.2); 0.5 vs 0.45 -> 20;
    # 0.7 vs 0.62 (0.08) < 0.95 -> 40; 0.9 -> 50
    assert res["aligned"]["supervised"] == [10, 20, 40, 50]
    rows = res["tables"]["aligned_epochs"]
    assert [r["supervised_epoch"] for r in rows] == [10, 20, 40, 50]
    np.testing.assert_allclose([r["supervised_mean_rt"] for r in rows], [0.2, 0.45, 0.62, 0.95])
    np.testing.assert_allclose([r["simclr_mean_rt"] for r in rows], [0.1, 0.5, 0.7, 0.9])
    # with the initialization allowed, |0.1 - 0.05| < |0.1 - 0.2| picks epoch 0
    res = run_dynamics(data, Outputs(tmp_run), "simclr", (1, 3, 4, 5), include_init=True)
    assert res["aligned"]["supervised"] == [0, 20, 40, 50]


def test_bad_reference_epoch_lists_available(tmp_run):
    data = {"simclr": make_setup("simclr", 1, k=40)}
    with pytest.raises(UserError, match=r"7.*0-2, 5, 10, 20"):
        run_dynamics(data, Outputs(tmp_run), "simclr", (1, 7))
    with pytest.raises(UserError, match="reference setup 'foo' is not in the data"):
        run_dynamics(data, Outputs(tmp_run), "foo", (1,))


def test_default_reference_epochs_fit_short_runs():
    # the thesis's epochs where the run has them (epoch 0 never) ...
    assert default_ref_epochs(make_setup("simclr", 1, k=10, epochs=np.arange(0, 60)))[0] == (1, 5, 10, 25, 50)
    # ... and a log-spread of what a short run has otherwise, with a note saying so
    epochs, note = default_ref_epochs(make_setup("simclr", 1, k=10, epochs=np.arange(0, 4)))
    assert epochs == (1, 2, 3) and "aligning at epochs 1-3" in note


def test_default_reference_is_simclr_else_the_first(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    data = {"supervised": make_setup("supervised", 2, k=40), "random_labels": make_setup("random_labels", 3, k=40)}
    res = run_dynamics(data, Outputs(tmp_run), None, (1, 20), curve_epochs="all")
    assert res["ref_setup"] == "supervised"
    data["simclr"] = make_setup("simclr", 4, k=40)
    assert run_dynamics(data, Outputs(tmp_run), None, (1,))["ref_setup"] == "simclr"


def counts_setup(name, counts, k=12, epochs=None, valid=None):
    """One seed, one augmentation, K images: at epoch index e the first counts[e] are right."""
    e = len(counts)
    c = np.zeros((1, e, 1, k), np.uint8)
    for i, n in enumerate(counts):
        c[0, i, 0, :n] = 1
    lab = np.arange(k) % 10
    return SetupRt(name, c, c.astype(np.float32), np.ones((1, e), bool) if valid is None else valid,
                   np.arange(1), np.arange(1, e + 1) if epochs is None else np.asarray(epochs), lab, lab,
                   np.arange(k))


def test_exact_tie_goes_to_the_earliest_epoch_for_non_dyadic_means():
    # mean r_t 3/12 against 2/12 and 4/12: an exact tie, though floats make the later closer
    data = {"simclr": counts_setup("simclr", [3]), "supervised": counts_setup("supervised", [2, 4])}
    al = reference_alignment(data, "simclr", [1])
    assert data["supervised"].epochs[al.aligned["supervised"]].tolist() == [1]


def test_dynamics_reads_missing_checkpoints_as_missing_not_wrong(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    valid = np.ones((4, 6), bool)
    valid[1, 3] = False  # seed 1 at epoch 10
    d = staircase_setup("supervised", [0.0, 0.1, 0.3, 0.55, 0.8, 1.0], valid=valid)
    d.correct[1, 3] = 0  # what the store holds where nothing was evaluated
    ref = staircase_setup("simclr", [0.0, 0.1, 0.3, 0.55, 0.8, 1.0])
    out = Outputs(tmp_run)
    res = run_dynamics({"simclr": ref, "supervised": d}, out, "simclr", (10,))
    assert res["aligned"]["supervised"] == [10]  # 0.55 with 3 seeds, not 0.4125 with 4
    assert res["tables"]["aligned_epochs"][0]["supervised_mean_rt"] == pytest.approx(0.55)
    with h5py.File(out.analysis) as f:
        r = f["dynamics/supervised/r_t"][()]
        assert r[3].tolist() == [1.0] * 55 + [0.0] * 45  # seeds 0, 2, 3 only
        np.testing.assert_array_equal(r, st.r_t(d.correct, d.valid).astype(np.float32))
        assert f["dynamics/alignment/supervised_epoch"][()].tolist() == [10]  # numbers, not indices
        assert f["dynamics/alignment/simclr_epoch"][()].tolist() == [10]


def test_a_setup_without_an_epoch_after_the_init_is_named(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    valid = np.array([[True, False, False]])  # only the initialization evaluated
    data = {"simclr": counts_setup("simclr", [0, 3, 6], epochs=[0, 1, 2]),
            "supervised": counts_setup("supervised", [1, 5, 9], epochs=[0, 1, 2], valid=valid)}
    with pytest.raises(UserError, match=r"setup supervised has no evaluated epoch after the "
                                        r"initialization.*inspect rt --epochs.*--include-init"):
        run_dynamics(data, Outputs(tmp_run), "simclr", (1,))
    assert run_dynamics(data, Outputs(tmp_run), "simclr", (1,), include_init=True)["aligned"]["supervised"] == [0]


def test_a_setup_never_evaluated_is_refused_with_the_fix(tmp_run, monkeypatch):
    """dynamics, binomial and classes each name the setup and the two ways out."""
    no_figures(monkeypatch)
    data = {"simclr": counts_setup("simclr", [0, 3, 6], epochs=[0, 1, 2]),
            "random_labels": counts_setup("random_labels", [1, 5, 9], epochs=[0, 1, 2],
                                          valid=np.zeros((1, 3), bool))}
    want = (r"^setup random_labels has no evaluated checkpoint in the r_t store: `inspect rt --setup "
            r"random_labels` evaluates it, or leave it out with --setup$")
    for analysis in (lambda: run_dynamics(data, Outputs(tmp_run), "simclr", (1,)),
                     lambda: run_binomial(data, Outputs(tmp_run), (0.5,), null_sims=10),
                     lambda: run_classes(data, Outputs(tmp_run), [str(c) for c in range(10)])):
        with pytest.raises(UserError, match=want):
            analysis()


def test_reference_epochs_repeated_once_and_epoch_0_only_with_include_init(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    data = {"simclr": counts_setup("simclr", [0, 3, 6], epochs=[0, 1, 2]),
            "supervised": counts_setup("supervised", [1, 4, 9], epochs=[0, 1, 2])}
    res = run_dynamics(data, Outputs(tmp_run), "simclr", (2, 1, 2))
    assert [r["ref_epoch"] for r in res["tables"]["aligned_epochs"]] == [2, 1]
    with pytest.raises(UserError, match="reference epoch 0 of simclr is the initialization.*--include-init"):
        run_dynamics(data, Outputs(tmp_run), "simclr", (0, 1))
    res = run_dynamics(data, Outputs(tmp_run), "simclr", (0, 1), include_init=True)
    assert res["aligned"]["supervised"] == [0, 1]  # 0/12 -> 1/12 at the init; 3/12 -> 4/12


def test_short_run_reference_epochs_spread_on_a_log_scale_of_the_epoch_number():
    import math

    have = [2, 3, 4, 6, 7, 8, 9, 100, 1000]  # none of the thesis's 1, 5, 10, 25, 50, 200
    epochs, note = default_ref_epochs(make_setup("simclr", 1, k=10, epochs=np.array([0] + have)))
    # slow: 8 evenly spaced points of log(1 + epoch) from the first to the last, each the nearest
    lo, hi = math.log(1 + have[0]), math.log(1 + have[-1])
    want = sorted({min(have, key=lambda e: abs(math.log(1 + e) - (lo + i * (hi - lo) / 7))) for i in range(8)})
    assert list(epochs) == want == [2, 6, 9, 100, 1000] and "aligning at epochs" in note


def drawn_curves(monkeypatch) -> dict[str, int]:
    """Skip rendering; record the number of curves in each panel of Fig. 4.1 by its title."""
    seen: dict[str, int] = {}

    def close(self, fig, name):
        import matplotlib.pyplot as plt

        if name == "fig4_1_sorted_rt":
            seen.update({ax.get_title().split(" (")[0]: len(ax.get_lines()) for ax in fig.axes if ax.get_lines()})
        plt.close(fig)
        return self.figures / f"{name}.png"

    monkeypatch.setattr(Outputs, "save_figure", close)
    return seen


def test_fig41_draws_every_epoch_unless_told(tmp_run, monkeypatch):
    seen = drawn_curves(monkeypatch)
    data = {"simclr": make_setup("simclr", 1, s=2, m=1, k=20, epochs=np.arange(12))}
    run_dynamics(data, Outputs(tmp_run), "simclr", (1, 5))
    assert seen == {"SimCLR": 12}  # as the thesis's Fig. 4.1: every epoch
    run_dynamics(data, Outputs(tmp_run), "simclr", (1, 5), curve_epochs=3)
    assert seen == {"SimCLR": 3}


def test_dynamics_and_heterogeneity_cli_options(tiny_rt, tmp_path, monkeypatch, capsys):
    import sys

    from ssl_dynamics.inspect import cli as inspect_cli

    def call(command, *args):
        monkeypatch.setattr(sys, "argv", ["inspect", command, str(tiny_rt), "--work", str(tmp_path), *args])
        try:
            inspect_cli.main()
        except SystemExit as e:
            return e.code, capsys.readouterr().err
        return 0, capsys.readouterr().err

    seen = drawn_curves(monkeypatch)
    assert call("dynamics")[0] == 0 and set(seen.values()) == {3}  # epochs 0, 1, 2 of every setup
    assert call("dynamics", "--curves", "2")[0] == 0 and set(seen.values()) == {2}
    for bad in ("0", "x", ""):
        code, err = call("dynamics", "--curves", bad)
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: --curves '{bad}': use 'all'"), err
    for command in ("dynamics", "heterogeneity"):
        code, err = call(command, "--epochs", "0,1")
        assert code == 2 and err.count("\n") == 1 and "reference epoch 0 of simclr is the initialization" in err
        assert call(command, "--epochs", "0,1", "--include-init") == (0, "")


# ---------------------------------------------------------------------------- binomial


def test_table41_equals_direct_stats_calls(full):
    data, _, res = full
    rows = res["binomial"]["tables"]["table4_1_chisquare"]
    checked = 0
    for row in rows:
        d = data[row["setup"]]
        p_tilde = st.epoch_means(st.r_tilde(d.correct, 0, d.valid))
        t = st.first_epoch_reaching(p_tilde, row["p0"])
        if t is None:
            assert row["epoch"] is None
            continue
        assert row["epoch"] == int(d.epochs[t])
        counts = d.correct[:, t, 0, :].sum(axis=0)
        n = d.correct.shape[0]
        p_hat = counts.sum() / (n * counts.size)
        assert row["n_seeds"] == n
        assert row["p_hat0"] == pytest.approx(p_hat)
        chi, p = st.chisquare_faithful(counts, n, p_hat)
        assert row["chi2_thesis_allbins"] == pytest.approx(chi)
        assert row["p_thesis_allbins"] == pytest.approx(p)
        chi_p, p_p, dof, _ = st.chisquare_pooled(counts, n, p_hat)
        assert (row["chi2_pooled"], row["dof_pooled"]) == (pytest.approx(chi_p), dof)
        assert row["p_pooled"] == pytest.approx(p_p, nan_ok=True)
        g, p_g, _, _ = st.g_test_pooled(counts, n, p_hat)
        assert row["g_pooled"] == pytest.approx(g)
        assert row["p_g"] == pytest.approx(p_g, nan_ok=True)
        # the thesis's dof: bins 0..N with a nonzero expected count, minus 1, minus 1 for the
        # estimated p; the smallest expected count over all N + 1 bins, K * Binom(N, p).pmf
        expected = [counts.size * binom.pmf(j, n, p_hat) for j in range(n + 1)]
        assert row["dof_thesis"] == sum(1 for e in expected if e > 0) - 2
        assert row["min_expected_allbins"] == pytest.approx(min(expected), rel=1e-9)
        checked += 1
    assert checked >= 3


def p_hat_all_augmentations(d: SetupRt) -> np.ndarray:
    """The thesis: Table 4.2's p_hat0 = correct indicators of the valid seeds over ALL augmentations
    / (N * M * K), per epoch, from the integers (no r_t, no epoch_means)."""
    valid = np.asarray(d.valid, bool)
    _, _, m, k = d.correct.shape
    return np.array([d.correct[valid[:, t], t].astype(np.int64).sum() / (valid[:, t].sum() * m * k)
                     for t in range(len(d.epochs))])


def test_table42_equals_direct_mae(full):
    data, _, res = full
    rows = [row for row in res["binomial"]["tables"]["table4_2_mae"] if row["epoch"] is not None]
    assert len(rows) >= 6
    for row in rows:
        d = data[row["setup"]]
        p_all = p_hat_all_augmentations(d)
        t = next(t for t in range(len(d.epochs)) if d.epochs[t] > 0 and p_all[t] >= row["p0"])
        assert row["epoch"] == int(d.epochs[t])
        assert row["p_hat0"] == p_all[t]  # all augmentations, not augmentation 0's p~0
        r = st.r_t(d.correct, d.valid)
        mean, std, _ = st.binomial_mae(r[t], 5, p_all[t], 4,
                                       rng=bn.stream_rng(0, row["setup"], row["p0"], bn.STREAM_MAE))
        assert (row["mae_mean"], row["mae_std"]) == (pytest.approx(mean), pytest.approx(std))


def no_figures(monkeypatch):
    """Skip rendering (the slow part) in tests that only look at numbers."""
    def close(self, fig, name):
        import matplotlib.pyplot as plt

        plt.close(fig)
        return self.figures / f"{name}.png"

    monkeypatch.setattr(Outputs, "save_figure", close)


def test_mae_deterministic_given_seed(tmp_path, monkeypatch):
    no_figures(monkeypatch)
    data = {"supervised": make_setup("supervised", 2, k=60)}

    def maes(seed, name):
        res = run_binomial(data, Outputs(tmp_path / name), p0s=(0.5,), draws=3, seed=seed, null_sims=50)
        return [(r["mae_mean"], r["mae_std"]) for r in res["tables"]["table4_2_mae"]]

    a, b, c = maes(7, "a"), maes(7, "b"), maes(8, "c")
    assert a == b
    assert a != c
    # adding another setup does not change this setup's draws
    both = dict(data, simclr=make_setup("simclr", 1, k=60))
    res = run_binomial(both, Outputs(tmp_path / "d"), p0s=(0.5,), draws=3, seed=7, null_sims=50)
    got = [(r["mae_mean"], r["mae_std"]) for r in res["tables"]["table4_2_mae"] if r["setup"] == "supervised"]
    assert got == a


def exact_half_setup(name="supervised"):
    """3 seeds, 1 augmentation, 4 images of class 0; at epoch 5 the images' counts are
    2, 1, 2, 1 of 3: exactly half correct, though a float mean of the rates 2/3, 1/3, 2/3,
    1/3 is 0.49999999999999994. Epoch 9: all correct."""
    correct = np.zeros((3, 3, 1, 4), np.uint8)
    correct[:2, 1, 0, [0, 2]] = 1
    correct[0, 1, 0, [1, 3]] = 1
    correct[:, 2] = 1
    labels = np.zeros(4, np.int64)
    return SetupRt(setup=name, correct=correct, p_true=correct.astype(np.float32),
                   valid=np.ones((3, 3), bool), seeds=np.arange(3), epochs=np.array([0, 5, 9]),
                   labels=labels, targets=labels, probe_indices=np.arange(4))


def test_exact_tie_with_p0_is_reached_in_every_table(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    data = {"supervised": exact_half_setup()}
    res = run_binomial(data, Outputs(tmp_run), p0s=(0.5,), draws=2, null_sims=20)
    for name in ("table4_1_chisquare", "table4_2_mae"):
        (row,) = res["tables"][name]
        assert (row["epoch"], row["p_hat0"]) == (5, 0.5), name
    rows = run_classes(data, Outputs(tmp_run), CLASSES)["tables"]["class_rt"]
    assert rows[0]["epoch_reaching_0.5"] == 5


def test_table41_uses_augmentation_0_and_table42_all_augmentations(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    # fraction of images correct (every seed) per epoch for augmentation 0 and 1: p~0 reaches
    # 0.5 at epoch 2 (0.6), the mean over both augmentations only at epoch 4 (0.7)
    fractions = {0: [0.0, 0.6, 0.8], 1: [0.0, 0.2, 0.6]}
    correct = np.zeros((2, 3, 2, 10), np.uint8)
    for j, fs in fractions.items():
        for t, f in enumerate(fs):
            correct[:, t, j, : int(round(f * 10))] = 1
    labels = np.arange(10)
    d = SetupRt(setup="supervised", correct=correct, p_true=correct.astype(np.float32),
                valid=np.ones((2, 3), bool), seeds=np.arange(2), epochs=np.array([0, 2, 4]),
                labels=labels, targets=labels, probe_indices=np.arange(10))
    res = run_binomial({"supervised": d}, Outputs(tmp_run), p0s=(0.5,), draws=2, null_sims=20)
    (chi,), (mae,) = res["tables"]["table4_1_chisquare"], res["tables"]["table4_2_mae"]
    assert (chi["epoch"], chi["p_hat0"]) == (2, pytest.approx(0.6))
    assert (mae["epoch"], mae["p_hat0"]) == (4, pytest.approx(0.7))


def second_view_setup():
    """SimCLR whose second views equal the first ones except seed 0, augmentation 0 of every
    even image, flipped; seed 2 has no checkpoint at epoch index 2."""
    rng = np.random.default_rng(11)
    s, e, m, k = 3, 4, 2, 12
    correct = (rng.random((s, e, m, k)) < 0.5).astype(np.uint8)
    second = correct.copy()
    second[0, :, 0, 0::2] ^= 1
    valid = np.ones((s, e), bool)
    valid[2, 2] = False
    labels = np.arange(k) % 10
    return SetupRt(setup="simclr", correct=correct, p_true=correct.astype(np.float32), valid=valid,
                   seeds=np.arange(s), epochs=np.array([0, 1, 2, 5]), labels=labels,
                   targets=labels, probe_indices=np.arange(k), correct_second=second)


def slow_rate(c, valid, augs):
    """Per-image rate at one epoch: c [S, M, K], valid [S] -> [K], by loops."""
    return np.array([np.mean([c[i, j, img] for i in range(c.shape[0]) if valid[i] for j in augs])
                     for img in range(c.shape[2])])


def slow_corr(a, b):
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    return float(np.sum(da * db) / math.sqrt(np.sum(da * da) * np.sum(db * db)))


def test_first_second_diff_values(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    d = second_view_setup()
    out = Outputs(tmp_run)
    rows = run_binomial({"simclr": d}, out, p0s=(0.5,), draws=2, null_sims=20)["tables"]["first_second_diff"]
    assert rows == table(out, "first_second_diff")
    assert [r["epoch"] for r in rows] == [1, 2, 5]  # the thesis's epochs 1, 2, 5 (30, 200 missing)
    for t, row in zip([1, 2, 3], rows):
        ok = d.valid[:, t]
        n = int(ok.sum())
        assert row["n_seeds"] == n
        # the flip moves r_t of each even image by 1/(N*M) and r~_t (augmentation 0) by 1/N
        assert row["mean_abs_diff_r_t"] == pytest.approx(0.5 / (n * 2))
        assert row["mean_abs_diff_r_tilde"] == pytest.approx(0.5 / n)
        r1, r2 = (slow_rate(c[:, t], ok, [0, 1]) for c in (d.correct, d.correct_second))
        t1, t2 = (slow_rate(c[:, t], ok, [0]) for c in (d.correct, d.correct_second))
        assert row["mean_abs_diff_r_t"] == pytest.approx(np.mean(np.abs(r1 - r2)))
        assert row["corr_r_t"] == pytest.approx(slow_corr(r1, r2), nan_ok=True)
        assert row["corr_r_tilde"] == pytest.approx(slow_corr(t1, t2), nan_ok=True)
    assert all(np.isfinite(r["corr_r_t"]) and r["corr_r_t"] < 1 for r in rows)


def test_fig_b1_prefers_the_thesis_epochs_else_a_log_spread():
    from ssl_dynamics.inspect.first_second import first_second

    def drawn(epochs):
        d = make_setup("simclr", 3, s=2, m=1, k=12, epochs=np.asarray(epochs), second=True)
        rows, curves = first_second({"simclr": d}, ["simclr"], {"simclr": st.r_t(d.correct)}, {})
        assert [c[0] for c in curves["simclr"]] == [r["epoch"] for r in rows]
        return [r["epoch"] for r in rows]

    assert drawn(range(201)) == [1, 2, 5, 30, 200]  # Fig. B.1 of the thesis
    # fewer than two of them: 5 epochs evenly spread in log(1 + epoch) from the first to the last
    assert drawn([0, 3, 4, 6, 7, 8, 9, 10, 11, 99]) == [0, 3, 9, 11, 99]  # targets 0, 2.2, 9, 30.6, 99


def test_p0_never_reached_gives_nan_row(tmp_run):
    data = {"random_labels": staircase_setup("random_labels", [0.0, 0.1, 0.2, 0.3])}
    out = Outputs(tmp_run)
    res = run_binomial(data, out, p0s=(0.25, 0.5, 0.75), draws=2, null_sims=50)
    chi = res["tables"]["table4_1_chisquare"]
    assert chi[0]["epoch"] == 10 and chi[0]["p_hat0"] == pytest.approx(0.3)
    for row in chi[1:] + res["tables"]["table4_2_mae"][1:]:
        assert row["epoch"] is None and np.isnan(row["p_hat0"])
        assert "never reaches" in row["note"]
    assert any("never reaches p0 = 0.75" in n for n in res["notes"])
    assert table(out, "table4_1_chisquare")[2]["p_hat0"] is None  # NaN -> null in JSON
    assert (out.figures / "fig4_3_binomial_counts.png").exists()


def test_missing_checkpoint_changes_n_and_is_reported(tmp_run, monkeypatch):
    no_figures(monkeypatch)
    valid = np.ones((4, 6), bool)
    valid[1, 3] = False  # seed 1 never evaluated at epoch index 3 (epoch number 10)
    d = staircase_setup("supervised", [0.0, 0.1, 0.3, 0.55, 0.8, 1.0], valid=valid)
    d.correct[1, 3] = 1  # would raise the counts if the missing checkpoint were used
    data = {"supervised": d}
    out = Outputs(tmp_run)
    res = run_binomial(data, out, draws=2, null_sims=50)
    chi = {r["p0"]: r for r in res["tables"]["table4_1_chisquare"]}
    assert [chi[p]["epoch"] for p in (0.25, 0.5, 0.75)] == [7, 10, 13]
    assert [chi[p]["n_seeds"] for p in (0.25, 0.5, 0.75)] == [4, 3, 4]
    assert chi[0.5]["p_hat0"] == pytest.approx(0.55)  # the missing seed's ones are left out
    mae = {r["p0"]: r for r in res["tables"]["table4_2_mae"]}
    assert mae[0.5]["n_seeds"] == 3
    assert any("3 at epoch 10" in n for n in res["notes"])
    with h5py.File(out.analysis, "r") as f:
        assert f["binomial/supervised/chisq_p0_0.5/f_obs"].shape == (4,)  # counts 0..3
        assert list(f["binomial/supervised/n_seeds"][()]) == [4, 4, 4, 3, 4, 4]
    dyn = run_dynamics(data, out, "supervised", (7, 10))
    assert any("3 at epoch 10" in n for n in dyn["notes"])


def test_single_seed_and_single_setup_do_not_crash(tmp_run):
    data = {"simclr": make_setup("simclr", 5, s=1, m=2, k=30, second=True)}
    out = Outputs(tmp_run)
    res = run_binomial(data, out, draws=2, null_sims=50)
    for row in res["tables"]["table4_1_chisquare"]:
        if row["epoch"] is not None:
            assert np.isnan(row["chi2_thesis_allbins"]) and np.isnan(row["p_pooled"])
    assert (out.figures / "figB_1_first_second.pdf").exists()
    run_classes(data, out, CLASSES[:3])  # fewer names than classes: numbered
    assert (out.figures / "fig5_3_class_rt.png").exists()


def test_bad_arguments_raise_user_error(tmp_run):
    data = {"simclr": make_setup("simclr", 1, k=20)}
    with pytest.raises(UserError):
        run_binomial(data, Outputs(tmp_run), p0s=(1.5,))
    with pytest.raises(UserError):
        run_binomial(data, Outputs(tmp_run), draws=0)
    with pytest.raises(UserError):
        run_dynamics({}, Outputs(tmp_run))


# ---------------------------------------------------------------------------- plot helpers


def test_plot_helpers():
    assert compress_ints(range(201)) == "0-200"
    assert compress_ints([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert setup_label("simclr") == "SimCLR" and setup_label("other") == "other"
    assert seed_count_note("s", np.array([5, 5, 5]), [1, 2, 3]) is None
    note = seed_count_note("s", np.array([5, 4, 0, 4]), [1, 2, 3, 4])
    assert note == "s: epoch 3 not evaluated; 5 seeds at most epochs, 4 at epochs 2, 4"
    note = seed_count_note("s", np.array([1, 1, 0, 0]), [1, 2, 3, 4], absent=[1, 2, 3])
    assert note == "s: seeds 1-3 have no evaluated checkpoint and are left out; epochs 3-4 not evaluated"
    assert seed_count_note("s", np.array([1, 1]), [1, 2], absent=[7]) == \
        "s: seed 7 has no evaluated checkpoint and is left out"


def test_fig45_shows_each_setups_table42_epochs_and_never_the_init(full):
    data, out, res = full
    rows = res["binomial"]["tables"]["table4_2_mae"] + res["binomial"]["tables"]["table4_1_chisquare"]
    assert all(r["epoch"] != 0 for r in rows)  # the initialization is no candidate
    with h5py.File(out.analysis) as f:
        for s in data:
            want = [r["epoch"] for r in res["binomial"]["tables"]["table4_2_mae"] if r["setup"] == s]
            got = [int(f[f"binomial/{s}/spread_{j}/epoch"][()]) for j in range(len(want))
                   if f"binomial/{s}/spread_{j}" in f]
            assert got == [e for e in want if e is not None] and len(got) >= 2


def test_range_levels_give_every_panel_data_for_slow_learners(tmp_path):
    # a short run whose setups never reach the thesis's p0 = 0.25 (as the demo's SimCLR)
    slow = {s: make_setup(s, i, speed=0.12, spread=0.3, second=(s == "simclr"))
            for i, s in enumerate(["simclr", "supervised", "random_labels"])}
    fixed = run_binomial(slow, Outputs(tmp_path / "a"), draws=2, null_sims=20)
    assert any(r["epoch"] is None for r in fixed["tables"]["table4_2_mae"])  # empty panels
    res = run_binomial(slow, Outputs(tmp_path / "b"), "range", draws=2, null_sims=20)
    for table in ("table4_1_chisquare", "table4_2_mae"):
        rows = res["tables"][table]
        assert len(rows) == 9 and all(r["epoch"] is not None and r["epoch"] > 0 for r in rows)
    assert any("each setup's own range" in n for n in res["notes"])
    note = json.loads((tmp_path / "b" / "tables" / "table4_2_mae.json").read_text())["note"]
    assert "not the thesis's 0.25/0.5/0.75" in note  # the page says so
    with h5py.File(tmp_path / "b" / "analysis.h5") as f:  # Fig. 4.5: three epochs per setup
        assert all(f"binomial/{s}/spread_2" in f for s in slow)


def test_classes_group_random_label_setups_by_true_class(tmp_run, monkeypatch):
    """Fig. 5.3's classes are the true ones, also where training used permuted targets: the
    per-class means must be those of `labels`, which differ here from those of `targets`."""
    from dataclasses import replace

    import h5py

    no_figures(monkeypatch)
    d = make_setup("random_labels", 5)
    d = replace(d, labels=np.arange(len(d.labels)) % 10, targets=np.roll(np.arange(len(d.labels)) % 10, 3))
    run_classes({"random_labels": d}, Outputs(tmp_run), CLASSES)
    r = st.r_t(d.correct, d.valid)
    want = np.stack([[r[e][d.labels == c].mean() for c in range(10)] for e in range(len(d.epochs))])
    by_targets = np.stack([[r[e][d.targets == c].mean() for c in range(10)] for e in range(len(d.epochs))])
    assert not np.allclose(want, by_targets)
    with h5py.File(tmp_run / "analysis.h5", "r") as f:
        np.testing.assert_allclose(f["classes/random_labels/class_mean_r_t"][()], want)
