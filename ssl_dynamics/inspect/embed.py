"""2-D t-SNE of representations (Fig. 5.1) and the class-stratified subset it is drawn on.

docs/science.md, "Representations": a 2-D t-SNE of the representation of a
class-stratified 25% of the training set (12,500 images for CIFAR-10), coloured by class.

Three settings (`method`):

* ``thesis`` (default for Fig. 5.1): what the thesis's notebook ran, scikit-learn's 2021
  defaults: Barnes-Hut, init="random", learning_rate=200, perplexity 30, early
  exaggeration 12 (250 iterations), 1,000 iterations in all, seeded. The figure's visual
  claims (how tight and separate the clusters look) depend on these settings.
* ``opentsne``: the faster option, FFT gradients and Annoy neighbours, PCA init,
  openTSNE's "auto" learning rate, same perplexity and exaggeration schedule.
* ``sklearn``: scikit-learn with the same modern settings as ``opentsne`` (PCA init,
  "auto" learning rate).

Measured (`benchmarks/bench_tsne.py`, `benchmarks/results/tsne_cpu.json`): 12,500 x 512
float32, 10 overlapping Gaussian clusters, 2-core AMD EPYC CPU, n_jobs=2: openTSNE 53.0 s
(trustworthiness 0.800) vs scikit-learn 102.6 s (0.813). `auto` picks openTSNE (or
scikit-learn when openTSNE is missing).
"""
from __future__ import annotations

import os
from typing import Literal

import numpy as np


__all__ = ["tsne_2d", "stratified_subset", "AUTO_METHOD", "METHODS"]

#: The back end that `method="auto"` selects (the benchmark winner, see module docstring).
AUTO_METHOD: Literal["opentsne", "sklearn"] = "opentsne"  # type: ignore[assignment]

METHODS = ("thesis", "auto", "opentsne", "sklearn")
PERPLEXITY = 30.0  # both libraries' default, and the thesis's
THESIS_LEARNING_RATE = 200.0  # scikit-learn's default learning rate in 2021 (before "auto")
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
        raise ValueError(f"stratified_subset: labels must be 1-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"stratified_subset: labels must be integers, got dtype {labels.dtype}")
    fraction = float(fraction)
    if not (0.0 < fraction <= 1.0) or not np.isfinite(fraction):
        raise ValueError(f"stratified_subset: fraction must be in (0, 1], got {fraction}")
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
        raise ValueError(f"tsne_2d: n_jobs must be a positive integer or -1, got {n_jobs}")
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


def _tsne_thesis(x: np.ndarray, perplexity: float, seed: int, n_jobs: int) -> np.ndarray:
    """scikit-learn with its 2021 defaults, as the thesis's notebook called TSNE()."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(n_components=2, perplexity=perplexity, early_exaggeration=EARLY_EXAGGERATION,
                learning_rate=THESIS_LEARNING_RATE,
                max_iter=EARLY_EXAGGERATION_ITER + N_ITER_AFTER_EXAGGERATION, init="random",
                metric="euclidean", method="barnes_hut", random_state=seed, n_jobs=n_jobs)
    with threadpool_limits(limits=n_jobs):
        return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def tsne_2d(
    features,
    *,
    seed: int,
    method: Literal["thesis", "auto", "opentsne", "sklearn"] = "thesis",
    n_jobs: int | None = None,
    perplexity: float = PERPLEXITY,
) -> np.ndarray:
    """2-D t-SNE embedding of `features` [n, D] (numpy or torch) -> float64 array [n, 2].

    Deterministic for a fixed `seed` and `method` ("thesis" by default, see the module
    docstring). `method="auto"` uses `AUTO_METHOD`
    (the benchmark winner), falling back to scikit-learn if openTSNE is not installed.
    `n_jobs=None` or -1 uses every CPU; otherwise it caps the threads of either back end. The perplexity is lowered to (n - 1) / 3 for
    inputs too small for the requested one.
    """
    x = _as_numpy(features)
    if x.ndim != 2:
        raise ValueError(f"tsne_2d: features must be 2-D [n, D], got shape {x.shape}")
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"tsne_2d: need at least 4 points, got {n}")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"tsne_2d: features must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32 if x.dtype == np.float32 else np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("tsne_2d: features contain NaN or inf")
    perplexity = float(perplexity)
    if perplexity <= 0:
        raise ValueError(f"tsne_2d: perplexity must be positive, got {perplexity}")
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
            raise ValueError("tsne_2d: method='opentsne' needs openTSNE (pip install openTSNE)")
        y = _tsne_opentsne(x, perplexity, seed, jobs)
    elif method == "sklearn":
        y = _tsne_sklearn(x, perplexity, seed, jobs)
    elif method == "thesis":
        y = _tsne_thesis(x, perplexity, seed, jobs)
    else:
        raise ValueError(f"tsne_2d: method must be one of {', '.join(METHODS)}, got {method!r}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"tsne_2d: {method} returned a non-finite embedding")
    return y
