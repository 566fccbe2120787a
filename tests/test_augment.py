"""The batched augmentation pipelines (augment.py) against torchvision's own transforms.

docs/science.md ("Phase one"): the SimCLR and supervised pipelines are torchvision's
RandomResizedCrop / RandomHorizontalFlip / RandomApply(ColorJitter) / RandomGrayscale /
GaussianBlur and RandomCrop(padding=4) / flip / Normalize, re-implemented on whole
batches with parameters drawn from an explicit generator. Three kinds of evidence:

* marginals: our samplers draw the same distributions as torchvision's `get_params`
  (two-sample KS tests, exact ranges, binomial rates, chi-square on the jitter order);
* pixels: given the same parameters, our ops equal torchvision.transforms.functional's
  on float tensors (and, for the supervised pipeline, on PIL images too);
* determinism: a generator key fixes every parameter and view.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from PIL import Image
from scipy import stats as sps

from ssl_dynamics import augment as A
from ssl_dynamics.errors import UserError

N_OURS = 20_000  # parameter draws from our samplers
N_TV = 5_000  # parameter draws from torchvision's get_params (one Python call each)
P_MIN = 1e-3  # KS / chi-square tests fail below this p-value
ATOL = 1e-5  # pixel tolerance (float32 rounding of a different evaluation order)
SIZE = 32


def _rate_ok(flags: torch.Tensor, p: float, z: float = 5.0) -> bool:
    """Observed rate within z binomial standard errors of p."""
    n = flags.numel()
    return abs(flags.double().mean().item() - p) <= z * math.sqrt(p * (1 - p) / n)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n, 3, 32, 32]: random pixels plus hard cases (grey, black, white, few levels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    x[0] = x[0, :1]  # grey image (hue undefined, saturation 0)
    x[1] = 255
    x[2] = 0
    x[3] = torch.randint(0, 4, (3, SIZE, SIZE), generator=g, dtype=torch.uint8) * 85  # ties
    return x


@pytest.fixture(scope="module")
def simclr_params():
    return A.sample_params("simclr", N_OURS, A.make_generator(0, "marginals"))


@pytest.fixture(scope="module")
def tv_crops():
    torch.manual_seed(0)
    img = torch.zeros(3, SIZE, SIZE)
    boxes = [T.RandomResizedCrop.get_params(img, scale=list(A.CROP_SCALE), ratio=list(A.CROP_RATIO))
             for _ in range(N_TV)]
    return torch.tensor(boxes, dtype=torch.float64)  # (top, left, h, w)


# ------------------------------------------------------------------------------ marginals


def test_pipeline_constants_match_spec():
    assert A.CROP_SCALE == (0.08, 1.0) and A.CROP_RATIO == (3 / 4, 4 / 3)
    assert (A.FLIP_P, A.JITTER_P, A.GRAY_P) == (0.5, 0.8, 0.2)
    assert (A.JITTER_STRENGTH, A.HUE_STRENGTH) == (0.8, 0.2)
    assert A.BLUR_SIGMA == (0.1, 2.0) and A.BLUR_KERNEL == int(0.1 * SIZE) == 3
    assert A.PAD == 4
    assert A.CIFAR_MEAN == (0.4914, 0.4822, 0.4465) and A.CIFAR_STD == (0.2023, 0.1994, 0.2010)


def test_crop_box_marginals_match_torchvision(simclr_params, tv_crops):
    p = {k: simclr_params[k].double() for k in ("top", "left", "h", "w")}
    tv = dict(zip(("top", "left", "h", "w"), tv_crops.unbind(1)))
    assert ((p["h"] >= 1) & (p["h"] <= SIZE) & (p["w"] >= 1) & (p["w"] <= SIZE)).all()
    assert ((p["top"] >= 0) & (p["top"] + p["h"] <= SIZE)).all()
    assert ((p["left"] >= 0) & (p["left"] + p["w"] <= SIZE)).all()
    for name, f in {"area": lambda d: d["h"] * d["w"] / SIZE**2, "aspect": lambda d: d["w"] / d["h"],
                    "top": lambda d: d["top"], "left": lambda d: d["left"],
                    "h": lambda d: d["h"], "w": lambda d: d["w"]}.items():
        res = sps.ks_2samp(f(p).numpy(), f(tv).numpy())
        assert res.pvalue > P_MIN, f"{name}: KS p = {res.pvalue:.2g}"
    # the area fraction can only be ~[0.08, 1] up to rounding of h and w
    area = p["h"] * p["w"] / SIZE**2
    assert area.min() > 0.06 and area.max() <= 1.0


def test_crop_fallback_is_torchvision_central_crop():
    """When no attempt fits (area > image), torchvision falls back to a central crop at the
    clamped aspect ratio; both draw no other randomness."""
    for height, width in ((32, 32), (20, 40), (40, 20)):
        ours = A.sample_resized_crop(50, A.make_generator(1), height, width, scale=(1.5, 2.0))
        tv = T.RandomResizedCrop.get_params(torch.zeros(3, height, width), scale=[1.5, 2.0],
                                            ratio=list(A.CROP_RATIO))
        for k, v in zip(("top", "left", "h", "w"), tv):
            assert (ours[k] == v).all(), (height, width, k)


def test_jitter_blur_marginals_match_torchvision(simclr_params):
    torch.manual_seed(1)
    cj = T.ColorJitter(0.8, 0.8, 0.8, 0.2)
    tv = [cj.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue) for _ in range(N_TV)]
    tv_factors = torch.tensor([list(t[1:]) for t in tv], dtype=torch.float64)
    tv_sigma = torch.tensor([T.GaussianBlur.get_params(*A.BLUR_SIGMA) for _ in range(N_TV)])
    for rng in (cj.brightness, cj.contrast, cj.saturation):
        assert rng == pytest.approx([0.2, 1.8])
    assert cj.hue == pytest.approx([-0.2, 0.2])
    for i, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        ours = simclr_params[name]
        lo, hi = (-0.2, 0.2) if name == "hue" else (0.2, 1.8)
        assert ours.min() >= lo and ours.max() <= hi, name
        assert ours.min() < lo + 0.01 and ours.max() > hi - 0.01, name  # the whole range is used
        res = sps.ks_2samp(ours.numpy(), tv_factors[:, i].numpy())
        assert res.pvalue > P_MIN, f"{name}: KS p = {res.pvalue:.2g}"
    sigma = simclr_params["sigma"]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert sps.ks_2samp(sigma.numpy(), tv_sigma.numpy()).pvalue > P_MIN


def test_jitter_order_uniform_over_permutations(simclr_params):
    order = simclr_params["order"]
    assert (order.sort(dim=1).values == torch.arange(4)).all()  # each row is a permutation
    perms = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    codes = torch.tensor([perms[tuple(r)] for r in order.tolist()])
    counts = torch.bincount(codes, minlength=24).numpy()
    assert sps.chisquare(counts).pvalue > P_MIN
    # torchvision draws the order with randperm(4): the same uniform distribution
    torch.manual_seed(2)
    tv = [perms[tuple(T.ColorJitter.get_params(None, None, None, None)[0].tolist())] for _ in range(2400)]
    assert sps.chisquare(np.bincount(tv, minlength=24)).pvalue > P_MIN


def test_bernoulli_rates(simclr_params):
    assert _rate_ok(simclr_params["flip"], A.FLIP_P)
    assert _rate_ok(simclr_params["jitter"], A.JITTER_P)
    assert _rate_ok(simclr_params["gray"], A.GRAY_P)
    sup = A.sample_params("supervised", N_OURS, A.make_generator(0, "sup"))
    assert _rate_ok(sup["flip"], A.FLIP_P)
    # the three draws are independent (no shared uniform): P(flip & gray) = 0.5 * 0.2
    assert _rate_ok(simclr_params["flip"] & simclr_params["gray"], A.FLIP_P * A.GRAY_P)


def test_supervised_offsets_match_torchvision_random_crop():
    sup = A.sample_params("supervised", N_OURS, A.make_generator(0, "sup"))
    for k in ("dy", "dx"):
        assert sup[k].min() == 0 and sup[k].max() == 2 * A.PAD
        assert sps.chisquare(torch.bincount(sup[k], minlength=9).numpy()).pvalue > P_MIN
    # torchvision: RandomCrop(32, padding=4) pads to 40x40, then get_params
    torch.manual_seed(3)
    padded = torch.zeros(3, SIZE + 2 * A.PAD, SIZE + 2 * A.PAD)
    tv = torch.tensor([T.RandomCrop.get_params(padded, (SIZE, SIZE))[:2] for _ in range(N_TV)])
    assert tv.min() == 0 and tv.max() == 2 * A.PAD
    for col, k in enumerate(("dy", "dx")):
        table = np.stack([np.bincount(tv[:, col].numpy(), minlength=9),
                          np.bincount(sup[k].numpy(), minlength=9)])
        assert sps.chi2_contingency(table).pvalue > P_MIN
    # dy and dx independent
    joint = torch.bincount(sup["dy"] * 9 + sup["dx"], minlength=81).view(9, 9).numpy()
    assert sps.chi2_contingency(joint).pvalue > P_MIN


# ----------------------------------------------------------------- pixels, op by op


@pytest.fixture(scope="module")
def batch():
    x = _images(48, seed=5)
    p = A.sample_params("simclr", len(x), A.make_generator(5))
    return x, A.to_float(x), p


@pytest.mark.parametrize("size", [32, 24, 40])
def test_resized_crop_matches_torchvision(batch, size):
    x8, x, p = batch
    ours = A.resized_crop(x, p, size)
    assert ours.shape == (len(x), 3, size, size) and ours.dtype == torch.float32
    for i in range(len(x)):
        box = [int(p[k][i]) for k in ("top", "left", "h", "w")]
        ref = TF.resized_crop(x[i], *box, [size, size], T.InterpolationMode.BILINEAR, antialias=False)
        ref2 = TF2.resized_crop(x[i], *box, [size, size], T.InterpolationMode.BILINEAR, antialias=False)
        if p["flip"][i]:
            ref, ref2 = TF.hflip(ref), TF2.horizontal_flip(ref2)
        torch.testing.assert_close(ours[i], ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours[i], ref2, atol=ATOL, rtol=0)
        if size == SIZE:  # boxes are never larger than the output: antialiasing is a no-op
            aa = TF.resized_crop(x[i], *box, [size, size], T.InterpolationMode.BILINEAR, antialias=True)
            torch.testing.assert_close(ours[i], TF.hflip(aa) if p["flip"][i] else aa, atol=ATOL, rtol=0)


def test_resized_crop_reads_only_inside_the_box():
    """Pixels outside the box never leak into the view (torch clamps at the box edges)."""
    x = torch.zeros(4, 3, SIZE, SIZE)
    x[:, :, 10:20, 5:17] = 1.0
    p = {"top": torch.tensor([10] * 4), "left": torch.tensor([5] * 4), "h": torch.tensor([10] * 4),
         "w": torch.tensor([12] * 4), "flip": torch.tensor([False, True, False, True])}
    assert (A.resized_crop(x, p, SIZE) == 1.0).all()
    assert (A.resized_crop(1 - x, p, SIZE) == 0.0).all()


def test_color_ops_match_torchvision(batch):
    _, x, p = batch
    x = A.resized_crop(x, p, SIZE)  # realistic inputs: interpolated, not only k/255
    ops = {"brightness": (A.adjust_brightness, TF.adjust_brightness),
           "contrast": (A.adjust_contrast, TF.adjust_contrast),
           "saturation": (A.adjust_saturation, TF.adjust_saturation),
           "hue": (A.adjust_hue, TF.adjust_hue)}
    for name, (ours_fn, tv_fn) in ops.items():
        ours = ours_fn(x, p[name])
        for i in range(len(x)):
            ref = tv_fn(x[i], float(p[name][i]))
            torch.testing.assert_close(ours[i], ref, atol=ATOL, rtol=0, msg=f"{name} sample {i}")
    gray = A.rgb_to_gray(x).expand_as(x)
    for i in range(len(x)):
        torch.testing.assert_close(gray[i], TF.rgb_to_grayscale(x[i], 3), atol=ATOL, rtol=0)


def test_hue_extreme_shifts_and_edge_colours():
    """Hue on the six sector boundaries, greys, black/white and +-0.5 shifts."""
    levels = torch.tensor([0.0, 0.25, 0.5, 1.0])
    grid = torch.cartesian_prod(levels, levels, levels)  # 64 colours incl. all greys
    x = grid.T.reshape(1, 3, 8, 8).repeat(7, 1, 1, 1)
    shifts = torch.tensor([-0.5, -0.2, -1e-4, 0.0, 1 / 6, 0.2, 0.5])
    ours = A.adjust_hue(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        torch.testing.assert_close(ours[i], TF.adjust_hue(x[i], s), atol=ATOL, rtol=0)


def test_gaussian_blur_matches_torchvision(batch):
    _, x, p = batch
    ours = A.gaussian_blur(x, p["sigma"])
    for i in range(len(x)):
        ref = TF.gaussian_blur(x[i], [3, 3], [float(p["sigma"][i])] * 2)
        torch.testing.assert_close(ours[i], ref, atol=ATOL, rtol=0)


def _torchvision_simclr(x: torch.Tensor, p: A.Params, i: int) -> torch.Tensor:
    """One view with torchvision's functional ops, in the pipeline's order and p's values."""
    box = [int(p[k][i]) for k in ("top", "left", "h", "w")]
    v = TF.resized_crop(x, *box, [SIZE, SIZE], T.InterpolationMode.BILINEAR, antialias=True)
    if p["flip"][i]:
        v = TF.hflip(v)
    if p["jitter"][i]:
        fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        names = ["brightness", "contrast", "saturation", "hue"]
        for op in p["order"][i].tolist():  # torchvision's ColorJitter.forward loop
            v = fns[op](v, float(p[names[op]][i]))
    if p["gray"][i]:
        v = TF.rgb_to_grayscale(v, num_output_channels=3)
    return TF.gaussian_blur(v, [3, 3], [float(p["sigma"][i])] * 2)


def test_whole_simclr_view_matches_torchvision_composition():
    x8 = _images(64, seed=7)
    p = A.sample_params("simclr", len(x8), A.make_generator(7))
    # make sure every branch is exercised in this small sample
    p["jitter"][:4] = torch.tensor([False, True, True, True])
    p["gray"][:4] = torch.tensor([True, False, True, False])
    ours = A.apply_params("simclr", x8, p)
    x = x8.float() / 255
    for i in range(len(x8)):
        torch.testing.assert_close(ours[i], _torchvision_simclr(x[i], p, i), atol=ATOL, rtol=0,
                                   msg=f"view {i}")


def test_color_jitter_leaves_other_samples_and_input_alone(batch):
    _, x, p = batch
    before = x.clone()
    q = dict(p, jitter=torch.zeros_like(p["jitter"]))
    assert torch.equal(A.color_jitter(x, q), x)  # jitter off everywhere: identity
    A.apply_params("simclr", batch[0], p)
    assert torch.equal(x, before)  # no op writes into its input


def test_supervised_pipeline_matches_torchvision_tensor_and_pil():
    x8 = _images(40, seed=9)
    p = A.sample_params("supervised", len(x8), A.make_generator(9))
    p["dy"][:4], p["dx"][:4] = torch.tensor([0, 8, 0, 8]), torch.tensor([0, 8, 8, 0])  # corners
    ours = A.apply_params("supervised", x8, p)
    assert ours.shape == x8.shape and ours.dtype == torch.float32
    for i in range(len(x8)):
        dy, dx = int(p["dy"][i]), int(p["dx"][i])
        v = TF.crop(TF.pad(x8[i], [A.PAD] * 4), dy, dx, SIZE, SIZE)
        if p["flip"][i]:
            v = TF.hflip(v)
        ref = TF.normalize(TF.convert_image_dtype(v, torch.float32), A.CIFAR_MEAN, A.CIFAR_STD)
        torch.testing.assert_close(ours[i], ref, atol=1e-6, rtol=0)
        # the thesis's way: PIL image, RandomCrop(padding=4) + flip + ToTensor + Normalize
        im = TF.crop(TF.pad(Image.fromarray(x8[i].permute(1, 2, 0).numpy()), A.PAD), dy, dx, SIZE, SIZE)
        if p["flip"][i]:
            im = TF.hflip(im)
        ref_pil = TF.normalize(TF.to_tensor(im), A.CIFAR_MEAN, A.CIFAR_STD)
        torch.testing.assert_close(ours[i], ref_pil, atol=1e-6, rtol=0)


def test_none_pipeline_is_totensor_only():
    x8 = _images(8)
    out = A.apply_params("none", x8, A.sample_params("none", 8, A.make_generator(0)))
    ref = torch.stack([TF.to_tensor(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in x8])  # ToTensor
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_normalize_pipeline_is_totensor_and_normalize():
    x8 = _images(8)
    out = A.apply_params("normalize", x8, A.sample_params("normalize", 8, A.make_generator(0)))
    ref = TF.normalize(x8.float() / 255, A.CIFAR_MEAN, A.CIFAR_STD)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ determinism, shapes


@pytest.mark.parametrize("kind", ["simclr", "supervised", "none", "normalize"])
def test_same_key_same_params_and_views(kind):
    x8 = _images(32)
    v1, p1 = A.augment(kind, x8, A.make_generator(3, 7, 11, "views"))
    torch.manual_seed(123)  # the global RNG plays no part
    v2, p2 = A.augment(kind, x8, A.make_generator(3, 7, 11, "views"))
    assert p1.keys() == p2.keys()
    for k in p1:
        assert torch.equal(p1[k], p2[k]), k
        assert p1[k].device.type == "cpu", k  # drawn on the CPU whatever the images' device
    assert torch.equal(v1, v2)
    assert torch.equal(A.apply_params(kind, x8, p1), v1)  # re-applying stored params


@pytest.mark.parametrize("kind", ["simclr", "supervised"])
def test_different_keys_give_different_params(kind):
    keys = [(0, 1, 2, "views"), (1, 1, 2, "views"), (0, 2, 2, "views"), (0, 1, 3, "views"),
            (0, 1, 2, "bank")]
    draws = [A.sample_params(kind, 64, A.make_generator(*k)) for k in keys]
    field = "left" if kind == "simclr" else "dx"
    for a, b in itertools.combinations(draws, 2):
        assert not torch.equal(a[field], b[field])
        assert not torch.equal(a["flip"], b["flip"])


def test_make_generator_keys():
    a = torch.rand(4, generator=A.make_generator(0, "views"))
    assert torch.equal(a, torch.rand(4, generator=A.make_generator(0, "views")))
    assert not torch.equal(a, torch.rand(4, generator=A.make_generator(0, "bank")))
    with pytest.raises(ValueError):
        A.make_generator(-1)


def test_params_independent_of_batch_device_and_chunking():
    """Views of a subset = subset of the views (phase two re-applies stored parameters);
    on a GPU the views equal the CPU views."""
    x8 = _images(40, seed=11)
    for kind in ("simclr", "supervised"):
        views, p = A.augment(kind, x8, A.make_generator(11, kind))
        idx = torch.tensor([3, 0, 17, 39, 8])
        sub = A.apply_params(kind, x8[idx], A.index_params(p, idx))
        torch.testing.assert_close(sub, views[idx], atol=1e-6, rtol=0)
        both = A.concat_params([A.index_params(p, slice(0, 20)), A.index_params(p, slice(20, 40))])
        assert all(torch.equal(both[k], p[k]) for k in p)
        if torch.cuda.is_available():
            on_gpu = A.apply_params(kind, x8.cuda(), p)
            torch.testing.assert_close(on_gpu.cpu(), views, atol=ATOL, rtol=0)


def test_output_shapes_ranges_dtypes():
    x8 = _images(64, seed=13)
    views, p = A.augment("simclr", x8, A.make_generator(13))
    assert views.shape == (64, 3, SIZE, SIZE) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1
    assert len(p["top"]) == 64 and all(v.shape[0] == 64 for v in p.values())
    gray = p["gray"].nonzero().flatten()
    assert len(gray) and torch.allclose(views[gray, 0], views[gray, 1]) and torch.allclose(views[gray, 1], views[gray, 2])
    sup, _ = A.augment("supervised", x8, A.make_generator(13))
    lo = (0 - torch.tensor(A.CIFAR_MEAN)) / torch.tensor(A.CIFAR_STD)
    hi = (1 - torch.tensor(A.CIFAR_MEAN)) / torch.tensor(A.CIFAR_STD)
    assert sup.dtype == torch.float32 and sup.shape == x8.shape
    assert (sup.amin(dim=(0, 2, 3)) >= lo - 1e-6).all() and (sup.amax(dim=(0, 2, 3)) <= hi + 1e-6).all()
    # the zero padding shows where the crop leaves the image: rows above a dy < 4 crop
    sup_p = A.sample_params("supervised", 8, A.make_generator(13))
    sup_p["dy"][:], sup_p["dx"][:] = 1, A.PAD  # 3 rows of padding on top, none at the sides
    white = A.apply_params("supervised", torch.full((8, 3, SIZE, SIZE), 255, dtype=torch.uint8), sup_p)
    assert torch.equal(white[:, :, :3], lo.view(1, 3, 1, 1).expand(8, 3, 3, SIZE))
    assert torch.equal(white[:, :, 3:], hi.view(1, 3, 1, 1).expand(8, 3, SIZE - 3, SIZE))


def test_unknown_kind():
    with pytest.raises(UserError):
        A.sample_params("mixup", 4, A.make_generator(0))
    with pytest.raises(UserError):
        A.apply_params("mixup", torch.zeros(1, 3, 4, 4, dtype=torch.uint8), {})


def test_the_drawn_parameters_are_pinned():
    """Stored runs and banks depend on the exact draws (the order of draws fixes them): a
    change of the sampling code that keeps every distribution would still change every view.
    These values were drawn by this revision; a deliberate change must update them."""
    from ssl_dynamics.augment.params import make_generator, sample_simclr, sample_supervised
    from ssl_dynamics.inspect.bank import choose_probes

    assert make_generator(0, 0, 0, "views").initial_seed() == 6190563860301242314
    p = sample_simclr(3, make_generator(0, 0, 0, "views"), 32)
    p = p if isinstance(p, dict) else vars(p)
    want = {"top": [5, 7, 0], "left": [6, 2, 5], "h": [27, 25, 32], "w": [23, 27, 25],
            "flip": [True, True, False], "jitter": [True, True, True], "gray": [False, False, False],
            "order": [[2, 1, 3, 0], [1, 3, 0, 2], [0, 1, 2, 3]]}
    assert {k: p[k].tolist() for k in want} == want
    floats = {"brightness": [1.5062299, 1.5763678, 1.0646349], "contrast": [0.3767554, 0.7143158, 0.8832958],
              "saturation": [0.8121940, 0.5176507, 1.1310399], "hue": [0.0932591, 0.0554905, 0.0398431],
              "sigma": [1.0451508, 1.4694657, 1.2901437]}
    for k, v in floats.items():
        assert p[k].tolist() == pytest.approx(v, abs=1e-6), k
    q = sample_supervised(3, make_generator(1, 2, "views"), 32)
    q = q if isinstance(q, dict) else vars(q)
    assert {k: q[k].tolist() for k in ("dy", "dx", "flip")} == {"dy": [5, 4, 7], "dx": [8, 0, 6],
                                                                "flip": [False, True, True]}
    assert choose_probes(50000, 1024, 0)[:8].tolist() == [36044, 49165, 37807, 11341, 6091, 16904, 36293, 28026]
