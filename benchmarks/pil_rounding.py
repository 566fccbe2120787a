"""How far PIL's uint8 steps move the SimCLR views from our float pipeline.

The thesis's pipeline runs torchvision's transforms on PIL images, so every step ends in
a uint8 image: PIL's resampling (the crop) and its grayscale conversion round to the
nearest integer, but PIL's blends (brightness, contrast, saturation: `Image.blend` via
ImageEnhance) truncate, the contrast blends towards the grey mean rounded to an integer,
the hue goes through an 8-bit HSV image with the shift truncated to int(255 * hue), and
the thesis's own blur class (float convolution, then ToPILImage) truncates too. Ours
stays in float (docs/science.md); this script measures the difference, it does not change the
pipeline.

For N images and one set of sampled parameters it compares
(a) ours: `augment.apply_params("simclr", ...)`, and
(b) torchvision's functional ops on PIL images with the same parameters, called as
    RandomResizedCrop, RandomHorizontalFlip, ColorJitter (per-sample order) and
    RandomGrayscale call them, then the thesis's GaussianBlur class
    (`bench_train.ThesisGaussianBlur`),
and splits the difference by op: variant "op X" runs X the PIL way (on the float state
rounded to uint8, an unbiased step) and every other op on float tensors. Differences
are in [0, 1] units (1/255 = 0.0039), over every pixel and channel of every view.
As an independent check, the thesis's own transform (`bench_train.reference_transform`
with the thesis's blur, drawing its own parameters) is run on the same images: its mean pixel minus ours
should match the mean of (b) - (a) within its standard error.

    python benchmarks/pil_rounding.py --n 4000 --jpeg-dir /tmp/cifar10-jpeg

(--jpeg-dir: the CIFAR-10 JPEG folders, e.g. extracted from cifar10-jpeg.tar.gz; optional.)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from bench_train import ThesisGaussianBlur, reference_transform
from ssl_dynamics import augment as aug

SIZE = 32
OPS = ("crop", "brightness", "contrast", "saturation", "hue", "grayscale", "blur")
THESIS_BLUR = ThesisGaussianBlur(aug.BLUR_KERNEL)
JITTER = (("brightness", TF.adjust_brightness), ("contrast", TF.adjust_contrast),
          ("saturation", TF.adjust_saturation), ("hue", TF.adjust_hue))


def as_pil(s) -> Image.Image:
    """PIL image of a state: uint8 CHW tensor as it is, float CHW in [0, 1] rounded."""
    if isinstance(s, Image.Image):
        return s
    if s.is_floating_point():
        s = s.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return Image.fromarray(s.permute(1, 2, 0).numpy())


def as_float(s) -> torch.Tensor:
    if isinstance(s, Image.Image):
        return TF.to_tensor(s)
    return s if s.is_floating_point() else s.float().div_(255.0)


def one_view(img: torch.Tensor, p: aug.Params, i: int, pil_ops: frozenset) -> torch.Tensor:
    """View i of uint8 image img (CHW) with the parameters p[..][i]; the ops in pil_ops
    run on PIL images (torchvision's PIL code paths), the others on float tensors."""
    def run(op, fn, s, *args):
        return fn(as_pil(s) if op in pil_ops else as_float(s), *args)

    box = [int(p[k][i]) for k in ("top", "left", "h", "w")]
    s = img if "crop" in pil_ops else as_float(img)
    s = run("crop", TF.resized_crop, s, *box, [SIZE, SIZE], T.InterpolationMode.BILINEAR, True)
    if p["flip"][i]:
        s = TF.hflip(s)
    if p["jitter"][i]:
        for k in p["order"][i].tolist():  # ColorJitter.forward's loop
            name, fn = JITTER[k]
            s = run(name, fn, s, float(p[name][i]))
    if p["gray"][i]:
        s = run("grayscale", TF.rgb_to_grayscale, s, 3)
    sigma = float(p["sigma"][i])
    if "blur" in pil_ops:  # the thesis's class: float convolution, then truncation to uint8
        s = THESIS_BLUR(as_pil(s), sigma)
    else:
        s = TF.gaussian_blur(as_float(s), [aug.BLUR_KERNEL] * 2, [sigma, sigma])
    return as_float(s)


def views(x8: torch.Tensor, p: aug.Params, pil_ops) -> torch.Tensor:
    return torch.stack([one_view(x8[i], p, i, frozenset(pil_ops)) for i in range(len(x8))])


def reference_check(x8: torch.Tensor, repeats: int, seed: int) -> dict:
    """Mean pixel of the thesis's transform (its own random parameters) minus ours (ours
    drawn from our generator), `repeats` views of each image for both, with the standard
    error of the difference (the per-view means are the samples)."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # the thesis's blur draws sigma from numpy's global generator
    tf = reference_transform("simclr", thesis_blur=True)
    pils = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x8]
    ref = torch.stack([tf(im).mean() for _ in range(repeats) for im in pils]).double()
    xr = x8.repeat(repeats, 1, 1, 1)
    p = aug.sample_params("simclr", len(xr), aug.make_generator(seed, "pil-rounding-check"))
    ours = aug.apply_params("simclr", xr, p).mean(dim=(1, 2, 3)).double()
    se = (ours.var() / len(ours) + ref.var() / len(ref)).sqrt().item()
    return {"views": len(ref), "mean_minus_ours": round((ref.mean() - ours.mean()).item(), 6),
            "standard_error": round(se, 6)}


def stats(d: torch.Tensor) -> dict:
    return {"mean_signed": round(d.mean().item(), 6), "mean_abs": round(d.abs().mean().item(), 6),
            "max_abs": round(d.abs().max().item(), 6)}


def measure(x8: torch.Tensor, seed: int, check_repeats: int) -> dict:
    """(b) - (a) and the per-op split for uint8 images x8 [n, 3, 32, 32]."""
    p = aug.sample_params("simclr", len(x8), aug.make_generator(seed, "pil-rounding"))
    ours = aug.apply_params("simclr", x8, p)
    float_ref = views(x8, p, ())  # torchvision's float ops: ours up to float rounding
    pil = views(x8, p, OPS)  # (b): every op on PIL images
    out = {"images": len(x8), "pil_minus_ours": stats(pil - ours),
           "float_torchvision_minus_ours": stats(float_ref - ours),
           "mean_pixel": {"ours": round(ours.mean().item(), 6), "pil": round(pil.mean().item(), 6)},
           "per_op": {}}
    applied = {"crop": 1.0, "blur": 1.0, "grayscale": p["gray"].double().mean().item()}
    for name, _ in JITTER:
        applied[name] = p["jitter"].double().mean().item()
    for op in OPS:
        d = views(x8, p, (op,)) - float_ref
        out["per_op"][op] = dict(stats(d), applied_fraction=round(applied[op], 4))
    total = sum(v["mean_signed"] for v in out["per_op"].values())
    out["sum_of_per_op_mean_signed"] = round(total, 6)
    out["thesis_transform_check"] = reference_check(x8, check_repeats, seed)
    return out


def synthetic_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)


def jpeg_images(root: Path, n: int, seed: int = 0) -> torch.Tensor:
    """n images drawn without replacement from root/train/<class>/*.jpg."""
    files = sorted(root.glob("train/*/*.jpg"))
    if not files:
        raise SystemExit(f"no JPEGs under {root}/train/*/")
    pick = np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False)
    arrays = [np.asarray(Image.open(files[k]).convert("RGB"), dtype=np.uint8) for k in sorted(pick)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def print_table(name: str, r: dict) -> None:
    t = r["pil_minus_ours"]
    print(f"\n{name}: {r['images']} images, PIL (b) - ours (a): mean {t['mean_signed']:+.5f}, "
          f"mean |.| {t['mean_abs']:.5f}, max |.| {t['max_abs']:.4f} "
          f"(torchvision float - ours: max |.| {r['float_torchvision_minus_ours']['max_abs']:.1e})")
    print(f"{'op the PIL way':<16}{'applied':>9}{'mean':>11}{'mean |.|':>11}")
    for op, s in r["per_op"].items():
        print(f"{op:<16}{s['applied_fraction']:>9.2f}{s['mean_signed']:>+11.5f}{s['mean_abs']:>11.5f}")
    print(f"{'sum of ops':<16}{'':>9}{r['sum_of_per_op_mean_signed']:>+11.5f}")
    c = r["thesis_transform_check"]
    print(f"check: the thesis's transform (own parameters), mean pixel - ours: "
          f"{c['mean_minus_ours']:+.5f} +- {c['standard_error']:.5f} ({c['views']} views each)")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000, help="images per data set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jpeg-dir", default=None, help="CIFAR-10 JPEG folders (train/<class>/*.jpg)")
    ap.add_argument("--check-repeats", type=int, default=8,
                    help="views per image for the check against the thesis's transform")
    ap.add_argument("--out", default="benchmarks/results/pil_rounding.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one small image at a time
    t0 = time.perf_counter()
    result = {"benchmark": "pil_rounding", "args": vars(args), "units": "[0, 1] (1/255 = 0.00392)",
              "data": {}}
    sets = {"synthetic_uniform": synthetic_images(args.n, args.seed)}
    if args.jpeg_dir:
        sets["cifar10_jpeg"] = jpeg_images(Path(args.jpeg_dir), args.n, args.seed)
    for name, x8 in sets.items():
        result["data"][name] = measure(x8, args.seed, args.check_repeats)
        print_table(name, result["data"][name])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{args.out}.tmp{os.getpid()}"
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.out)
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
