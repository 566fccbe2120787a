"""How fast phase two reads checkpoints: the loader of `inspect rt`, measured on the CPU.

Writes N width-64 ResNet-18 checkpoints (44.7 MB each, as a thesis-scale run has) with a
manifest, then loads them three ways:

* reference: `path.read_bytes()`, hashlib, `safetensors.torch.load` and a max-|x|
  finiteness check per tensor (the loader before the reusable buffers);
* fresh: `load_weights` (every check; the file read into a new buffer, tensors viewing it);
* pooled: what `inspect rt`'s loader threads do: the file read into a reused buffer
  (`Buffers`), tensors viewing it, the buffer given back after use;

each with and without the sha256 check (`--no-verify`), with 1 and with 4 threads (the
loader's LOADER_THREADS on a small machine). Reported: checkpoints/s, ratios to the
reference, and the sha256 check's share.

    python benchmarks/checkpoint_load.py --n 24 --out benchmarks/results/checkpoint_load_cpu.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ssl_dynamics import artifacts as art
from ssl_dynamics.models import build_network


def write_checkpoints(folder: Path, n: int) -> list[Path]:
    seed_dir = folder / "seed-00"
    seed_dir.mkdir(parents=True)
    torch.manual_seed(0)
    net = build_network("resnet18_cifar", 10, 64)
    meta = {"backbone": "resnet18_cifar", "head_dim": 10, "width": 64}
    paths, shas = [], {}
    for e in range(n):
        p = seed_dir / f"epoch-{e:04d}.safetensors"
        shas[str(e)] = art.save_checkpoint(p, net, meta)
        paths.append(p)
    art.write_json_atomic(seed_dir / "manifest.json", {"checkpoints": shas})
    return paths


def reference_load(p: Path, verify: bool) -> dict:
    from safetensors.torch import load

    data = p.read_bytes()
    if verify and hashlib.sha256(data).hexdigest() != art.manifest_sha256(p):
        raise RuntimeError(p)
    state = load(data)
    peaks = torch._foreach_norm([t for t in state.values() if t.is_floating_point()], float("inf"))
    if not all(torch.isfinite(x) for x in peaks):
        raise RuntimeError(p)
    return state


def rate(paths: list[Path], way: str, verify: bool, threads: int) -> float:
    buffers = art.Buffers()

    def load(p: Path):
        if way == "reference":
            return reference_load(p, verify)
        if way == "fresh":
            return art.load_weights(p, verify=verify)[0]
        data = art.verified_bytes(p, verify, buffers)
        state = art.load_weights(p, data=data, views=True)[0]
        buffers.give(data)
        return state

    load(paths[0])  # warm: the page cache, the shapes cache
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(load, paths))
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="checkpoints (44.7 MB each)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch": torch.__version__}, "checkpoints": args.n, "ckpt_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_checkpoints(Path(tmp), args.n)
        for way in ("reference", "fresh", "pooled"):
            for verify in (True, False):
                for threads in (1, 4):
                    key = f"{way} verify={verify} threads={threads}"
                    result["ckpt_per_s"][key] = round(rate(paths, way, verify, threads), 2)
                    print(f"{key}: {result['ckpt_per_s'][key]} checkpoints/s", flush=True)
    r = result["ckpt_per_s"]
    result["pooled_over_reference"] = {
        key.replace("pooled ", ""): round(r[key] / r[key.replace("pooled", "reference")], 2)
        for key in r if key.startswith("pooled")}
    # the share of one thread's load time that the sha256 check takes
    result["verify_share_of_load_1_thread"] = round(
        1 - r["pooled verify=True threads=1"] / r["pooled verify=False threads=1"], 3)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
