"""2-D t-SNE of representations (Fig. 5.1) and the class-stratified subset it is drawn on.

SPEC.md, "Representations and visualizations": a 2-D t-SNE of the representation of a
class-stratified 25% of the training set (12,500 images for CIFAR-10), coloured by class.

Both back ends run the same schedule: perplexity 30, PCA initialisation, early
exaggeration 12 for 250 iterations followed by 750 normal iterations (1,000 in all,
scikit-learn's default), each library's own "auto" learning rate (openTSNE n/12 in the
exaggeration phase, then n; scikit-learn max(n/12/4, 50), the factor 4 being the
difference in how the two libraries scale the gradient), seeded.

Default back end, chosen by measurement (`benchmarks/bench_tsne.py`, results in
`benchmarks/results/tsne_cpu.json`): 12,500 x 512 float32, 10 overlapping Gaussian
clusters, 2-core AMD EPYC CPU (shared machine), n_jobs=2, torch 2.14.1, scikit-learn 1.9.1, openTSNE 1.0.4:

    openTSNE (FFT gradient, Annoy neighbours)    53.0 s   trustworthiness 0.800
    scikit-learn (Barnes-Hut, exact neighbours)  102.6 s   trustworthiness 0.813

(trustworthiness with n_neighbors=10 on a seeded 2,000-point subsample); scikit-learn
took 1.94x as long for a trustworthiness only 0.0125 higher, so `method="auto"` means "opentsne" (scikit-learn if openTSNE is missing).
"""
from __future__ import annotations

import os
from typing import Literal

import numpy as np

from ssl_dynamics.errors import UserError

__all__ = ["tsne_2d", "stratified_subset", "AUTO_METHOD"]

#: The back end that `method="auto"` selects (the benchmark winner, see module docstring).
AUTO_METHOD: Literal["opentsne", "sklearn"] = "opentsne"  # type: ignore[assignment]

PERPLEXITY = 30.0
EARLY_EXAGGERATION = 12.0
EARLY_EXAGGERATION_ITER = 250
N_ITER_AFTER_EXAGGERATION = 750


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def stratified_subset(labels, fraction: float, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subset, sorted ascending.

    Every class c with count n_c contributes exactly round(fraction * n_c) indices
    (Python's round, i.e. half to even), drawn without replacement by a generator seeded
    with `seed`; the same (labels, fraction, seed) always gives the same indices.
    """
    labels = _as_numpy(labels)
    if labels.ndim != 1:
        raise UserError(f"stratified_subset: labels must be 1-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"stratified_subset: labels must be integers, got dtype {labels.dtype}")
    fraction = float(fraction)
    if not (0.0 < fraction <= 1.0) or not np.isfinite(fraction):
        raise UserError(f"stratified_subset: fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(fraction * members.size))
        if k:
            chosen.append(rng.choice(members, size=k, replace=False))
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _resolve_n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs == -1:
        return max(1, os.cpu_count() or 1)
    n_jobs = int(n_jobs)
    if n_jobs < 1:
        raise UserError(f"tsne_2d: n_jobs must be a positive integer or -1, got {n_jobs}")
    return n_jobs


def _tsne_opentsne(x: np.ndarray, perplexity: float, seed: int, n_jobs: int) -> np.ndarray:
    import openTSNE

    tsne = openTSNE.TSNE(
        n_components=2,
        perplexity=perplexity,
        learning_rate="auto",
        early_exaggeration=EARLY_EXAGGERATION,
        early_exaggeration_iter=EARLY_EXAGGERATION_ITER,
        n_iter=N_ITER_AFTER_EXAGGERATION,
        initialization="pca",
        metric="euclidean",
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    return np.asarray(tsne.fit(x), dtype=np.float64)


def _tsne_sklearn(x: np.ndarray, perplexity: float, seed: int, n_jobs: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        early_exaggeration=EARLY_EXAGGERATION,
        learning_rate="auto",
        max_iter=EARLY_EXAGGERATION_ITER + N_ITER_AFTER_EXAGGERATION,
        init="pca",
        metric="euclidean",
        method="barnes_hut",
        random_state=seed,
        n_jobs=n_jobs,
    )
    # scikit-learn's n_jobs only reaches the neighbour search; the Barnes-Hut gradient uses
    # every OpenMP thread unless capped here.
    with threadpool_limits(limits=n_jobs):
        return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def tsne_2d(
    features,
    *,
    seed: int,
    method: Literal["auto", "opentsne", "sklearn"] = "auto",
    n_jobs: int | None = None,
    perplexity: float = PERPLEXITY,
) -> np.ndarray:
    """2-D t-SNE embedding of `features` [n, D] (numpy or torch) -> float64 array [n, 2].

    Deterministic for a fixed `seed` and `method`. `method="auto"` uses `AUTO_METHOD`
    (the benchmark winner), falling back to scikit-learn if openTSNE is not installed.
    `n_jobs=None` or -1 uses every CPU; otherwise it caps the threads of either back end. The perplexity is lowered to (n - 1) / 3 for
    inputs too small for the requested one.
    """
    x = _as_numpy(features)
    if x.ndim != 2:
        raise UserError(f"tsne_2d: features must be 2-D [n, D], got shape {x.shape}")
    n = x.shape[0]
    if n < 4:
        raise UserError(f"tsne_2d: need at least 4 points, got {n}")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise UserError(f"tsne_2d: features must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32 if x.dtype == np.float32 else np.float64)
    if not np.all(np.isfinite(x)):
        raise UserError("tsne_2d: features contain NaN or inf")
    perplexity = float(perplexity)
    if perplexity <= 0:
        raise UserError(f"tsne_2d: perplexity must be positive, got {perplexity}")
    perplexity = min(perplexity, (n - 1) / 3.0)
    jobs = _resolve_n_jobs(n_jobs)

    if method == "auto":
        method = AUTO_METHOD
        if method == "opentsne":
            try:
                import openTSNE  # noqa: F401
            except ImportError:
                method = "sklearn"
    if method == "opentsne":
        try:
            import openTSNE  # noqa: F401
        except ImportError:
            raise UserError("tsne_2d: method='opentsne' needs openTSNE (pip install openTSNE)")
        y = _tsne_opentsne(x, perplexity, seed, jobs)
    elif method == "sklearn":
        y = _tsne_sklearn(x, perplexity, seed, jobs)
    else:
        raise UserError(f"tsne_2d: method must be 'auto', 'opentsne' or 'sklearn', got {method!r}")
    if not np.all(np.isfinite(y)):
        raise UserError(f"tsne_2d: {method} returned a non-finite embedding")
    return y
