"""Table B.1 (linear probes), Fig. 5.1 (t-SNE) and Fig. 5.2 (KL between class Gaussians).

All three read the representation cache (features.py); each is one function taking plain
arguments and writing tables, arrays and figures through `Outputs`.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from .embed import stratified_subset, tsne_2d
from .features import FeatureCache, resolve_epoch
from .kl import class_gaussians, kl_matrix
from .outputs import Outputs, matplotlib_agg
from .plots import setup_label
from .probe import raw_pixel_features, train_linear_probe

# Table B.1 of the thesis (one seed each), printed beside ours for comparison.
THESIS_PROBE = {"simclr": (0.8186, 0.8060), "supervised": (1.0000, 0.9532),
                "random_labels": (0.3369, 0.3248), "random_labels_aug": (0.4395, 0.4275),
                "random_init": (0.2891, 0.2982), "raw_pixels": (0.4227, 0.3768)}
TSNE_FRACTION = 0.25  # SPEC.md: a class-stratified 25% of the training set


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-score both splits with the training split's per-feature mean and std."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant feature stays 0 instead of dividing by 0
    return (train - mean) / std, (test - mean) / std


def _seeds_or_fail(cache: FeatureCache, setup: str, epoch: int) -> list[int]:
    seeds = cache.seeds_with(setup, epoch)
    if not seeds:
        raise UserError(f"{setup} has no checkpoint at epoch {epoch} for any seed")
    return seeds


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def run_probe(cache: FeatureCache, out: Outputs, setups: list[str], epoch: int | None = None,
              seed: int = 0, device: str = "cpu") -> dict:
    """Linear probe per setup (mean ± std over the seeds that exist), random init, raw pixels."""
    ds = cache.dataset
    n_classes = ds.n_classes
    y_tr, y_te = ds.train_y.numpy(), ds.test_y.numpy()
    rows, arrays = [], {}

    def probe_row(name: str, feats: list[tuple[np.ndarray, np.ndarray]], at_epoch) -> None:
        accs = [train_linear_probe(tr, y_tr, te, y_te, n_classes=n_classes, seed=seed, device=device)
                for tr, te in feats]
        # The same probe on z-scored features (train mean/std): SPEC's probe is scale-sensitive,
        # and a fresh network in eval mode has tiny features (BatchNorm's running stats are 0/1).
        zaccs = []
        for tr, te in feats:
            ztr, zte = standardize(tr, te)
            zaccs.append(train_linear_probe(ztr, y_tr, zte, y_te, n_classes=n_classes, seed=seed,
                                            device=device))
        tr_m, tr_s = _mean_std([a["train_acc"] for a in accs])
        te_m, te_s = _mean_std([a["test_acc"] for a in accs])
        thesis = THESIS_PROBE.get(name, (None, None))
        rows.append({"model": name, "epoch": at_epoch, "seeds": len(accs), "dim": feats[0][0].shape[1],
                     "train_acc": tr_m, "train_std": tr_s, "test_acc": te_m, "test_std": te_s,
                     "train_acc_z": _mean_std([a["train_acc"] for a in zaccs])[0],
                     "test_acc_z": _mean_std([a["test_acc"] for a in zaccs])[0],
                     "thesis_train": thesis[0], "thesis_test": thesis[1]})
        arrays[f"{name}_train_acc"] = np.array([a["train_acc"] for a in accs])
        arrays[f"{name}_test_acc"] = np.array([a["test_acc"] for a in accs])
        arrays[f"{name}_test_acc_z"] = np.array([a["test_acc"] for a in zaccs])

    for s in setups:
        e = resolve_epoch(cache.cfg, s, epoch)
        probe_row(s, [cache.get(s, sd, e) for sd in _seeds_or_fail(cache, s, e)], e)
    # Epoch 0 of any setup is a randomly initialised network (its head is never used here).
    base = setups[0]
    probe_row("random_init", [cache.get(base, sd, 0) for sd in _seeds_or_fail(cache, base, 0)], 0)
    probe_row("raw_pixels", [(raw_pixel_features(ds.train_x.numpy()), raw_pixel_features(ds.test_x.numpy()))], None)
    note = ("Linear probe on frozen representations (Adam lr 1e-3, 10 epochs, batch 256, no "
            "regularization); mean and sample std over seeds. *_z: the same probe on features "
            "z-scored with the training mean and std. thesis_* = Table B.1 (one seed, CIFAR-10).")
    out.write_table("tableB_1_probe", rows, note)
    out.write_arrays("probe", arrays, {"note": note})
    return {"tables": {"tableB_1_probe": rows}, "notes": [note], "figures": []}


def run_embed(cache: FeatureCache, out: Outputs, setups: list[str], epoch: int | None = None,
              seed: int | None = None, tsne_seed: int = 0, shrinkage: float = 0.0,
              tsne_method: str = "auto", class_names: list[str] | None = None) -> dict:
    """Fig. 5.1 (t-SNE of a stratified 25% of train) and Fig. 5.2 (KL, log colour scale)."""
    plt = matplotlib_agg()
    from matplotlib.colors import LogNorm

    ds = cache.dataset
    labels = ds.train_y.numpy()
    names = class_names or list(ds.classes)
    subset = stratified_subset(labels, TSNE_FRACTION, tsne_seed)
    n = len(setups)
    fig_t, axes_t = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    fig_k, axes_k = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    rows, arrays, notes = [], {"tsne_subset": subset}, []
    kls = {}
    for i, s in enumerate(setups):
        e = resolve_epoch(cache.cfg, s, epoch)
        seeds = _seeds_or_fail(cache, s, e)
        sd = seeds[0] if seed is None else seed
        if sd not in seeds:
            raise UserError(f"{s} seed {sd} has no checkpoint at epoch {e} (seeds: {seeds})")
        train, _ = cache.get(s, sd, e)
        emb = tsne_2d(train[subset], seed=tsne_seed, method=tsne_method)
        arrays[f"{s}_tsne"] = emb
        ax = axes_t[0, i]
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=labels[subset], cmap="tab10", s=2, vmin=-0.5,
                        vmax=9.5, rasterized=True)
        ax.set_title(f"{setup_label(s)} (epoch {e}, seed {sd})")
        ax.set_xticks([]), ax.set_yticks([])
        means, covs = class_gaussians(train, labels, ds.n_classes)
        kl = kl_matrix(means, covs, shrinkage=shrinkage)
        kls[s] = kl
        arrays[f"{s}_kl"] = kl
        for a in range(ds.n_classes):
            for b in range(ds.n_classes):
                if a != b:
                    rows.append({"setup": s, "epoch": e, "seed": sd, "from": names[a], "to": names[b],
                                 "kl": float(kl[a, b])})
    handles = [plt.Line2D([], [], marker="o", ls="", color=plt.cm.tab10(c), label=names[c])
               for c in range(ds.n_classes)]
    fig_t.legend(handles=handles, loc="lower center", ncol=min(10, ds.n_classes), frameon=False)
    fig_t.suptitle(f"t-SNE of the representation ({len(subset)} training images, class-stratified "
                   f"{int(TSNE_FRACTION * 100)}%)")
    fig_t.tight_layout(rect=(0, 0.07, 1, 0.95))
    off = np.concatenate([k[~np.eye(len(k), dtype=bool)] for k in kls.values()])
    pos = off[off > 0]
    vmin, vmax = (float(pos.min()), float(pos.max())) if len(pos) else (1e-3, 1.0)
    for i, s in enumerate(setups):
        ax = axes_k[0, i]
        k = kls[s].copy()
        np.fill_diagonal(k, np.nan)  # KL(y||y) = 0 has no place on a log scale
        im = ax.imshow(np.where(k > 0, k, np.nan), norm=LogNorm(vmin=vmin, vmax=vmax), cmap="viridis")
        ax.set_title(setup_label(s))
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("z"), ax.set_ylabel("y")
    fig_k.colorbar(im, ax=axes_k.ravel().tolist(), label="KL(N_y || N_z)")
    fig_k.suptitle("KL divergence between class Gaussians of the representation (log scale)")
    if shrinkage:
        notes.append(f"covariances shrunk towards a scaled identity with alpha = {shrinkage}")
    figs = [out.save_figure(fig_t, "fig5_1_tsne"), out.save_figure(fig_k, "fig5_2_kl")]
    out.write_table("kl_pairs", rows, "KL(N_from || N_to) between class Gaussians (eq. 5.1-5.2)")
    out.write_arrays("embed", arrays, {"shrinkage": shrinkage, "tsne_seed": tsne_seed})
    summary = []
    for s, k in kls.items():
        off_s = k[~np.eye(len(k), dtype=bool)]
        summary.append({"setup": s, "median_kl": float(np.median(off_s)), "min_kl": float(off_s.min()),
                        "max_kl": float(off_s.max())})
    return {"tables": {"kl_summary": summary}, "notes": notes, "figures": figs}
