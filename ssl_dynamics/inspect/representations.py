"""Table B.1 (linear probes), Fig. 5.1 (t-SNE) and Fig. 5.2 (KL between class Gaussians).

All three read the representation cache (features.py); each is one function taking plain
arguments and writing tables, arrays and figures through `Outputs`. Every row says which
epoch it used and why (the thesis's longer-trained models when the run has them).
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from .embed import stratified_subset, tsne_2d
from .embed_figures import draw_kl, draw_tsne
from .features import RAW_INPUT, FeatureCache, resolve_epoch
from .kl import class_gaussians, kl_matrix
from .outputs import Outputs
from .plots import compress_ints
from .probe import raw_pixel_features, train_linear_probe

# Table B.1 of the thesis (one seed each), printed beside ours for comparison.
THESIS_PROBE = {"simclr": (0.8186, 0.8060), "supervised": (1.0000, 0.9532),
                "random_labels": (0.3369, 0.3248), "random_labels_aug": (0.4395, 0.4275),
                "random_init": (0.2891, 0.2982), "raw_pixels": (0.4227, 0.3768)}
TSNE_FRACTION = 0.25  # docs/science.md: a class-stratified 25% of the training set


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
    """Mean and sample std (ddof 1); the std of one value is undefined (NaN), not 0."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def _probe_row(name, feats, at_epoch, how, y_tr, y_te, n_classes, seed, device) -> tuple[dict, dict]:
    """Mean ± std over seeds of the probe on raw and on z-scored features."""
    def probe(tr, te):
        return train_linear_probe(tr, y_tr, te, y_te, n_classes=n_classes, seed=seed, device=device)

    accs = [probe(tr, te) for tr, te in feats]
    # The same probe on z-scored features (train mean/std): the thesis's probe is scale-sensitive,
    # and a fresh network in eval mode has tiny features (BatchNorm's running stats are 0/1).
    zaccs = [probe(*standardize(tr, te)) for tr, te in feats]
    tr_m, tr_s = _mean_std([a["train_acc"] for a in accs])
    te_m, te_s = _mean_std([a["test_acc"] for a in accs])
    thesis = THESIS_PROBE.get(name, (None, None))
    row = {"model": name, "epoch": at_epoch, "epoch_choice": how, "seeds": len(accs),
           "dim": feats[0][0].shape[1], "train_acc": tr_m, "train_std": tr_s, "test_acc": te_m,
           "test_std": te_s, "train_acc_z": _mean_std([a["train_acc"] for a in zaccs])[0],
           "test_acc_z": _mean_std([a["test_acc"] for a in zaccs])[0],
           "thesis_train": thesis[0], "thesis_test": thesis[1]}
    arrays = {f"{name}_train_acc": np.array([a["train_acc"] for a in accs]),
              f"{name}_test_acc": np.array([a["test_acc"] for a in accs]),
              f"{name}_train_acc_z": np.array([a["train_acc"] for a in zaccs]),
              f"{name}_test_acc_z": np.array([a["test_acc"] for a in zaccs])}
    return row, arrays


def random_init_source(cache: FeatureCache) -> tuple[str, str]:
    """The setup whose epoch-0 checkpoints stand for "a randomly initialised network".

    Epoch 0 of any setup is a fresh network (its head is never used here), but the features
    depend on the input scale: setups trained on normalized images feed normalized ones,
    SimCLR and no augmentation feed [0, 1] pixels. One fixed choice, whatever --setup lists:
    the run's first setup (in its config order) that feeds normalized images, as a classifier
    would see them, else its first setup; either must have epoch-0 checkpoints.
    """
    with_init = [s for s in cache.cfg.setups if cache.seeds_with(s, 0)]
    if not with_init:
        raise UserError("no setup has an epoch-0 checkpoint for the random-init baseline")
    normalized = [s for s in with_init if cache.cfg.setups[s].augment not in RAW_INPUT]
    base = (normalized or with_init)[0]
    return base, "normalized" if normalized else "[0, 1]"


def run_probe(cache: FeatureCache, out: Outputs, setups: list[str], epoch: int | None = None,
              seed: int = 0, device: str = "cpu") -> dict:
    """Linear probe per setup (mean ± std over the seeds that exist), random init, raw pixels."""
    ds = cache.dataset
    common = dict(y_tr=ds.train_y.numpy(), y_te=ds.test_y.numpy(), n_classes=ds.n_classes,
                  seed=seed, device=device)
    rows, arrays, left_out = [], {}, []

    def seeds_at(setup: str, e: int) -> list[int]:  # noting the run's seeds without epoch e
        have = _seeds_or_fail(cache, setup, e)
        if gone := [sd for sd in cache.cfg.seeds if sd not in have]:
            left_out.append(f"{setup}: seed{'s' if len(gone) > 1 else ''} {compress_ints(gone)} "
                            f"{'have' if len(gone) > 1 else 'has'} no checkpoint at epoch {e} and "
                            f"{'are' if len(gone) > 1 else 'is'} left out ({len(have)} of "
                            f"{len(cache.cfg.seeds)} seeds averaged)")
        return have

    for s in setups:
        e, how = resolve_epoch(cache.run, s, epoch)
        feats = [cache.get(s, sd, e) for sd in seeds_at(s, e)]
        row, arr = _probe_row(s, feats, e, how, **common)
        rows.append(row), arrays.update(arr)
    base, input_kind = random_init_source(cache)
    feats = [cache.get(base, sd, 0) for sd in seeds_at(base, 0)]
    init_how = f"initialization: {base}'s epoch 0, {input_kind} input"
    for name, f, e, how in (("random_init", feats, 0, init_how),
                            ("raw_pixels", [(raw_pixel_features(ds.train_x.numpy()),
                                             raw_pixel_features(ds.test_x.numpy()))], None, "")):
        row, arr = _probe_row(name, f, e, how, **common)
        rows.append(row), arrays.update(arr)
    note = ("Linear probe on frozen representations (Adam lr 1e-3, 10 epochs, batch 256, no "
            "regularization); mean and sample std over seeds (NaN for one seed or raw pixels: no "
            "spread to estimate). *_z: the same probe on features "
            "z-scored with the training mean and std. thesis_* = Table B.1 (one seed, CIFAR-10). "
            "epoch_choice says why each row used its epoch.")
    out.write_table("tableB_1_probe", rows, note)
    out.write_arrays("probe", arrays, {"note": note})
    return {"tables": {"tableB_1_probe": rows}, "notes": [note, *left_out], "figures": []}


def _one_model(cache: FeatureCache, setup: str, epoch: int | None, seed: int | None):
    e, how = resolve_epoch(cache.run, setup, epoch)
    seeds = _seeds_or_fail(cache, setup, e)
    sd = seeds[0] if seed is None else seed
    if sd not in seeds:
        raise UserError(f"{setup} seed {sd} has no checkpoint at epoch {e} (seeds: {seeds})")
    return cache.get(setup, sd, e)[0], e, sd, how


def run_tsne(cache: FeatureCache, out: Outputs, setups: list[str], epoch: int | None = None,
             seed: int | None = None, tsne_seed: int = 0, method: str = "thesis") -> dict:
    """Fig. 5.1: 2-D t-SNE of the representation of a class-stratified 25% of train."""
    labels = cache.dataset.train_y.numpy()
    subset = stratified_subset(labels, TSNE_FRACTION, tsne_seed)
    embeddings, arrays, notes = {}, {"tsne_subset": subset}, []
    for s in setups:
        train, e, sd, how = _one_model(cache, s, epoch, seed)
        emb = tsne_2d(train[subset], seed=tsne_seed, method=method)
        embeddings[s] = (emb, e, sd)
        arrays[f"{s}_tsne"] = emb
        notes.append(f"fig5_1: {s} epoch {e} ({how}), seed {sd}")
    fig = draw_tsne(embeddings, labels[subset], list(cache.dataset.classes), TSNE_FRACTION)
    png = out.save_figure(fig, "fig5_1_tsne")
    out.write_arrays("tsne", arrays, {"tsne_seed": tsne_seed, "method": method})
    return {"tables": {}, "notes": notes, "figures": [png]}


def run_kl(cache: FeatureCache, out: Outputs, setups: list[str], epoch: int | None = None,
           seed: int | None = None, shrinkage: float = 0.0) -> dict:
    """Fig. 5.2: KL(N_y || N_z) between class Gaussians of the representation."""
    ds = cache.dataset
    labels, names = ds.train_y.numpy(), list(ds.classes)
    rows, arrays, kls, notes, undefined = [], {}, {}, [], {}
    for s in setups:
        train, e, sd, how = _one_model(cache, s, epoch, seed)
        try:
            means, covs = class_gaussians(train, labels, ds.n_classes)
            kls[s] = arrays[f"{s}_kl"] = kl_matrix(means, covs, shrinkage=shrinkage)
        except ValueError as err:  # one setup's singular covariance leaves the others' KL
            undefined[s] = str(err)
            notes.append(f"fig5_2: {s} epoch {e} ({how}), seed {sd}: KL undefined: {err}")
            continue
        notes.append(f"fig5_2: {s} epoch {e} ({how}), seed {sd}")
        rows += [{"setup": s, "epoch": e, "seed": sd, "from": names[a], "to": names[b],
                  "kl": float(kls[s][a, b])}
                 for a in range(ds.n_classes) for b in range(ds.n_classes) if a != b]
    if not kls:
        raise ValueError(f"KL undefined for {', '.join(undefined)}: {next(iter(undefined.values()))}")
    if shrinkage:
        notes.append(f"covariances shrunk towards a scaled identity with alpha = {shrinkage}")
    panels = {s: kls[s] if s in kls else undefined[s] for s in setups}
    png = out.save_figure(draw_kl(panels, names), "fig5_2_kl")
    out.write_table("kl_pairs", rows, "KL(N_from || N_to) between class Gaussians (eq. 5.1-5.2)")
    out.write_arrays("kl", arrays, {"shrinkage": shrinkage})
    return {"tables": {}, "notes": notes, "figures": [png], "partial": bool(undefined)}


def run_embed(cache: FeatureCache, out: Outputs, setups: list[str], epoch: int | None = None,
              seed: int | None = None, tsne_seed: int = 0, shrinkage: float = 0.0,
              tsne_method: str = "thesis") -> dict:
    """Fig. 5.1 then Fig. 5.2 (the t-SNE figure is written even when KL is undefined; the KL
    outputs an earlier run left are then moved to stale/kl/, so that the work folder never
    shows this run's t-SNE beside another run's KL)."""
    a = run_tsne(cache, out, setups, epoch, seed, tsne_seed, tsne_method)
    try:
        b = run_kl(cache, out, setups, epoch, seed, shrinkage)
    except ValueError as e:
        moved = out.move_aside("kl")
        raise ValueError(f"{e}" + (f" (the KL outputs of an earlier run, {', '.join(moved)}, were "
                                   f"moved to {out.root / 'stale' / 'kl'})" if moved else "")) from None
    return {"tables": b["tables"], "notes": a["notes"] + b["notes"], "figures": a["figures"] + b["figures"]}
