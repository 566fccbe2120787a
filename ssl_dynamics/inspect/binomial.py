"""Comparison with binomial noise (section 4.2): Tables 4.1 and 4.2, Fig. 4.3, 4.4, 4.5, B.1,
with the thesis-faithful numbers beside calibrated ones.

Null hypothesis: every (augmented) image is equally hard. `run_binomial` writes:

- table ``table4_1_chisquare``: for each setup and p0, the first epoch (after the
  initialization) whose p̂0(t) (mean of r̃_t for augmentation 0, eq. 4.7) reaches p0, and
  tests of the counts n_k = Σ_i c[i, t, 0, k] against K·Binom(N, p̂0): the thesis's all-bins
  chi-square (``chi2_thesis_allbins``, invalid with tiny expected counts), its calibrated
  p-value under a simulated null of exactly this design (``p_thesis_sim``), the valid pooled
  chi-square and G-test, and the beta-binomial intra-class correlation ρ of the same counts
  (``rho``, with a profile-likelihood interval; ρ = 0 means equally hard images).
- table ``table4_2_mae``: MAE between sorted r_t and sorted Binom(N, p̂0)/N noise as the thesis
  computed it (``mae``), next to where that MAE sits under "every image equally hard" simulated
  with the same N seeds, M replays and K images: the null's mean (``null_mae``, the value of
  the thesis's statistic for equally hard images in this design), ``z`` and the empirical
  two-sided ``p``; and the same under a
  null that keeps the observed within-seed correlation of replays (``rho_within``, ``z_within``,
  ``p_within``).
- figures ``fig4_3_binomial_counts``, ``fig4_3_sorted_rtilde``, ``fig4_4_binomial_noise``,
  ``fig4_5_aug_spread`` (3 epochs per setup with augmentation) and ``figB_1_first_second``
  with table ``first_second_diff`` (SimCLR); analysis.h5 group ``binomial``.

N is the number of valid seeds at the chosen epoch. Random draws come from
``numpy.random.default_rng([seed, crc32(setup), round(1e6·p0), stream])``: the same seed gives
the same numbers whatever other setups are present.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError
from . import binomial_figures as figs
from . import stats as st
from .binomial_rows import (STREAM_TILDE_NOISE, chi_entry, mae_entry, missing_row, never_note, stream_rng,
                            spread_entry)
from .first_second import first_second
from .outputs import Outputs
from .plots import seed_count_note
from .rtdata import SetupRt, absent_seeds, require_evaluated

DEFAULT_P0S = (0.25, 0.5, 0.75)
# p0s="range": each setup's own levels, this far from its lowest to its highest mean
# accuracy after the initialization (for short runs that never reach the thesis's levels)
RANGE_FRACTIONS = (0.25, 0.5, 0.75)
DEFAULT_NULL_SIMS = 1000  # simulated datasets per null: empirical p-values resolved to 0.001

CHI2_NOTE = (
    "p_hat0 = mean over images of r~_t for augmentation 0 (eq. 4.7); epoch = first epoch after the "
    "initialization with p_hat0 >= p0; N = valid seeds at that epoch. chi2_thesis_allbins / "
    "p_thesis_allbins: the thesis's scipy.stats.chisquare(f_obs, f_exp, ddof=1) on all N+1 count "
    "bins -- its textbook p-value is NOT valid with small expected counts (min_expected_allbins); "
    "p_thesis_sim calibrates the same statistic against {sims} datasets simulated with every image "
    "equally hard. chi2_pooled/p_pooled (Pearson) and g_pooled/p_g: tail bins pooled until every "
    "expected count >= 5, dof = groups - 2. rho: beta-binomial intra-class correlation of the "
    "counts (0 = equally hard images) with its 95% profile-likelihood interval.")
MAE_NOTE = (
    "p_hat0 = mean r_t over images (all augmentations); epoch = first epoch after the "
    "initialization with p_hat0 >= p0; mae = mean_k |sort(r_t)_k - sort(b)_k|, b_k ~ Binom(N, "
    "p_hat0)/N (the thesis's statistic; mean ± std over the draws). null_mae: the same statistic "
    "when every image is equally hard, simulated {sims} times with this N, M and K -- the value "
    "of the thesis's MAE for equally hard images here; z and p (two-sided) place the observed mae "
    "in that null: z > 0, r_t is further from the noise than equally hard images would be (wider "
    "than the noise: strongly heterogeneous); z < 0, closer to it than equally hard images can be "
    "(extra variance across images or within seeds brings r_t towards the noise). "
    "rho_within, z_within, p_within: the same with the observed within-seed correlation of "
    "replays kept in the null (rho_within as estimated; a negative one is simulated as 0, "
    "NaN where it is undefined, see the row's note).")


def range_levels(p_tilde: np.ndarray, p_all: np.ndarray, cand: np.ndarray) -> tuple[float, ...]:
    """Levels RANGE_FRACTIONS of the way through the range both p̂ curves cover."""
    a, b = p_tilde[cand & np.isfinite(p_tilde)], p_all[cand & np.isfinite(p_all)]
    if not a.size or not b.size:
        return DEFAULT_P0S
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    return tuple(round(float(lo + f * (hi - lo)), 4) for f in RANGE_FRACTIONS)


def check_args(p0s, draws, seed, sims) -> tuple[float, ...] | str:
    """The p0 levels as floats (or "range"); UserError for a bad level, draw count, seed or
    number of null simulations (also what `inspect all` checks before any step)."""
    if isinstance(p0s, str):
        if p0s != "range":
            raise UserError(f"p0 levels {p0s!r}: give numbers, or 'range' for each setup's own")
        p0s = "range"
    else:
        p0s = tuple(float(p) for p in p0s)
    if not p0s:
        raise UserError("no p0 levels given")
    for p in () if p0s == "range" else p0s:
        if not 0.0 < p <= 1.0:
            raise UserError(f"p0 must be in (0, 1], got {p}")
    for name, v, low in (("draws", draws, 1), ("seed", seed, 0), ("null sims", sims, 1)):
        if isinstance(v, bool) or int(v) != v or v < low:
            raise UserError(f"{name} must be an integer >= {low}, got {v!r}")
    return p0s


def _setup_tables(s, d, p0s, draws, seed, sims, include_init, notes, arrays, labelled,
                  coords) -> dict:
    """Table 4.1 / 4.2 rows, figure data and arrays (with their named dimensions) of one setup."""
    valid = np.asarray(d.valid, dtype=bool)
    epochs = np.asarray(d.epochs)
    n_seeds = st.seeds_per_epoch(valid)
    notes += [n for n in [seed_count_note(s, n_seeds, epochs, absent_seeds(d))] if n]
    r, r0 = st.r_t(d.correct, valid), st.r_tilde(d.correct, 0, valid)
    p_tilde, p_all = st.epoch_means(r0), st.epoch_means(r)
    cand = st.searchable(epochs, include_init)
    arrays.update({f"{s}/epochs": epochs.astype(np.int64), f"{s}/n_seeds": n_seeds,
                   f"{s}/p_hat_tilde": p_tilde, f"{s}/p_hat_all": p_all, f"{s}/r_tilde0": r0.astype(np.float32)})
    labelled.update({f"{s}/{n}": ("epoch",) for n in ("epochs", "n_seeds", "p_hat_tilde", "p_hat_all")})
    labelled[f"{s}/r_tilde0"] = ("epoch", "probe")
    coords.update({f"{s}/epoch": epochs.astype(np.int64),
                   f"{s}/probe": np.asarray(d.probe_indices, dtype=np.int64)})
    if p0s == "range":
        p0s = range_levels(p_tilde, p_all, cand)
    out = {"r": r, "chi": [], "chi_fig": [], "mae": [], "mae_fig": [], "spread": [], "p0s": p0s}
    for p0 in p0s:
        t = st.first_epoch_reaching(p_tilde, p0, cand)
        if t is None:
            msg = never_note(s, p0, np.where(cand, p_tilde, np.nan), epochs, "p0_hat (augmentation 0)")
            notes.append(f"table4_1: {msg}")
            out["chi"].append(missing_row("chi", s, p0, msg)), out["chi_fig"].append(None)
        else:
            row, info = chi_entry(s, d, t, p0, float(p_tilde[t]), seed, sims, notes)
            info["r_tilde"], info["p0"] = r0[t], p0
            info["noise"] = np.sort(stream_rng(seed, s, p0, STREAM_TILDE_NOISE).binomial(
                info["n"], info["p_hat"], r0.shape[1]) / info["n"])
            out["chi"].append(row), out["chi_fig"].append(info)
            g = f"{s}/chisq_p0_{p0:g}"
            arrays.update({f"{g}/counts": info["counts"], f"{g}/f_obs": info["f_obs"],
                           f"{g}/f_exp": info["f_exp"], f"{g}/pooled_bins": info["bins"],
                           f"{g}/noise_sorted": info["noise"]})
        t = st.first_epoch_reaching(p_all, p0, cand)
        if t is None:
            msg = never_note(s, p0, np.where(cand, p_all, np.nan), epochs, "mean r_t")
            notes.append(f"table4_2: {msg}")
            out["mae"].append(missing_row("mae", s, p0, msg))
            out["mae_fig"].append(None), out["spread"].append(None)
            continue
        row, info = mae_entry(s, d, r, t, p0, float(p_all[t]), draws, seed, sims)
        out["mae"].append(row), out["mae_fig"].append(info)
        out["spread"].append(spread_entry(d, r, t, notes) if d.correct.shape[2] > 1 else None)
        g = f"{s}/mae_p0_{p0:g}"
        arrays.update({f"{g}/per_draw": info["per_draw"], f"{g}/noise_sorted": info["noise"],
                       f"{g}/null_mae": info["null"], f"{g}/null_mae_within": info["null_within"]})
    if d.correct.shape[2] > 1 and not any(out["spread"]):  # no level reached: show the last epoch
        last = int(np.flatnonzero(valid.any(axis=0))[-1])
        notes.append(f"fig4_5: {s} reaches none of the p0 levels; drawn at its last evaluated "
                     f"epoch {int(epochs[last])}")
        out["spread"] = [spread_entry(d, r, last, notes)]
    return out


def run_binomial(data: dict[str, SetupRt], out: Outputs, p0s: Sequence[float] = DEFAULT_P0S,
                 draws: int = st.DEFAULT_MAE_DRAWS, seed: int = 0, null_sims: int = DEFAULT_NULL_SIMS,
                 include_init: bool = False) -> dict:
    """Tables 4.1, 4.2 and Fig. 4.3, 4.4, 4.5, B.1 for every setup in `data`.

    Returns ``{"tables": {name: rows}, "figures": [png paths], "notes": [str]}``.
    A p0 that a setup never reaches gives a table row with epoch None and NaN values.
    ``include_init`` lets the p0 searches pick epoch 0 (the thesis's code could not).
    """
    if not data:
        raise UserError("no setups to analyse")
    p0s = check_args(p0s, draws, seed, null_sims)
    notes, arrays, per, labelled, coords = [], {}, {}, {}, {}
    require_evaluated(data)
    for s, d in data.items():
        per[s] = _setup_tables(s, d, p0s, int(draws), int(seed), int(null_sims), include_init,
                               notes, arrays, labelled, coords)
    levels, mode = "", "range" if p0s == "range" else "fixed"
    if p0s == "range":
        levels = (" p0 levels chosen from each setup's own range (25/50/75% of the way through "
                  "the mean accuracies after the initialization that both its p_hat curves, one "
                  "augmentation and all, pass through), not the thesis's "
                  "0.25/0.5/0.75: " + "; ".join(f"{s} {', '.join(f'{p:g}' for p in per[s]['p0s'])}"
                                              for s in data) + ".")
        notes.append(levels.strip())
        p0s = RANGE_FRACTIONS
    # the levels each setup's rows were made at (under "range" the attribute p0s holds the
    # fractions of the range, these the levels)
    arrays.update({f"{s}/p0_levels": np.asarray(per[s]["p0s"], dtype=float) for s in data})
    labelled.update({f"{s}/p0_levels": ("level",) for s in data})
    coords.update({f"{s}/level": np.arange(len(per[s]["p0s"]), dtype=np.int64) for s in data})
    chi_rows = [row for s in data for row in per[s]["chi"]]
    mae_rows = [row for s in data for row in per[s]["mae"]]
    r_all = {s: per[s]["r"] for s in data}
    spread = {s: per[s]["spread"] for s in data if any(per[s]["spread"])}
    figures = [figs.fig_counts(data, p0s, {s: per[s]["chi_fig"] for s in data}, out),
               figs.fig_sorted_tilde(data, p0s, {s: per[s]["chi_fig"] for s in data}, out, mode == "range"),
               figs.fig_noise(data, p0s, {s: per[s]["mae_fig"] for s in data}, r_all, out, mode == "range")]
    if spread:
        figures.append(figs.fig_spread(spread, out))
        for s, items in spread.items():
            for j, info in enumerate(items):
                if info is not None:
                    arrays.update({f"{s}/spread_{j}/{k}": np.asarray(info[k])
                                   for k in ("order", "r_t", "r_tilde", "epoch")})
    tables = {"table4_1_chisquare": chi_rows, "table4_2_mae": mae_rows}
    second = [s for s in data if data[s].correct_second is not None]
    if second:
        rows, curves = first_second(data, second, r_all, arrays)
        figures.append(figs.fig_first_second(curves, out))
        tables["first_second_diff"] = rows
        out.write_table("first_second_diff", rows,
                        note="Fig. B.1: mean |first view - second view| of r_t and of r~_t "
                             "(augmentation 0) over the probe images.")
    out.write_table("table4_1_chisquare", chi_rows, note=CHI2_NOTE.format(sims=null_sims) + levels)
    out.write_table("table4_2_mae", mae_rows,
                    note=MAE_NOTE.format(sims=null_sims) + f" draws = {draws}, seed = {seed}." + levels)
    out.write_arrays("binomial", arrays, {"p0s": list(p0s), "p0_mode": mode, "draws": draws, "seed": seed,
                                          "null_sims": null_sims, "setups": list(data), "notes": notes},
                     dims=labelled, coords=coords)
    return {"tables": tables, "figures": [str(p) for p in figures], "notes": notes}
