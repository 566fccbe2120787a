"""The analyses that align epochs (eq. 4.4), on hand-built r_t whose epochs align by hand.
`inspect heterogeneity` against slow loops: the beta-binomial fit reads augmentation 0 of
the valid seeds at each epoch, and every row and agreement pairs a setup's own aligned epoch
with the reference's. `inspect dynamics`: the stored alignment and its notes."""
from __future__ import annotations

import numpy as np
import pytest

from ssl_dynamics.inspect import nulls, overdispersion
from ssl_dynamics.inspect import stats as st
from ssl_dynamics.inspect.heterogeneity import rho_by_epoch, run_heterogeneity
from ssl_dynamics.inspect.outputs import Outputs
from ssl_dynamics.inspect.rtdata import SetupRt

S, M, K = 6, 3, 40


def block(frac: float, shift: int) -> np.ndarray:
    """correct [S, M, K] with mean exactly `frac` (a multiple of 0.1) in every seed's
    replays. Augmentation 0 is heterogeneous (the first a images learned by every seed, the
    next b by the even seeds only, a + b / 2 = frac * K); the others are homogeneous (a
    rotating pattern): Table 4.1's augmentation 0 and the rest must not be confused."""
    c = np.zeros((S, M, K), np.uint8)
    even = int(round(min(frac * K, 2 * K * (1 - frac))))
    all_seeds = int(round(frac * K - even / 2))
    for s in range(S):
        c[s, 0, :all_seeds] = 1
        if s % 2 == 0:
            c[s, 0, all_seeds:all_seeds + even] = 1
        for m in range(1, M):
            c[s, m] = [((s * 7 + k * 3 + m + shift) % 10) < frac * 10 for k in range(K)]
    return c


def setup(name: str, fracs: list[float], invalid: tuple[tuple[int, int], ...] = ()) -> SetupRt:
    correct = np.stack([block(f, i) for i, f in enumerate(fracs)], axis=1)  # [S, E, M, K]
    valid = np.ones((S, len(fracs)), bool)
    for s, e in invalid:
        valid[s, e] = False
    k = np.arange(K)
    return SetupRt(name, correct, correct.astype(np.float32), valid, np.arange(S), np.arange(len(fracs)),
                   k % 10, k % 10, k)


def test_rho_by_epoch_equals_a_loop_over_valid_seeds_at_augmentation_0():
    d = setup("supervised", [0.1, 0.2, 0.5, 0.7, 0.9], invalid=((3, 2), (0, 4)))
    r = st.r_t(d.correct, d.valid)
    for include_init in (False, True):
        got = rho_by_epoch(d, include_init)
        for t in range(len(d.epochs)):
            if t == 0 and not include_init:
                assert all(np.isnan(got[k][0]) for k in got)
                continue
            seeds = [s for s in range(S) if d.valid[s, t]]
            counts = sum(d.correct[s, t, 0].astype(np.int64) for s in seeds)
            want = overdispersion.betabinomial_fit(counts, len(seeds), 0.05)
            assert got["n"][t] == len(seeds)
            for key in ("rho", "ci_low", "ci_high", "p_value"):
                assert got[key][t] == pytest.approx(want[key], nan_ok=True), (t, key)
            assert got["mean_rt"][t] == pytest.approx(np.mean(r[t]))
    # augmentation 0 is the heterogeneous one: another augmentation's counts give a smaller rho
    got = rho_by_epoch(d)
    for t in range(1, len(d.epochs)):
        seeds = d.valid[:, t]
        other = overdispersion.betabinomial_fit(d.correct[seeds, t, M - 1].astype(np.int64).sum(0),
                                                int(seeds.sum()), 0.05)["rho"]
        assert got["rho"][t] > np.nan_to_num(other) + 0.1, (t, got["rho"][t], other)


def test_rows_and_agreement_use_each_setups_own_aligned_epoch(tmp_path):
    """simclr (the reference) has mean r_t 0.1, 0.5, 0.9 at epochs 0-2; supervised 0.1, 0.2,
    0.5, 0.7, 0.9 at epochs 0-4: reference epochs 1 and 2 align to supervised's 2 and 4."""
    data = {"simclr": setup("simclr", [0.1, 0.5, 0.9]),
            "supervised": setup("supervised", [0.1, 0.2, 0.5, 0.7, 0.9], invalid=((3, 2),))}
    res = run_heterogeneity(data, Outputs(tmp_path), ref_setup="simclr", ref_epochs=(1, 2))
    rows = {(r["setup"], r["ref_epoch"]): r for r in res["tables"]["heterogeneity"]}
    aligned = {("simclr", 1): 1, ("simclr", 2): 2, ("supervised", 1): 2, ("supervised", 2): 4}
    for (s, ref), e in aligned.items():
        fit = rho_by_epoch(data[s])
        assert rows[s, ref]["epoch"] == e
        assert rows[s, ref]["rho"] == pytest.approx(fit["rho"][e])
        assert rows[s, ref]["mean_rt"] == pytest.approx(fit["mean_rt"][e])
    r = {s: st.r_t(d.correct, d.valid) for s, d in data.items()}
    agree = res["tables"]["hardness_agreement"]
    assert [(a["ref_epoch"], a["epoch_a"], a["epoch_b"]) for a in agree] == [(1, 1, 2), (2, 2, 4)]
    for a in agree:
        rho, _, n = nulls.rank_agreement(r["simclr"][a["epoch_a"]], r["supervised"][a["epoch_b"]])
        assert a["spearman"] == pytest.approx(rho, nan_ok=True) and a["n_images"] == n
    # the stored per-epoch arrays are the fits themselves
    import h5py

    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        np.testing.assert_allclose(f["heterogeneity/supervised/rho"][()], rho_by_epoch(data["supervised"])["rho"])


def test_dynamics_stores_each_setups_aligned_epochs_and_notes_the_far_ones(tmp_path):
    import h5py

    from ssl_dynamics.inspect.dynamics import run_dynamics

    data = {"simclr": setup("simclr", [0.1, 0.5, 0.9]),
            "supervised": setup("supervised", [0.1, 0.2, 0.5, 0.7, 0.9]),
            "random_labels": setup("random_labels", [0.1, 0.2, 0.3])}  # never reaches 0.5
    res = run_dynamics(data, Outputs(tmp_path), ref_setup="simclr", ref_epochs=(1, 2))
    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        g = f["dynamics/alignment"]
        assert g["ref_epochs"][()].tolist() == [1, 2]
        assert g["simclr_epoch"][()].tolist() == [1, 2]
        assert g["supervised_epoch"][()].tolist() == [2, 4]
        assert g["random_labels_epoch"][()].tolist() == [2, 2]
        np.testing.assert_allclose(g["supervised_mean_r_t"][()], [0.5, 0.9])
    far = [n for n in res["notes"] if "closest epoch used" in n]
    assert far == ["random_labels: no epoch with mean r_t within 0.05 of simclr's for "
                   "reference->aligned epochs 1->2, 2->2 (closest epoch used)"], res["notes"]


def test_the_reference_keeps_its_own_epoch_on_a_plateau(tmp_path):
    """A reference whose mean r_t is the same at epochs 1 and 2: reference epoch 2 is epoch 2
    of the reference itself (aligning the reference to itself would pick the earlier)."""
    from ssl_dynamics.inspect.dynamics import run_dynamics

    data = {"simclr": setup("simclr", [0.1, 0.5, 0.5]), "supervised": setup("supervised", [0.1, 0.3, 0.5])}
    res = run_dynamics(data, Outputs(tmp_path), ref_setup="simclr", ref_epochs=(2,))
    (row,) = res["tables"]["aligned_epochs"]
    assert (row["ref_epoch"], row["simclr_epoch"], row["supervised_epoch"]) == (2, 2, 2)


def test_a_seed_without_any_evaluated_checkpoint_is_named_by_every_rt_analysis(tmp_path):
    """`inspect rt --allow-missing` while seed 4 was still training: the analyses leave it
    out and say so (the panel titles alone showed one seed fewer)."""
    from ssl_dynamics.inspect.binomial import run_binomial
    from ssl_dynamics.inspect.classes import run_classes
    from ssl_dynamics.inspect.dynamics import run_dynamics

    lost = tuple((4, e) for e in range(5))
    data = {"simclr": setup("simclr", [0.1, 0.5, 0.9]),
            "supervised": setup("supervised", [0.1, 0.2, 0.5, 0.7, 0.9], invalid=lost)}
    want = "supervised: seed 4 has no evaluated checkpoint and is left out"
    res = run_dynamics(data, Outputs(tmp_path / "d"), ref_setup="simclr", ref_epochs=(1, 2))
    assert want in res["notes"], res["notes"]
    res = run_binomial(data, Outputs(tmp_path / "b"), p0s=(0.5,), draws=20, null_sims=20)
    assert want in res["notes"], res["notes"]
    res = run_classes(data, Outputs(tmp_path / "c"), [str(i) for i in range(10)])
    assert want in res["notes"], res["notes"]
    assert not any("simclr: seed" in n for n in res["notes"])
