"""The rows of Tables 4.1 and 4.2 and the data of Fig. 4.5 at one epoch of one setup, for
`binomial.run_binomial` (see its module for what each column means).

Random draws come from ``numpy.random.default_rng([seed, crc32(setup), round(1e6·p0), stream])``,
one stream per use of randomness.
"""
from __future__ import annotations

import zlib

import numpy as np

from . import nulls, overdispersion
from . import stats as st
from .rtdata import SetupRt

MIN_SPREAD_POINTS = 20  # Fig. 4.5: below this many images at step 50 (small K) the step shrinks
# RNG streams, so that each use of randomness is independent of the others.
STREAM_MAE, STREAM_TILDE_NOISE, STREAM_NULL_CHI, STREAM_NULL_MAE, STREAM_NULL_MAE_W = range(5)


def stream_rng(seed: int, setup: str, p0: float, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(setup.encode()), int(round(p0 * 1e6)), stream])


def seed_counts(d: SetupRt, t: int, aug: int = 0) -> tuple[np.ndarray, int]:
    """Per-image number of valid seeds correct on augmentation `aug` at epoch index t, and N."""
    ok = np.asarray(d.valid, dtype=bool)[:, t]
    return np.asarray(d.correct[ok, t, aug, :], dtype=np.int64).sum(axis=0), int(ok.sum())


def never_note(s: str, p0: float, p_hat: np.ndarray, epochs: np.ndarray, what: str) -> str:
    if not np.isfinite(p_hat).any():
        return f"{s}: no evaluated epoch"
    top = int(np.nanargmax(p_hat))
    return (f"{s}: {what} never reaches p0 = {p0:g} (largest {p_hat[top]:.3f} at epoch "
            f"{int(epochs[top])})")


def bins_text(bins: np.ndarray) -> str:
    """The pooled groups of count bins, e.g. "0-2, 14-30" (every other bin stands alone)."""
    merged = [f"{lo}-{hi}" for lo, hi in bins if lo != hi]
    return ", ".join(merged) if merged else "none"


def chi_entry(s, d, t, p0, p_hat, seed, sims, notes) -> tuple[dict, dict]:
    """Table 4.1 row at epoch index t and what its figures need."""
    counts, n = seed_counts(d, t)
    epoch = int(d.epochs[t])
    f_obs, f_exp = st.count_frequencies(counts, n), st.binomial_expected(counts.size, n, p_hat)
    problems = []
    try:
        chi_f, p_f = st.chisquare_faithful(counts, n, p_hat)
        dof_f = int(np.count_nonzero(f_exp > 0)) - 1 - st.ESTIMATED_PARAMS
        sim = nulls.calibrate(chi_f, nulls.chisquare_null_distribution(
            n, counts.size, p_hat, stream_rng(seed, s, p0, STREAM_NULL_CHI), sims))["p_value"]
    except ValueError as exc:  # too few bins (N < 2 seeds, or p_hat of 0/1)
        chi_f, p_f, dof_f, sim = float("nan"), float("nan"), None, float("nan")
        problems.append(f"thesis chi-square undefined: {exc}")
    chi_p, p_p, dof_p, bins = st.chisquare_pooled(counts, n, p_hat)
    g, p_g, _, _ = st.g_test_pooled(counts, n, p_hat)
    if dof_p < 1:
        problems.append("pooled tests undefined (fewer than 3 groups)")
    bb = overdispersion.betabinomial_fit(counts, n)
    if np.isnan(bb["rho"]):
        problems.append("rho undefined (one seed, or every image learned by all seeds, or every image by none)")
    note = "; ".join(problems)
    if note:
        notes.append(f"table4_1: {s} p0 = {p0:g} (epoch {epoch}, N = {n}): {note}")
    row = {"setup": s, "p0": p0, "epoch": epoch, "n_seeds": n, "p_hat0": p_hat,
           "chi2_thesis_allbins": chi_f, "dof_thesis": dof_f, "p_thesis_allbins": p_f,
           "p_thesis_sim": sim, "min_expected_allbins": float(f_exp.min()), "chi2_pooled": chi_p,
           "dof_pooled": int(dof_p), "p_pooled": p_p, "g_pooled": g, "p_g": p_g,
           "pooled_tails": bins_text(bins), "rho": bb["rho"], "rho_ci_low": bb["ci_low"],
           "rho_ci_high": bb["ci_high"], "p_rho0": bb["p_value"], "note": note}
    return row, {"t": t, "epoch": epoch, "n": n, "p_hat": p_hat, "counts": counts, "f_obs": f_obs,
                 "f_exp": f_exp, "bins": bins, "p_pooled": p_p}


def mae_entry(s, d, r, t, p0, p_hat, draws, seed, sims) -> tuple[dict, dict]:
    """Table 4.2 row at epoch index t: the thesis's MAE and its place in two simulated nulls."""
    valid = np.asarray(d.valid, dtype=bool)
    n, m, k = int(valid[:, t].sum()), d.correct.shape[2], r.shape[1]
    mean, std, per_draw = st.binomial_mae(r[t], n, p_hat, draws, rng=stream_rng(seed, s, p0, STREAM_MAE))
    # the first draw of the same stream: the noise curve Fig. 4.4 shows
    noise = np.sort(stream_rng(seed, s, p0, STREAM_MAE).binomial(n, p_hat, k) / n)
    null = nulls.mae_null_distribution(n, m, k, p_hat, stream_rng(seed, s, p0, STREAM_NULL_MAE), sims, draws)
    rho_w = nulls.within_seed_correlation(d.correct[:, t], valid[:, t])
    null_w = nulls.mae_null_distribution(n, m, k, p_hat, stream_rng(seed, s, p0, STREAM_NULL_MAE_W), sims,
                                         draws, within_seed_rho=nulls.null_rho(rho_w))
    if np.isnan(rho_w):
        note = ("rho_within undefined (one replay, one valid seed, or every image learned by all "
                "seeds or by none): the within-seed null is the plain one")
    elif rho_w < 0:
        note = (f"rho_within {rho_w:.3g} < 0 (replays of one seed agree less than across seeds): "
                "the within-seed null simulates independent replays")
    else:
        note = ""
    cal, cal_w = nulls.calibrate(mean, null, two_sided=True), nulls.calibrate(mean, null_w, two_sided=True)
    row = {"setup": s, "p0": p0, "epoch": int(d.epochs[t]), "n_seeds": n, "replays": m,
           "p_hat0": p_hat, "mae": f"{mean:.3f} ± {std:.3f}", "mae_mean": mean, "mae_std": std,
           "null_mae": cal["null_mean"], "null_mae_std": cal["null_std"], "z": cal["z"],
           "p": cal["p_value"], "rho_within": rho_w, "null_mae_within": cal_w["null_mean"],
           "z_within": cal_w["z"], "p_within": cal_w["p_value"], "note": note}
    return row, {"t": t, "epoch": int(d.epochs[t]), "n": n, "p_hat": p_hat, "noise": noise,
                 "mae": mean, "per_draw": per_draw, "null": null, "null_within": null_w}


def spread_step(k: int) -> int:
    """Fig. 4.5's step over K r_t-sorted probe images: the thesis's 50, smaller where that
    would show fewer than MIN_SPREAD_POINTS images."""
    step = st.DEFAULT_SPREAD_STEP
    if -(-k // step) < MIN_SPREAD_POINTS:
        step = max(1, k // MIN_SPREAD_POINTS)
    return step


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def spread_entry(d: SetupRt, r: np.ndarray, t: int, notes: list[str]) -> dict:
    """Fig. 4.5 data at epoch index t: every step-th image of the r_t-sorted probe set."""
    k, m = r.shape[1], d.correct.shape[2]
    step = spread_step(k)
    if step != st.DEFAULT_SPREAD_STEP:
        shown = "every image" if step == 1 else f"every {ordinal(step)} image"
        notes.append(f"fig4_5: {d.setup} has only K = {k} probe images; {shown} is "
                     f"shown instead of every {ordinal(st.DEFAULT_SPREAD_STEP)}")
    valid = np.asarray(d.valid, dtype=bool)[:, t:t + 1]
    rt_all = np.stack([st.r_tilde(d.correct[:, t:t + 1], j, valid)[0] for j in range(m)])
    order, r_sel, rt_sel = st.spread_rows(r[t], rt_all, step)
    return {"epoch": int(d.epochs[t]), "k": k, "step": step, "order": order, "r_t": r_sel,
            "r_tilde": rt_sel, "p_hat": float(np.mean(r[t]))}


def missing_row(kind: str, s: str, p0: float, msg: str) -> dict:
    nan = float("nan")
    base = {"setup": s, "p0": p0, "epoch": None, "n_seeds": None, "p_hat0": nan}
    if kind == "chi":
        return {**base, "chi2_thesis_allbins": nan, "p_thesis_allbins": nan, "p_thesis_sim": nan,
                "p_pooled": nan, "p_g": nan, "rho": nan, "note": msg}
    return {**base, "mae": "n/a", "mae_mean": nan, "mae_std": nan, "null_mae": nan, "z": nan,
            "p": nan, "note": msg}
