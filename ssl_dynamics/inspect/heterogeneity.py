"""Beyond the thesis: how different the probe images really are, and whether setups agree.

Two questions the binomial comparison of Tables 4.1/4.2 answers only indirectly:

1. *How heterogeneous is difficulty?* For every setup and epoch, a beta-binomial fit of the
   per-image counts of correct seeds (augmentation 0, as Table 4.1) gives the intra-class
   correlation ρ with a 95% profile-likelihood interval: ρ = 0 means every image is equally
   hard (the counts are binomial), ρ = 1 means every image is learned by all seeds or by
   none. Drawn against the mean r_t (the quantity eq. 4.4 aligns epochs by) and at the
   aligned epochs.
2. *Do setups find the same images hard?* Spearman's rank correlation of per-image r_t
   between every pair of setups at the aligned epochs.

`run_heterogeneity` writes tables ``heterogeneity`` and ``hardness_agreement``, figures
``fig_heterogeneity`` and ``fig_hardness_agreement`` and the analysis.h5 group
``heterogeneity``.
"""
from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from ..errors import UserError
from . import nulls, overdispersion
from . import stats as st
from .dynamics import evaluated_indices, reference_alignment
from .outputs import Outputs
from .plots import new_figure, setup_color, setup_label
from .rtdata import SetupRt

CI_ALPHA = 0.05  # 95% intervals for rho


def rho_by_epoch(d: SetupRt, include_init: bool = False) -> dict[str, np.ndarray]:
    """Beta-binomial rho (and its interval) of the counts over seeds, per evaluated epoch."""
    valid = np.asarray(d.valid, dtype=bool)
    e = len(d.epochs)
    out = {k: np.full(e, np.nan) for k in ("rho", "ci_low", "ci_high", "p_value", "mean_rt", "n")}
    r = st.r_t(d.correct, valid)
    for t in evaluated_indices(d):
        if not (include_init or d.epochs[t] > 0):
            continue
        ok = valid[:, t]
        counts = np.asarray(d.correct[ok, t, 0, :], dtype=np.int64).sum(axis=0)
        fit = overdispersion.betabinomial_fit(counts, int(ok.sum()), CI_ALPHA)
        out["rho"][t], out["ci_low"][t], out["ci_high"][t] = fit["rho"], fit["ci_low"], fit["ci_high"]
        out["p_value"][t], out["mean_rt"][t], out["n"][t] = fit["p_value"], np.mean(r[t]), ok.sum()
    return out


def agreement(data: dict[str, SetupRt], r: dict[str, np.ndarray], aligned: dict[str, np.ndarray],
              ref_setup: str, ref_idx: np.ndarray) -> list[dict]:
    """Spearman correlation of per-image r_t for every pair of setups at each aligned epoch.
    A pair of epochs that several reference epochs align to (a setup that learns in a few
    epochs) is one comparison: listed once, at the first of them."""
    rows, seen = [], set()
    for a, ti in enumerate(ref_idx):
        for s1, s2 in combinations(data, 2):
            e1, e2 = aligned[s1][a], aligned[s2][a]
            if (s1, e1, s2, e2) in seen:
                continue
            seen.add((s1, e1, s2, e2))
            rho, p, n = nulls.rank_agreement(r[s1][e1], r[s2][e2])
            rows.append({"ref_epoch": int(data[ref_setup].epochs[ti]), "setup_a": s1,
                         "epoch_a": int(data[s1].epochs[e1]), "setup_b": s2,
                         "epoch_b": int(data[s2].epochs[e2]), "spearman": rho, "p_value": p,
                         "n_images": n})
    return rows


def run_heterogeneity(data: dict[str, SetupRt], out: Outputs, ref_setup: str | None = None,
                      ref_epochs: Sequence[int] | None = None, include_init: bool = False) -> dict:
    if not data:
        raise UserError("no setups to analyse")
    for s, d in data.items():
        if not np.array_equal(d.probe_indices, next(iter(data.values())).probe_indices):
            raise UserError(f"{s} was evaluated on other probe images than the other setups")
    r = {s: st.r_t(d.correct, d.valid) for s, d in data.items()}
    al = reference_alignment(data, ref_setup, ref_epochs, include_init, r)
    ref_setup, ref_idx, aligned, notes = al.ref_setup, al.ref_idx, al.aligned, al.notes
    fits = {s: rho_by_epoch(d, include_init) for s, d in data.items()}
    rows = [{"setup": s, "ref_epoch": int(data[ref_setup].epochs[ti]),
             "epoch": int(data[s].epochs[aligned[s][a]]),
             **{k: float(fits[s][k][aligned[s][a]]) for k in ("mean_rt", "rho", "ci_low", "ci_high", "p_value")}}
            for s in data for a, ti in enumerate(ref_idx)]
    agree = agreement(data, r, aligned, ref_setup, ref_idx)
    figures = [out.save_figure(draw_rho(data, fits, rows, ref_setup), "fig_heterogeneity")]
    if agree:
        figures.append(out.save_figure(draw_agreement(agree), "fig_hardness_agreement"))
    out.write_table("heterogeneity", rows, note=(
        "Beta-binomial fit of the per-image counts of correct seeds (augmentation 0) at each "
        f"setup's epoch aligned to {ref_setup}'s: rho = intra-class correlation (0 = every image "
        "equally hard), 95% profile-likelihood interval, p_value of the test rho = 0."))
    out.write_table("hardness_agreement", agree, note=(
        "Spearman rank correlation of per-image r_t between two setups at epochs aligned by mean "
        "r_t (eq. 4.4): do the setups find the same images hard? A pair of epochs aligned to "
        "several reference epochs is listed once, at the first."))
    arrays = {f"{s}/{k}": v for s in data for k, v in fits[s].items()}
    arrays.update({f"{s}/epochs": np.asarray(data[s].epochs, dtype=np.int64) for s in data})
    out.write_arrays("heterogeneity", arrays, {"ref_setup": ref_setup, "notes": notes})
    return {"tables": {"heterogeneity": rows, "hardness_agreement": agree},
            "figures": [str(f) for f in figures], "notes": notes}


def draw_rho(data: dict[str, SetupRt], fits: dict, rows: list[dict], ref_setup: str):
    """Left: rho against mean r_t over all epochs (with its interval); right: at the aligned epochs."""
    plt, fig, (ax_m, ax_a) = new_figure(2, panel_size=(5.2, 3.8), max_cols=2)
    for pos, s in enumerate(data):
        f, col = fits[s], setup_color(s, pos)
        ok = np.isfinite(f["rho"])
        order = np.argsort(f["mean_rt"][ok])
        x = f["mean_rt"][ok][order]
        ax_m.plot(x, f["rho"][ok][order], color=col, lw=1.4, label=setup_label(s))
        ax_m.fill_between(x, f["ci_low"][ok][order], f["ci_high"][ok][order], color=col, alpha=0.15, lw=0)
        mine = [row for row in rows if row["setup"] == s]
        ax_a.errorbar([row["ref_epoch"] for row in mine], [row["rho"] for row in mine],
                      yerr=[[row["rho"] - row["ci_low"] for row in mine],
                            [row["ci_high"] - row["rho"] for row in mine]],
                      color=col, marker="o", ms=4, capsize=2, lw=1.2, label=setup_label(s))
    ax_m.set_xlabel("mean $r_t$ over the probe images")
    ax_a.set_xlabel(f"{setup_label(ref_setup)} epoch (the other setups aligned to it)")
    if rows and max(row["ref_epoch"] for row in rows) > 20 * max(1, min(row["ref_epoch"] for row in rows)):
        ax_a.set_xscale("log")
    for ax in (ax_m, ax_a):
        ax.set_ylabel("heterogeneity $\\rho$ (0 = equally hard)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle("How different the images are: beta-binomial intra-class correlation of the "
                 "counts of correct seeds")
    return fig


def draw_agreement(rows: list[dict]):
    """Spearman correlation of per-image r_t for each pair of setups, by reference epoch."""
    plt, fig, (ax,) = new_figure(1, panel_size=(6.4, 4.0))
    pairs = list(dict.fromkeys((r["setup_a"], r["setup_b"]) for r in rows))
    for i, (a, b) in enumerate(pairs):
        mine = [r for r in rows if (r["setup_a"], r["setup_b"]) == (a, b)]
        ax.plot([r["ref_epoch"] for r in mine], [r["spearman"] for r in mine], marker="o", ms=4,
                lw=1.3, color=plt.get_cmap("tab10")(i % 10),
                label=f"{setup_label(a)} vs {setup_label(b)}")
    ax.axhline(0, color="#888888", lw=0.8)
    ax.set_ylim(-1.02, 1.02)
    ax.set_xlabel("reference epoch (every setup at its aligned epoch)")
    ax.set_ylabel("Spearman correlation of per-image $r_t$")
    ax.legend(loc="best", fontsize=7)
    fig.suptitle("Do setups find the same images hard?")
    return fig
