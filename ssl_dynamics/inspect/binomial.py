"""Comparison with binomial noise (section 4.2): Tables 4.1 and 4.2, Fig. 4.3, 4.4, 4.5, B.1.

Null hypothesis: every (augmented) image is equally hard, so the number of seeds that
classify it correctly is Binomial(N, p0). `run_binomial` writes:

- table ``table4_1_chisquare``: for each setup and p0, the first epoch whose p̂0(t) (mean of
  r̃_t over the images for augmentation 0, eq. 4.7) reaches p0, and chi-square tests of the
  counts n_k = Σ_i c[i, t, 0, k] against K·Binom(N, p̂0). ``chi2_thesis_allbins`` /
  ``p_thesis_allbins`` reproduce the thesis (scipy chisquare, ddof=1, all N+1 bins): NOT a
  valid test when expected counts are tiny (see ``min_expected_allbins``).
  ``chi2_pooled`` / ``p_pooled`` (tail bins pooled until every expected count >= 5) and the
  G-test on the same bins are the valid ones.
- figure ``fig4_3_binomial_counts``: observed frequency of each count 0..N vs the binomial
  expectation (log y), one panel per setup x p0; figure ``fig4_3_sorted_rtilde``: the
  thesis's view of the same data, sorted r̃_t against sorted binomial noise.
- table ``table4_2_mae`` and figure ``fig4_4_binomial_noise``: MAE between sorted r_t and
  sorted Binom(N, p̂0)/N noise (p̂0 from all augmentations), mean ± std over seeded draws.
- figure ``fig4_5_aug_spread``: r̃ of every augmentation for every 50th image of the r_t-
  sorted probe set, at the first epoch with mean r_t >= 0.5.
- figure ``figB_1_first_second`` and table ``first_second_diff`` (setups with a second
  view, i.e. SimCLR): r_t and r̃_t from first vs second views.
- analysis.h5 group ``binomial``.

N is always the number of valid seeds at the chosen epoch. Random draws come from
``numpy.random.default_rng([seed, crc32(setup), round(1e6·p0), stream])``: the same seed
gives the same numbers whatever other setups are present.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from ..errors import UserError
from . import stats as st
from .outputs import Outputs
from .plots import (EPOCH_CMAP, RTILDE_LABEL, fmt_p, new_figure, p0_color, rank_x,
                    rate_axis, seed_count_note, setup_color, setup_label)
from .rtdata import SetupRt

DEFAULT_P0S = (0.25, 0.5, 0.75)
SPREAD_P0 = 0.5  # Fig. 4.5 is drawn at the first epoch with mean r_t >= 0.5
MIN_SPREAD_POINTS = 20  # below this many images at step 50 (small K) the step shrinks
FIRST_SECOND_CURVES = 5  # Fig. B.1: epochs drawn (the thesis: 1, 2, 5, 30, 200)
# RNG streams, so that each use of randomness is independent of the others.
STREAM_MAE, STREAM_TILDE_NOISE = 0, 1

CHI2_NOTE = (
    "p0_hat = mean over images of r~_t for augmentation 0 (eq. 4.7); epoch = first epoch with "
    "p0_hat >= p0; N = valid seeds at that epoch. chi2_thesis_allbins/p_thesis_allbins: the "
    "thesis's scipy.stats.chisquare(f_obs, f_exp, ddof=1) on all N+1 count bins -- NOT a valid "
    "test when expected counts are small (min_expected_allbins), reported for comparison only. "
    "chi2_pooled/p_pooled (Pearson) and g_pooled/p_g (likelihood ratio): tail bins pooled "
    "until every expected count >= 5 (pooled_tails lists the merged groups; every other bin stands alone), dof = groups - 2; these "
    "are the valid tests.")
MAE_NOTE = (
    "p0_hat = mean r_t over images (all augmentations); epoch = first epoch with p0_hat >= p0; "
    "MAE = mean_k |sort(r_t)_k - sort(b)_k|, b_k ~ Binom(N, p0_hat)/N, N = valid seeds; "
    "mean and std (ddof=0) over the draws.")


def _rng(seed: int, setup: str, p0: float, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(setup.encode()), int(round(p0 * 1e6)), stream])


def _counts(d: SetupRt, t: int, aug: int = 0, second: bool = False) -> tuple[np.ndarray, int]:
    """Per-image number of valid seeds correct on augmentation `aug` at epoch index t, and N."""
    c = d.correct_second if second else d.correct
    ok = np.asarray(d.valid, dtype=bool)[:, t]
    return np.asarray(c[ok, t, aug, :], dtype=np.int64).sum(axis=0), int(ok.sum())


def _evaluated(d: SetupRt) -> np.ndarray:
    return np.flatnonzero(np.asarray(d.valid).any(axis=0))


def _never_note(s: str, p0: float, p_hat: np.ndarray, epochs: np.ndarray, what: str) -> str:
    if not np.isfinite(p_hat).any():
        return f"{s}: no evaluated epoch"
    top = int(np.nanargmax(p_hat))
    return (f"{s}: {what} never reaches p0 = {p0:g} (largest {p_hat[top]:.3f} at epoch "
            f"{int(epochs[top])})")


def _bins_text(bins: np.ndarray) -> str:
    """The pooled groups of count bins, e.g. "0-2, 14-30" (every other bin stands alone)."""
    merged = [f"{lo}-{hi}" for lo, hi in bins if lo != hi]
    return ", ".join(merged) if merged else "none"


def _check_args(p0s, draws, seed) -> tuple[float, ...]:
    p0s = tuple(float(p) for p in p0s)
    if not p0s:
        raise UserError("no p0 levels given")
    for p in p0s:
        if not 0.0 < p <= 1.0:
            raise UserError(f"p0 must be in (0, 1], got {p}")
    if isinstance(draws, bool) or int(draws) != draws or draws < 1:
        raise UserError(f"draws must be a positive integer, got {draws!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    return p0s


def run_binomial(data: dict[str, SetupRt], out: Outputs, p0s: Sequence[float] = DEFAULT_P0S,
                 draws: int = st.DEFAULT_MAE_DRAWS, seed: int = 0) -> dict:
    """Tables 4.1, 4.2 and Fig. 4.3, 4.4, 4.5, B.1 for every setup in `data`.

    Returns ``{"tables": {name: rows}, "figures": [png paths], "notes": [str]}``.
    A p0 that a setup never reaches gives a table row with epoch None and NaN values.
    """
    if not data:
        raise UserError("no setups to analyse")
    p0s = _check_args(p0s, draws, seed)
    draws, seed = int(draws), int(seed)
    setups = list(data)
    notes: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[str, ...]] = {}
    coords: dict[str, np.ndarray] = {}
    chi_rows, mae_rows = [], []
    # per setup: list over p0 of dicts (None when never reached) feeding the figures
    chi_fig: dict[str, list] = {}
    mae_fig: dict[str, list] = {}
    r_all: dict[str, np.ndarray] = {}

    for s in setups:
        d = data[s]
        if not _evaluated(d).size:
            raise UserError(f"setup {s} has no evaluated checkpoint")
        valid = np.asarray(d.valid, dtype=bool)
        epochs = np.asarray(d.epochs)
        n_seeds = st.seeds_per_epoch(valid)
        note = seed_count_note(s, n_seeds, epochs)
        if note:
            notes.append(note)
        r = st.r_t(d.correct, valid)
        r0 = st.r_tilde(d.correct, 0, valid)
        r_all[s] = r
        p_tilde, p_all = st.epoch_means(r0), st.epoch_means(r)
        arrays.update({f"{s}/epochs": epochs.astype(np.int64), f"{s}/n_seeds": n_seeds,
                       f"{s}/p_hat_tilde": p_tilde, f"{s}/p_hat_all": p_all,
                       f"{s}/r_tilde0": r0.astype(np.float32)})
        coords.update({f"{s}/epoch": epochs.astype(np.int64),
                       f"{s}/probe": np.asarray(d.probe_indices, dtype=np.int64)})
        dims.update({f"{s}/{n}": ("epoch",) for n in ("epochs", "n_seeds", "p_hat_tilde", "p_hat_all")})
        dims[f"{s}/r_tilde0"] = ("epoch", "probe")
        chi_fig[s], mae_fig[s] = [], []
        for p0 in p0s:
            # ---- Table 4.1: one fixed augmentation (j = 0), counts over seeds
            t = st.first_epoch_reaching(p_tilde, p0)
            if t is None:
                msg = _never_note(s, p0, p_tilde, epochs, "p0_hat (augmentation 0)")
                notes.append(f"table4_1: {msg}")
                chi_rows.append(_chi_row_missing(s, p0, msg))
                chi_fig[s].append(None)
            else:
                counts, n = _counts(d, t)
                p_hat = float(p_tilde[t])
                row, extra = _chi_row(s, p0, int(epochs[t]), n, p_hat, counts, notes)
                chi_rows.append(row)
                noise = np.sort(_rng(seed, s, p0, STREAM_TILDE_NOISE).binomial(n, p_hat, counts.size) / n)
                chi_fig[s].append({"t": t, "epoch": int(epochs[t]), "n": n, "p_hat": p_hat,
                                   "r_tilde": r0[t], "noise": noise, **extra,
                                   "p_pooled": row["p_pooled"]})
                g = f"{s}/chisq_p0_{p0:g}"
                arrays.update({f"{g}/counts": counts, f"{g}/f_obs": extra["f_obs"],
                               f"{g}/f_exp": extra["f_exp"], f"{g}/pooled_bins": extra["bins"],
                               f"{g}/noise_sorted": noise})
            # ---- Table 4.2: all augmentations, MAE against binomial noise
            t = st.first_epoch_reaching(p_all, p0)
            if t is None:
                msg = _never_note(s, p0, p_all, epochs, "mean r_t")
                notes.append(f"table4_2: {msg}")
                mae_rows.append({"setup": s, "p0": p0, "epoch": None, "n_seeds": None,
                                 "p_hat0": float("nan"), "mae_mean": float("nan"),
                                 "mae_std": float("nan"), "mae": "n/a", "note": msg})
                mae_fig[s].append(None)
            else:
                n, p_hat = int(n_seeds[t]), float(p_all[t])
                mean, std, per_draw = st.binomial_mae(r[t], n, p_hat, draws, rng=_rng(seed, s, p0, STREAM_MAE))
                # the first draw of the same stream: the noise curve Fig. 4.4 shows
                noise = np.sort(_rng(seed, s, p0, STREAM_MAE).binomial(n, p_hat, r.shape[1]) / n)
                mae_rows.append({"setup": s, "p0": p0, "epoch": int(epochs[t]), "n_seeds": n,
                                 "p_hat0": p_hat, "mae_mean": mean, "mae_std": std,
                                 "mae": f"{mean:.3f} ± {std:.3f}", "note": ""})
                mae_fig[s].append({"t": t, "epoch": int(epochs[t]), "n": n, "p_hat": p_hat,
                                   "noise": noise, "mae": mean})
                g = f"{s}/mae_p0_{p0:g}"
                arrays.update({f"{g}/per_draw": per_draw, f"{g}/noise_sorted": noise})

    notes.append("table4_1: chi2_thesis_allbins is the thesis's all-bins chi-square (ddof=1), "
                 "invalid with small expected counts; p_pooled / p_g are the valid p-values")
    figures = [
        _fig_counts(data, p0s, chi_fig, out),
        _fig_sorted_tilde(data, p0s, chi_fig, out),
        _fig_noise(data, p0s, mae_fig, r_all, out),
        _fig_spread(data, r_all, out, notes, arrays),
    ]
    tables = {"table4_1_chisquare": chi_rows, "table4_2_mae": mae_rows}
    second = [s for s in setups if data[s].correct_second is not None]
    if second:
        fig, rows = _fig_first_second(data, second, r_all, out, arrays)
        figures.append(fig)
        tables["first_second_diff"] = rows
        out.write_table("first_second_diff", rows,
                        note="Fig. B.1: mean |first view - second view| of r_t and of r~_t "
                             "(augmentation 0) over the probe images.")
    out.write_table("table4_1_chisquare", chi_rows, note=CHI2_NOTE)
    out.write_table("table4_2_mae", mae_rows, note=MAE_NOTE + f" draws = {draws}, seed = {seed}.")
    out.write_arrays("binomial", arrays, {"p0s": list(p0s), "draws": draws, "seed": seed,
                                          "setups": setups, "notes": notes}, dims=dims, coords=coords)
    return {"tables": tables, "figures": [str(p) for p in figures], "notes": notes}


# ---------------------------------------------------------------------------- Table 4.1 rows


def _chi_row_missing(s: str, p0: float, msg: str) -> dict:
    nan = float("nan")
    return {"setup": s, "p0": p0, "epoch": None, "n_seeds": None, "p_hat0": nan,
            "chi2_thesis_allbins": nan, "dof_thesis": None, "p_thesis_allbins": nan,
            "min_expected_allbins": nan, "chi2_pooled": nan, "dof_pooled": None,
            "p_pooled": nan, "g_pooled": nan, "p_g": nan, "pooled_tails": "", "note": msg}


def _chi_row(s, p0, epoch, n, p_hat, counts, notes) -> tuple[dict, dict]:
    f_obs = st.count_frequencies(counts, n)
    f_exp = st.binomial_expected(counts.size, n, p_hat)
    note = ""
    try:
        chi_f, p_f = st.chisquare_faithful(counts, n, p_hat)
        dof_f = int(np.count_nonzero(f_exp > 0)) - 1 - st.ESTIMATED_PARAMS
    except ValueError as exc:  # too few bins (N < 2 seeds, or p_hat of 0/1)
        chi_f, p_f, dof_f = float("nan"), float("nan"), None
        note = f"thesis chi-square undefined: {exc}"
    chi_p, p_p, dof_p, bins = st.chisquare_pooled(counts, n, p_hat)
    g, p_g, _, _ = st.g_test_pooled(counts, n, p_hat)
    if dof_p < 1:
        note = (note + "; " if note else "") + "pooled tests undefined (fewer than 3 groups)"
    if note:
        notes.append(f"table4_1: {s} p0 = {p0:g} (epoch {epoch}, N = {n}): {note}")
    row = {"setup": s, "p0": p0, "epoch": epoch, "n_seeds": n, "p_hat0": p_hat,
           "chi2_thesis_allbins": chi_f, "dof_thesis": dof_f, "p_thesis_allbins": p_f,
           "min_expected_allbins": float(f_exp.min()), "chi2_pooled": chi_p, "dof_pooled": int(dof_p),
           "p_pooled": p_p, "g_pooled": g, "p_g": p_g, "pooled_tails": _bins_text(bins), "note": note}
    return row, {"f_obs": f_obs, "f_exp": f_exp, "bins": bins}


# ---------------------------------------------------------------------------- figures


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="#555555", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _fig_counts(data, p0s, chi_fig, out: Outputs):
    """Fig. 4.3 (counts): observed frequency of n_k = 0..N vs K·Binom(N, p̂0), log y."""
    from matplotlib.ticker import NullLocator

    setups = list(data)
    plt, fig, axes = new_figure(len(setups) * len(p0s), panel_size=(3.5, 2.7),
                                shape=(len(setups), len(p0s)))
    for i, s in enumerate(setups):
        for j, p0 in enumerate(p0s):
            ax = axes[i * len(p0s) + j]
            info = chi_fig[s][j]
            if info is None:
                _empty_panel(ax, f"{setup_label(s)}\np0 = {p0:g} never reached")
                continue
            n = info["n"]
            x = np.arange(n + 1)
            ax.bar(x, info["f_obs"], width=0.8, color=setup_color(s, i), alpha=0.75, label="observed")
            ax.plot(x, info["f_exp"], "o--", color="black", ms=3, lw=1, label="K·Binom(N, $\\hat p_0$)")
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())  # many minor log ticks: slow, not needed
            top = max(float(info["f_obs"].max()), float(info["f_exp"].max()))
            ax.set_ylim(0.3, top * 12)
            ax.set_xlim(-0.7, n + 0.7)
            if n <= 12:
                ax.set_xticks(x)
            ax.set_title(f"{setup_label(s)}: epoch {info['epoch']}, $\\hat p_0$ = {info['p_hat']:.3f}",
                         fontsize=9)
            ax.set_xlabel(f"seeds correct (of N = {n})", fontsize=8)
            ax.set_ylabel("images", fontsize=8)
            ax.text(0.03, 0.95, f"p0 = {p0:g}\npooled $\\chi^2$ p = {fmt_p(info['p_pooled'])}",
                    transform=ax.transAxes, va="top", fontsize=7.5,
                    bbox={"fc": "white", "ec": "#cccccc", "alpha": 0.8})
            if i == 0 and j == len(p0s) - 1:
                ax.legend(loc="upper right", fontsize=7)
    fig.suptitle("Counts of correct seeds per image (augmentation 0) vs binomial noise "
                 "(Fig. 4.3, Table 4.1)")
    return out.save_figure(fig, "fig4_3_binomial_counts")


def _fig_sorted_tilde(data, p0s, chi_fig, out: Outputs):
    """Fig. 4.3 as the thesis drew it: sorted r̃_t (thick) vs sorted binomial noise (dashed)."""
    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(4.6, 3.5), max_cols=2)
    for ax, s in zip(axes, setups):
        for j, (p0, info) in enumerate(zip(p0s, chi_fig[s])):
            if info is None:
                continue
            x = rank_x(info["r_tilde"].size)
            ax.plot(x, np.sort(info["r_tilde"]), color=p0_color(j), lw=2.6, alpha=0.65,
                    drawstyle="steps-mid", label=f"{info['epoch']} / {info['p_hat']:.3f} (N={info['n']})")
            ax.plot(x, info["noise"], color=p0_color(j), lw=1.1, ls="--", drawstyle="steps-mid")
        ax.set_title(setup_label(s))
        rate_axis(ax, RTILDE_LABEL)
        ax.set_xlabel("augmented images sorted by $\\tilde r_t$ (rank / K)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="epoch t / $\\hat p_0(t)$", loc="lower right", ncol=1)
    fig.suptitle("Sorted $\\tilde r_t$ (one augmentation, solid) vs sorted binomial noise "
                 "(dashed), Fig. 4.3")
    return out.save_figure(fig, "fig4_3_sorted_rtilde")


def _fig_noise(data, p0s, mae_fig, r_all, out: Outputs):
    """Fig. 4.4: sorted r_t (thick) vs sorted binomial noise (dashed), area between filled."""
    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(4.6, 3.5), max_cols=2)
    for ax, s in zip(axes, setups):
        for j, (p0, info) in enumerate(zip(p0s, mae_fig[s])):
            if info is None:
                continue
            rs = np.sort(r_all[s][info["t"]])
            x = rank_x(rs.size)
            ax.plot(x, rs, color=p0_color(j), lw=2.4,
                    label=f"{info['epoch']} / {info['p_hat']:.3f}  (MAE {info['mae']:.3f})")
            ax.plot(x, info["noise"], color=p0_color(j), lw=1.1, ls="--", drawstyle="steps-mid")
            ax.fill_between(x, rs, info["noise"], color=p0_color(j), alpha=0.2, lw=0, step="mid")
        ax.set_title(setup_label(s))
        rate_axis(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="epoch t / $\\hat p_0(t)$", loc="lower right")
    fig.suptitle("Sorted $r_t$ (solid) vs sorted binomial noise Binom(N, $\\hat p_0$)/N (dashed), "
                 "Fig. 4.4 / Table 4.2")
    return out.save_figure(fig, "fig4_4_binomial_noise")


def _fig_spread(data, r_all, out: Outputs, notes, arrays):
    """Fig. 4.5: r̃ of each augmentation (dots) and r_t (line) for every 50th sorted image."""
    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(4.6, 3.4), max_cols=2)
    for pos, (ax, s) in enumerate(zip(axes, setups)):
        d = data[s]
        r = r_all[s]
        k = r.shape[1]
        p_all = st.epoch_means(r)
        t = st.first_epoch_reaching(p_all, SPREAD_P0)
        if t is None:
            t = int(_evaluated(d)[-1])
            notes.append(f"fig4_5: {s} never reaches mean r_t {SPREAD_P0}; drawn at its last "
                         f"evaluated epoch {int(d.epochs[t])}")
        step = st.DEFAULT_SPREAD_STEP
        if -(-k // step) < MIN_SPREAD_POINTS:
            step = max(1, k // MIN_SPREAD_POINTS)
            notes.append(f"fig4_5: {s} has only K = {k} probe images; every {step}th image is "
                         f"shown instead of every {st.DEFAULT_SPREAD_STEP}th")
        m = d.correct.shape[2]
        valid = np.asarray(d.valid, dtype=bool)
        rt_all = np.stack([st.r_tilde(d.correct[:, t:t + 1], j, valid[:, t:t + 1])[0] for j in range(m)])
        order, r_sel, rt_sel = st.spread_rows(r[t], rt_all, step)
        ranks = np.arange(0, k, step)
        x = ranks / max(k - 1, 1)
        width = 0.6 * step / max(k - 1, 1)  # deterministic spread of the M dots around x
        offs = (np.arange(m) - (m - 1) / 2) / max(m, 1) * width
        color = setup_color(s, pos)
        for j in range(m):
            ax.scatter(x + offs[j], rt_sel[j], s=9, color=color, alpha=0.55, lw=0,
                       label="one augmentation $\\tilde r_t$" if j == 0 else None)
        ax.plot(x, r_sel, color="black", lw=1.4, label="mean over augmentations $r_t$")
        ax.set_title(f"{setup_label(s)}: epoch {int(d.epochs[t])}\n(mean $r_t$ = {p_all[t]:.3f}, "
                     f"N = {int(valid[:, t].sum())} seeds, M = {m} augmentations)", fontsize=9.5)
        rate_axis(ax)
        ax.set_xlabel(f"every {step}th image sorted by $r_t$ (rank / K)")
        ax.legend(loc="upper left", fontsize=7)
        arrays.update({f"{s}/spread/order": order, f"{s}/spread/r_t": r_sel,
                       f"{s}/spread/r_tilde": rt_sel, f"{s}/spread/epoch": np.int64(d.epochs[t])})
    fig.suptitle("Spread of $\\tilde r_t$ over augmentations of the same image (Fig. 4.5)")
    return out.save_figure(fig, "fig4_5_aug_spread")


def _log_spread(ev: np.ndarray, epochs: np.ndarray, n: int) -> np.ndarray:
    """Up to n evaluated epoch indices spread evenly on a log scale of the epoch number."""
    nums = epochs[ev].astype(float)
    if ev.size <= n:
        return ev
    lo = max(nums.min(), 1.0)
    targets = np.geomspace(lo, max(nums.max(), lo), n)
    pick = sorted({int(np.argmin(np.abs(nums - tg))) for tg in targets})
    return ev[pick]


def _fig_first_second(data, second, r_all, out: Outputs, arrays):
    """Fig. B.1: r_t and r̃_t from the first views (dashed, sorted) vs the second views."""
    plt, fig, axes = new_figure(2 * len(second), panel_size=(4.8, 3.6), shape=(len(second), 2))
    cmap = plt.get_cmap(EPOCH_CMAP)
    rows = []
    for i, s in enumerate(second):
        d = data[s]
        valid = np.asarray(d.valid, dtype=bool)
        epochs = np.asarray(d.epochs)
        if d.correct_second.shape != d.correct.shape:
            raise UserError(f"{s}: correct_second has shape {d.correct_second.shape}, "
                            f"correct {d.correct.shape}")
        r1, r2 = r_all[s], st.r_t(d.correct_second, valid)
        t1, t2 = st.r_tilde(d.correct, 0, valid), st.r_tilde(d.correct_second, 0, valid)
        arrays.update({f"{s}/first_second/r_t_second": r2.astype(np.float32),
                       f"{s}/first_second/r_tilde0_second": t2.astype(np.float32)})
        idx = _log_spread(_evaluated(d), epochs, FIRST_SECOND_CURVES)
        ax_r, ax_t = axes[2 * i], axes[2 * i + 1]
        for c, e in enumerate(idx):
            col = cmap(0.05 + 0.9 * c / max(len(idx) - 1, 1))
            for ax, a, b in ((ax_r, r1[e], r2[e]), (ax_t, t1[e], t2[e])):
                order = np.argsort(a, kind="stable")
                x = rank_x(a.size)
                ax.plot(x, b[order], color=col, lw=2.2, alpha=0.35)
                ax.plot(x, a[order], color=col, lw=1.6, ls="--", label=f"{int(epochs[e])}")
            rows.append({"setup": s, "epoch": int(epochs[e]), "n_seeds": int(valid[:, e].sum()),
                         "mean_abs_diff_r_t": float(np.mean(np.abs(r1[e] - r2[e]))),
                         "mean_abs_diff_r_tilde": float(np.mean(np.abs(t1[e] - t2[e]))),
                         "corr_r_t": _corr(r1[e], r2[e]), "corr_r_tilde": _corr(t1[e], t2[e])})
        ax_r.set_title(f"{setup_label(s)}: averaged over augmentations", fontsize=10)
        ax_t.set_title(f"{setup_label(s)}: one pair of augmentations", fontsize=10)
        rate_axis(ax_r)
        rate_axis(ax_t, RTILDE_LABEL)
        for ax in (ax_r, ax_t):
            ax.set_xlabel("images sorted by the first view's value (rank / K)")
            ax.legend(title="epoch t", loc="lower right", ncol=min(len(idx), 5), fontsize=7,
                      handlelength=1.6, columnspacing=0.8)
    fig.suptitle("First view (dashed) vs second view (translucent) of each SimCLR pair (Fig. B.1)")
    return out.save_figure(fig, "figB_1_first_second"), rows


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
