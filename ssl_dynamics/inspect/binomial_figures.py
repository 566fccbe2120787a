"""Drawing the binomial-noise figures: Fig. 4.3 (two views), 4.4, 4.5 and B.1.

Only drawing: every number comes from `binomial.py`, which passes it in per setup and
p0 level (None where a level was never reached).
"""
from __future__ import annotations

import numpy as np

from .binomial_rows import ordinal
from .plots import (EPOCH_CMAP, RTILDE_LABEL, fmt_p, new_figure, p0_color, rank_x, rate_axis,
                    setup_color, setup_label)

SPREAD_ALPHA = 0.55  # Fig. 4.5: dots of the M augmentations overlap; keep them see-through


def empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="#555555", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def fig_counts(data, p0s, chi_fig, out):
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
                empty_panel(ax, f"{setup_label(s)}\np0 = {p0:g} never reached")
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
            ax.text(0.03, 0.95, f"p0 = {info.get('p0', p0):g}\npooled $\\chi^2$ p = {fmt_p(info['p_pooled'])}",
                    transform=ax.transAxes, va="top", fontsize=7.5,
                    bbox={"fc": "white", "ec": "#cccccc", "alpha": 0.8})
            if i == 0 and j == len(p0s) - 1:
                ax.legend(loc="upper right", fontsize=7)
    fig.suptitle("Counts of correct seeds per image (augmentation 0) vs binomial noise "
                 "(Fig. 4.3, Table 4.1)")
    return out.save_figure(fig, "fig4_3_binomial_counts")


def _noise_panels(data, p0s, infos, sorted_values, label, filled: bool, own_range: bool = False):
    """One panel per setup: per reached level, sorted values (solid) vs sorted noise (dashed)."""
    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(4.6, 3.5), max_cols=2)
    for ax, s in zip(axes, setups):
        for j, info in enumerate(infos[s]):
            if info is None:
                continue
            values = sorted_values(s, info)
            x = rank_x(values.size)
            ax.plot(x, values, color=p0_color(j), lw=2.5, alpha=0.8, drawstyle="steps-mid",
                    label=label(info))
            ax.plot(x, info["noise"], color=p0_color(j), lw=1.1, ls="--", drawstyle="steps-mid")
            if filled:
                ax.fill_between(x, values, info["noise"], color=p0_color(j), alpha=0.2, lw=0, step="mid")
        ax.set_title(setup_label(s))
        if ax.get_legend_handles_labels()[0]:  # sorted curves rise to the right: upper left is free
            ax.legend(title="epoch t / $\\hat p_0(t)$", loc="upper left", fontsize=8)
        else:
            why = ("no accuracy level reached: its mean accuracy does not change" if own_range else
                   f"no accuracy level p0 = {', '.join(f'{p:g}' for p in p0s)} reached\n"
                   f"(--p0 range takes levels from the setup's own range)")
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9,
                    color="#555555")
    return fig, axes


def fig_sorted_tilde(data, p0s, chi_fig, out, own_range: bool = False):
    """Fig. 4.3 as the thesis drew it: sorted r̃_t (thick) vs sorted binomial noise (dashed)."""
    fig, axes = _noise_panels(data, p0s, chi_fig, lambda s, i: np.sort(i["r_tilde"]),
                              lambda i: f"{i['epoch']} / {i['p_hat']:.3f} (N={i['n']})", False, own_range)
    for ax in axes:
        rate_axis(ax, RTILDE_LABEL)
        ax.set_xlabel("augmented images sorted by $\\tilde r_t$ (rank / K)")
    fig.suptitle("Sorted $\\tilde r_t$ (one augmentation, solid) vs sorted binomial noise "
                 "(dashed), Fig. 4.3")
    return out.save_figure(fig, "fig4_3_sorted_rtilde")


def fig_noise(data, p0s, mae_fig, r_all, out, own_range: bool = False):
    """Fig. 4.4: sorted r_t (thick) vs sorted binomial noise (dashed), area between filled.
    `own_range`: the levels are fractions of each setup's range (`--p0 range`)."""
    fig, axes = _noise_panels(data, p0s, mae_fig, lambda s, i: np.sort(r_all[s][i["t"]]),
                              lambda i: f"{i['epoch']} / {i['p_hat']:.3f}  (MAE {i['mae']:.3f})", True,
                              own_range)
    for ax in axes:
        rate_axis(ax)
    fig.suptitle("Sorted $r_t$ (solid) vs sorted binomial noise Binom(N, $\\hat p_0$)/N (dashed), "
                 "Fig. 4.4 / Table 4.2")
    return out.save_figure(fig, "fig4_4_binomial_noise")


def fig_spread(spread: dict, out):
    """Fig. 4.5: for each setup with augmentation (rows) and each of its Table 4.2 epochs
    (columns), r̃ of every augmentation (dots) and r_t (line) of every 50th sorted image."""
    setups = [s for s in spread if spread[s]]
    cols = max((len(v) for v in spread.values()), default=1)
    plt, fig, axes = new_figure(max(len(setups), 1) * cols, panel_size=(4.2, 3.3),
                                shape=(max(len(setups), 1), cols))
    for i, s in enumerate(setups):
        for j, info in enumerate(spread[s]):
            ax = axes[i * cols + j]
            if info is None:
                empty_panel(ax, f"{setup_label(s)}\nlevel never reached")
                continue
            k, m, step = info["k"], info["r_tilde"].shape[0], info["step"]
            x = np.arange(0, k, step) / max(k - 1, 1)
            offs = (np.arange(m) - (m - 1) / 2) / max(m, 1) * 0.6 * step / max(k - 1, 1)
            for a in range(m):
                ax.scatter(x + offs[a], info["r_tilde"][a], s=9, color=setup_color(s, i),
                           alpha=SPREAD_ALPHA, lw=0, label="one augmentation $\\tilde r_t$" if a == 0 else None)
            ax.plot(x, info["r_t"], color="black", lw=1.4, label="mean over augmentations $r_t$")
            ax.set_title(f"{setup_label(s)} (t = {info['epoch']}, mean $r_t$ = {info['p_hat']:.2f})",
                         fontsize=9.5)
            rate_axis(ax)
            shown = "every image" if step == 1 else f"every {ordinal(step)} image"
            ax.set_xlabel(f"{shown} sorted by $r_t$ (rank / K)", fontsize=8)
            if i == 0 and j == 0:
                ax.legend(loc="upper left", fontsize=7)
    fig.suptitle("Spread of $\\tilde r_t$ over augmentations of the same image, at the Table 4.2 "
                 "epochs (Fig. 4.5)")
    return out.save_figure(fig, "fig4_5_aug_spread")


def fig_first_second(curves: dict, out):
    """Fig. B.1: sorted r_t and r̃_t of first views (dashed) vs second views (translucent).

    curves: setup -> list of (epoch, r_first, r_second, rt_first, rt_second)."""
    second = list(curves)
    plt, fig, axes = new_figure(2 * len(second), panel_size=(4.8, 3.6), shape=(len(second), 2))
    cmap = plt.get_cmap(EPOCH_CMAP)
    for i, s in enumerate(second):
        ax_r, ax_t = axes[2 * i], axes[2 * i + 1]
        n = len(curves[s])
        for c, (epoch, r1, r2, t1, t2) in enumerate(curves[s]):
            col = cmap(0.05 + 0.9 * c / max(n - 1, 1))
            for ax, a, b in ((ax_r, r1, r2), (ax_t, t1, t2)):
                order = np.argsort(a, kind="stable")
                x = rank_x(a.size)
                ax.plot(x, b[order], color=col, lw=2.2, alpha=0.35)
                ax.plot(x, a[order], color=col, lw=1.6, ls="--", label=f"{epoch}")
        ax_r.set_title(f"{setup_label(s)}: averaged over augmentations", fontsize=10)
        ax_t.set_title(f"{setup_label(s)}: one pair of augmentations", fontsize=10)
        rate_axis(ax_r)
        rate_axis(ax_t, RTILDE_LABEL)
        for ax in (ax_r, ax_t):
            ax.set_xlabel("images sorted by the first view's value (rank / K)")
            ax.legend(title="epoch t", loc="lower right", ncol=min(max(n, 1), 5), fontsize=7,
                      handlelength=1.6, columnspacing=0.8)
    fig.suptitle("First view (dashed) vs second view (translucent) of each SimCLR pair (Fig. B.1)")
    return out.save_figure(fig, "figB_1_first_second")
