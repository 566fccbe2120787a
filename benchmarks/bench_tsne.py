"""Time openTSNE against scikit-learn t-SNE on a synthetic Fig. 5.1-sized case.

Both back ends run through `ssl_dynamics.inspect.embed.tsne_2d` (same perplexity 30, PCA
init, early exaggeration 12 for 250 iterations + 750 iterations, seeded), on n x 512
float32 points from 10 overlapping Gaussian clusters (a 32-d latent mixture mapped
linearly into 512-d plus isotropic noise, like a learned representation). Quality is
sklearn.manifold.trustworthiness (n_neighbors=10) on a seeded subsample.

    OMP_NUM_THREADS=2 python benchmarks/bench_tsne.py            # full size, 12,500 points
    python benchmarks/bench_tsne.py --n 2000 --out /tmp/t.json    # quick run

Writes JSON (default benchmarks/results/tsne_cpu.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def make_data(n: int, dim: int = 512, n_clusters: int = 10, latent: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_clusters, size=n)
    centers = rng.normal(0.0, 0.5, size=(n_clusters, latent))  # 10-NN accuracy ~0.76
    z = centers[labels] + rng.normal(0.0, 1.0, size=(n, latent))
    w = rng.normal(0.0, 1.0 / np.sqrt(latent), size=(latent, dim))
    x = z @ w + rng.normal(0.0, 0.3, size=(n, dim))
    return x.astype(np.float32), labels


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=12_500, help="number of points (default 12500)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tw-subsample", type=int, default=2_000)
    p.add_argument("--methods", default="opentsne,sklearn")
    p.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "tsne_cpu.json")
    )
    args = p.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.n_jobs))
    import sklearn
    import torch
    from sklearn.manifold import trustworthiness

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ssl_dynamics.inspect.embed import tsne_2d

    try:
        import openTSNE

        opentsne_version = openTSNE.__version__
    except ImportError:
        opentsne_version = None

    x, labels = make_data(args.n, args.dim, seed=args.seed)
    sub = np.sort(np.random.default_rng(args.seed + 1).choice(
        args.n, size=min(args.tw_subsample, args.n), replace=False))

    results = {}
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        y = tsne_2d(x, seed=args.seed, method=method, n_jobs=args.n_jobs)
        seconds = time.perf_counter() - t0
        tw = float(trustworthiness(x[sub], y[sub], n_neighbors=10))
        results[method] = {"seconds": round(seconds, 2), "trustworthiness": round(tw, 4)}
        print(f"{method}: {seconds:.1f} s, trustworthiness {tw:.4f}", flush=True)

    out = {
        "case": {
            "n": args.n,
            "dim": args.dim,
            "dtype": "float32",
            "data": "10 Gaussian clusters (centre sd 0.5, unit spread) in a 32-d latent, random linear map to dim, + isotropic noise sd 0.3; 10-NN label accuracy ~0.76 (overlapping)",
            "perplexity": 30,
            "iterations": "250 early exaggeration (12) + 750",
            "init": "pca",
            "seed": args.seed,
            "n_jobs": args.n_jobs,
            "trustworthiness": f"n_neighbors=10 on a seeded {len(sub)}-point subsample",
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor(),
            "cpu_model": cpu_model(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "openTSNE": opentsne_version,
        },
        "results": results,
    }
    if "opentsne" in results and "sklearn" in results:
        ratio = results["sklearn"]["seconds"] / results["opentsne"]["seconds"]
        out["sklearn_over_opentsne_time_ratio"] = round(ratio, 2)
        out["faster"] = "opentsne" if ratio > 1 else "sklearn"
        print(f"sklearn / openTSNE time ratio: {ratio:.2f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
