"""Tests for ssl_dynamics.inspect.example_measures: slow loop references plus hand-built cases."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from ssl_dynamics.inspect import example_measures as em

SEEDS = [0, 1, 2, 3]  # a few random small problems per property test
START_EPOCHS = [0, 1, 3]  # default, initialisation included, a later window start
FLOAT_TOL = 1e-12


# ---------------------------------------------------------------------------- problems


def random_problem(seed, s=4, e=7, m=3, k=5):
    """Random uint8 correct, float32 p_true (NaN where invalid), valid, non-contiguous epochs."""
    rng = np.random.default_rng(seed)
    epochs = np.sort(rng.choice(np.arange(1, 3 * e), size=e - 1, replace=False))
    epochs = np.concatenate([[0], epochs]).astype(np.int64)
    correct = (rng.random((s, e, m, k)) < rng.random((1, 1, 1, k))).astype(np.uint8)
    p_true = rng.random((s, e, m, k)).astype(np.float32)
    valid = rng.random((s, e)) < 0.7
    valid[-1] = False  # one seed that only has the initialisation (excluded if start >= 1)
    valid[-1, 0] = True
    p_true[~valid] = np.nan
    return correct, p_true, valid, epochs


def one_sequence(seq, epochs=None):
    """Arrays for a single (seed, replay, image) with correctness ``seq`` over epochs 0..n-1."""
    n = len(seq)
    correct = np.asarray(seq, dtype=np.uint8).reshape(1, n, 1, 1)
    p_true = np.where(correct == 1, 0.9, 0.1).astype(np.float32)
    epochs = np.arange(n) if epochs is None else np.asarray(epochs)
    return correct, p_true, np.ones((1, n), dtype=bool), epochs


# ---------------------------------------------------------------------------- slow references


def slow_pairs(correct, p_true, valid, epochs, start_epoch):
    """Per-(seed, replay, image) measures by plain loops; None for excluded seeds."""
    s_n, e_n, m, k = correct.shape
    t_censored = int(max(epochs)) + 1
    out = {}
    for s in range(s_n):
        ev = [e for e in range(e_n) if valid[s, e] and epochs[e] >= start_epoch]
        for j in range(m):
            for img in range(k):
                if not ev:
                    out[s, j, img] = None
                    continue
                c = [int(correct[s, e, j, img]) for e in ev]
                p = [float(p_true[s, e, j, img]) for e in ev]
                first = t_censored
                for i in range(len(ev)):
                    if all(c[i:]):
                        first = int(epochs[ev[i]])
                        break
                forget = sum(1 for i in range(len(c) - 1) if c[i] == 1 and c[i + 1] == 0)
                mean = sum(p) / len(p)
                std = math.sqrt(sum((x - mean) ** 2 for x in p) / len(p))
                out[s, j, img] = dict(first=first, forget=forget, conf=mean, var=std,
                                      corr=sum(c) / len(c), ever=any(c))
    return out


def as_array(pairs, shape, name):
    """[S, M, K] float array of one slow measure (NaN for excluded seeds)."""
    a = np.full(shape, np.nan)
    for key, val in pairs.items():
        if val is not None:
            a[key] = val[name]
    return a


def sample_std(xs):
    """Sample standard deviation (ddof 1) or NaN for fewer than two values."""
    if len(xs) < 2:
        return math.nan
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def slow_summary(correct, p_true, valid, epochs, start_epoch):
    """Per-image columns of example_summary by plain loops."""
    s_n, e_n, m, k = correct.shape
    pairs = slow_pairs(correct, p_true, valid, epochs, start_epoch)
    used = [s for s in range(s_n) if pairs[s, 0, 0] is not None]
    t_max = int(max(epochs))
    cols = {name: [] for name in ("first_learned_median", "never_learned_share",
                                  "forgetting_mean", "forgetting_seed_std",
                                  "unforgettable_share", "never_correct_share", "confidence",
                                  "confidence_seed_std", "variability", "correctness")}
    for img in range(k):
        ps = [pairs[s, j, img] for s in used for j in range(m)]
        n = len(ps)
        cols["first_learned_median"].append(statistics.median(p["first"] for p in ps))
        cols["never_learned_share"].append(sum(p["first"] > t_max for p in ps) / n)
        cols["forgetting_mean"].append(sum(p["forget"] for p in ps) / n)
        cols["unforgettable_share"].append(
            sum(p["ever"] and p["forget"] == 0 for p in ps) / n)
        cols["never_correct_share"].append(sum(not p["ever"] for p in ps) / n)
        for col, key in (("confidence", "conf"), ("variability", "var"), ("correctness", "corr")):
            cols[col].append(sum(p[key] for p in ps) / n)
        for col, key in (("forgetting_seed_std", "forget"), ("confidence_seed_std", "conf")):
            per_seed = [sum(pairs[s, j, img][key] for j in range(m)) / m for s in used]
            cols[col].append(sample_std(per_seed))
    n_missing = sum(1 for s in range(s_n) for e in range(e_n)
                    if epochs[e] >= start_epoch and not valid[s, e])
    cols["n_seeds"] = [len(used)] * k
    cols["n_missing_checkpoints"] = [n_missing] * k
    return cols


def slow_rt(correct, valid, e):
    """r_t at epoch index e by plain loops."""
    s_n, _, m, k = correct.shape
    seeds = [s for s in range(s_n) if valid[s, e]]
    if not seeds:
        return [math.nan] * k
    return [sum(int(correct[s, e, j, img]) for s in seeds for j in range(m)) / (len(seeds) * m)
            for img in range(k)]


# ---------------------------------------------------------------------------- against loops


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("start_epoch", START_EPOCHS)
def test_per_pair_measures_match_loops(seed, start_epoch):
    correct, p_true, valid, epochs = random_problem(seed)
    pairs = slow_pairs(correct, p_true, valid, epochs, start_epoch)
    shape = (correct.shape[0], correct.shape[2], correct.shape[3])
    fl = em.first_learned(correct, valid, epochs, start_epoch)
    fg = em.forgetting_events(correct, valid, epochs, start_epoch)
    conf, var, corr = em.cartography(correct, p_true, valid, epochs, start_epoch)
    np.testing.assert_array_equal(fl, as_array(pairs, shape, "first"))
    np.testing.assert_array_equal(fg, as_array(pairs, shape, "forget"))
    np.testing.assert_array_equal(corr, as_array(pairs, shape, "corr"))
    for got, name in ((conf, "conf"), (var, "var")):
        np.testing.assert_allclose(got, as_array(pairs, shape, name), rtol=0, atol=FLOAT_TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("start_epoch", START_EPOCHS)
def test_example_summary_matches_loops(seed, start_epoch):
    correct, p_true, valid, epochs = random_problem(seed)
    got = em.example_summary(correct, p_true, valid, epochs, start_epoch,
                             rt_epoch_indices=[0, 3, len(epochs) - 1])
    want = slow_summary(correct, p_true, valid, epochs, start_epoch)
    for e in (0, 3, len(epochs) - 1):
        want[f"rt_{epochs[e]}"] = slow_rt(correct, valid, e)
    assert set(got) == set(want)
    for name, col in got.items():
        assert col.shape == (correct.shape[3],), name
        np.testing.assert_allclose(col, want[name], rtol=0, atol=FLOAT_TOL, err_msg=name)


@pytest.mark.parametrize("seed", SEEDS)
def test_rt_at_matches_loop_and_nan_without_seed(seed):
    correct, _, valid, _ = random_problem(seed)
    valid[:, 2] = False
    got = em.rt_at(correct, valid, [2, 0, 5])
    for row, e in enumerate((2, 0, 5)):
        np.testing.assert_array_equal(got[row], slow_rt(correct, valid, e))
    assert np.all(np.isnan(got[0]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("start_epoch", START_EPOCHS)
def test_setup_summary_matches_loops(seed, start_epoch):
    correct, p_true, valid, epochs = random_problem(seed, k=6)
    pairs = slow_pairs(correct, p_true, valid, epochs, start_epoch)
    used = [v for v in pairs.values() if v is not None]
    k, t_max = correct.shape[3], int(max(epochs))
    unforgettable_images = sum(
        all(v["ever"] and v["forget"] == 0 for (s, j, img), v in pairs.items()
            if v is not None and img == i) for i in range(k))
    hist = [0] * (max(v["forget"] for v in used) + 1)
    for v in used:
        hist[v["forget"]] += 1
    got = em.setup_summary(correct, valid, epochs, start_epoch)
    assert got["unforgettable_image_share"] == pytest.approx(unforgettable_images / k, abs=1e-12)
    assert got["forgetting_mean"] == pytest.approx(
        sum(v["forget"] for v in used) / len(used), abs=1e-12)
    assert got["forgetting_hist"].tolist() == hist
    assert got["never_learned_share"] == pytest.approx(
        sum(v["first"] > t_max for v in used) / len(used), abs=1e-12)
    n_used = len({s for (s, _, _), v in pairs.items() if v is not None})
    assert (got["n_seeds"], got["n_excluded_seeds"]) == (n_used, correct.shape[0] - n_used)
    assert got["n_missing_checkpoints"] == sum(
        1 for s in range(valid.shape[0]) for e in range(len(epochs))
        if epochs[e] >= start_epoch and not valid[s, e])


@pytest.mark.parametrize("by", ["correctness", "confidence", "forgetting_mean",
                                "first_learned_median", "rt_5"])
def test_hardness_order_matches_sorted(by):
    rng = np.random.default_rng(7)
    k = 40
    summary = {  # coarse values so that ties (and the tie-breaks) actually occur
        "correctness": rng.integers(0, 4, k) / 4,
        "confidence": rng.integers(0, 4, k) / 4,
        "forgetting_mean": rng.integers(0, 3, k) / 2,
        "first_learned_median": rng.integers(1, 4, k).astype(float),
        "rt_5": rng.integers(0, 3, k) / 2,
    }
    sign = +1 if by in ("forgetting_mean", "first_learned_median") else -1  # +1: higher = harder
    fl = summary["first_learned_median"]
    want = sorted(range(k), key=lambda i: (-sign * summary[by][i], -fl[i], i))
    assert em.hardness_order(summary, by).tolist() == want


def test_hardness_order_puts_nan_last_and_default_is_correctness():
    summary = {"correctness": np.array([0.5, np.nan, 0.1, 0.5]),
               "first_learned_median": np.array([3.0, 1.0, 2.0, 7.0])}
    assert em.hardness_order(summary).tolist() == [2, 3, 0, 1]


# ---------------------------------------------------------------------------- hand-built


def test_learned_at_epoch_8_after_two_forgettings():
    # epochs 0..9; epoch 0 (init) is correct by chance and is left out by default.
    correct, p_true, valid, epochs = one_sequence([1, 0, 0, 1, 1, 0, 1, 0, 1, 1])
    assert em.first_learned(correct, valid, epochs)[0, 0, 0] == 8
    assert em.forgetting_events(correct, valid, epochs)[0, 0, 0] == 2  # 4->5 and 6->7
    # counting the initialisation adds the 0->1 transition
    assert em.forgetting_events(correct, valid, epochs, start_epoch=0)[0, 0, 0] == 3
    summary = em.example_summary(correct, p_true, valid, epochs)
    assert summary["first_learned_median"][0] == 8
    assert summary["forgetting_mean"][0] == 2
    assert summary["unforgettable_share"][0] == 0
    assert summary["correctness"][0] == pytest.approx(5 / 9)


def test_first_learned_reports_epoch_numbers_not_indices():
    # non-contiguous epoch numbers; learned for good at index 5 = epoch 10, forgotten twice
    correct, _, valid, epochs = one_sequence([0, 1, 0, 1, 0, 1, 1], [0, 2, 4, 6, 8, 10, 12])
    assert em.first_learned(correct, valid, epochs)[0, 0, 0] == 10
    assert em.forgetting_events(correct, valid, epochs)[0, 0, 0] == 2
    correct[0, -1] = 0  # never learned: censored at max epoch + 1, not at E
    assert em.first_learned(correct, valid, epochs)[0, 0, 0] == 13


def test_never_learned_is_censored():
    correct, p_true, valid, epochs = one_sequence([0, 1, 1, 0, 1, 1, 0])
    assert em.first_learned(correct, valid, epochs)[0, 0, 0] == 6 + 1
    summary = em.example_summary(correct, p_true, valid, epochs)
    assert summary["first_learned_median"][0] == 7
    assert summary["never_learned_share"][0] == 1
    assert summary["never_correct_share"][0] == 0
    assert summary["unforgettable_share"][0] == 0
    never = em.example_summary(*one_sequence([1, 0, 0, 0]))
    assert never["never_correct_share"][0] == 1 and never["never_learned_share"][0] == 1
    assert never["forgetting_mean"][0] == 0 and never["unforgettable_share"][0] == 0


def test_always_correct_from_epoch_1_is_unforgettable():
    for init in (0, 1):  # chance correctness at the initialisation makes no difference
        correct, p_true, valid, epochs = one_sequence([init, 1, 1, 1, 1])
        summary = em.example_summary(correct, p_true, valid, epochs)
        assert summary["first_learned_median"][0] == 1
        assert summary["forgetting_mean"][0] == 0
        assert summary["unforgettable_share"][0] == 1
        assert summary["confidence"][0] == pytest.approx(0.9)
        assert summary["variability"][0] == pytest.approx(0.0, abs=1e-7)
        assert em.setup_summary(correct, valid, epochs)["unforgettable_image_share"] == 1


def test_initialisation_creates_no_forgetting_by_default():
    correct, _, valid, epochs = one_sequence([1, 0, 1, 1])
    assert em.forgetting_events(correct, valid, epochs)[0, 0, 0] == 0
    assert em.forgetting_events(correct, valid, epochs, start_epoch=0)[0, 0, 0] == 1
    assert em.first_learned(correct, valid, epochs, start_epoch=0)[0, 0, 0] == 2


def test_median_and_seed_spread_hand_computed():
    # 2 seeds x 2 replays x 1 image over epochs 0..3 (epoch 0 ignored)
    correct = np.zeros((2, 4, 2, 1), dtype=np.uint8)
    correct[0, :, 0, 0] = [0, 1, 1, 1]  # learned 1, 0 forgettings
    correct[0, :, 1, 0] = [0, 0, 1, 1]  # learned 2, 0
    correct[1, :, 0, 0] = [0, 1, 0, 1]  # learned 3, 1
    correct[1, :, 1, 0] = [0, 0, 0, 0]  # never (4), 0
    p_true = correct.astype(np.float32)
    s = em.example_summary(correct, p_true, np.ones((2, 4), bool), np.arange(4))
    assert s["first_learned_median"][0] == 2.5  # median of 1, 2, 3, 4
    assert s["never_learned_share"][0] == 0.25
    assert s["forgetting_mean"][0] == 0.25
    assert s["forgetting_seed_std"][0] == pytest.approx(math.sqrt(0.125))  # seeds 0 and 0.5
    assert s["unforgettable_share"][0] == 0.5
    # per-seed confidence: (1 + 2/3) / 2 = 5/6 and (2/3 + 0) / 2 = 1/3
    assert s["confidence_seed_std"][0] == pytest.approx(math.sqrt(2) / 4)


# ---------------------------------------------------------------------------- missing checkpoints


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("garbage", [0, 1])
def test_missing_checkpoint_equals_deleting_it(seed, garbage):
    correct, p_true, _, epochs = random_problem(seed)
    p_true = np.nan_to_num(p_true, nan=0.25)  # every checkpoint evaluated ...
    valid = np.ones(correct.shape[:2], dtype=bool)
    s_miss, e_miss = 1, 4  # not the last epoch, so max(epochs) is the same after deleting it
    valid[s_miss, e_miss] = False
    correct[s_miss, e_miss] = garbage
    p_true[s_miss, e_miss] = np.nan  # ... except this one
    keep = np.arange(len(epochs)) != e_miss
    one = (slice(s_miss, s_miss + 1),)
    sub = (correct[one][:, keep], p_true[one][:, keep], valid[one][:, keep], epochs[keep])
    got = [em.first_learned(correct, valid, epochs), em.forgetting_events(correct, valid, epochs),
           *em.cartography(correct, p_true, valid, epochs)]
    want = [em.first_learned(*sub[:1], *sub[2:]), em.forgetting_events(*sub[:1], *sub[2:]),
            *em.cartography(*sub)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g[s_miss], w[0])
    assert em.missing_checkpoints(valid, epochs) == 1
    summary = em.example_summary(correct, p_true, valid, epochs)
    assert summary["n_missing_checkpoints"].tolist() == [1] * correct.shape[3]
    assert em.setup_summary(correct, valid, epochs)["n_missing_checkpoints"] == 1


def test_missing_checkpoint_is_skipped_not_read_as_incorrect():
    correct, p_true, valid, epochs = one_sequence([0, 1, 0, 1, 1])  # epoch 2 is garbage
    valid[0, 2] = False
    assert em.forgetting_events(correct, valid, epochs)[0, 0, 0] == 0
    assert em.first_learned(correct, valid, epochs)[0, 0, 0] == 1
    # the last checkpoint missing: judged at epoch 3, censoring still uses max(epochs) = 4
    correct, p_true, valid, epochs = one_sequence([0, 1, 1, 0, 1])
    valid[0, 4] = False
    assert em.first_learned(correct, valid, epochs)[0, 0, 0] == 5
    valid[0, 3:] = [True, False]
    correct[0, 3] = 1
    assert em.first_learned(correct, valid, epochs)[0, 0, 0] == 1


def test_missing_checkpoints_counted_from_start_epoch():
    valid = np.ones((3, 5), dtype=bool)
    valid[0, 0] = valid[1, 2] = valid[2, 3] = valid[2, 4] = False
    epochs = np.arange(5)
    assert em.missing_checkpoints(valid, epochs) == 3  # epoch 0 of seed 0 is out of range
    assert em.missing_checkpoints(valid, epochs, start_epoch=0) == 4
    assert em.evaluated_mask(valid, epochs).sum() == 15 - 3 - 3


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_without_valid_epoch_is_excluded_and_counted(seed):
    correct, p_true, valid, epochs = random_problem(seed)  # last seed: only epoch 0 is valid
    correct[-1, 1:] = 0
    got = em.example_summary(correct, p_true, valid, epochs, rt_epoch_indices=[2])
    drop = em.example_summary(correct[:-1], p_true[:-1], valid[:-1], epochs, rt_epoch_indices=[2])
    n_extra = len(epochs) - 1  # the excluded seed's missing checkpoints are still counted
    for name in got:
        if name == "n_missing_checkpoints":
            np.testing.assert_array_equal(got[name], drop[name] + n_extra)
        else:
            np.testing.assert_array_equal(got[name], drop[name], err_msg=name)
    assert got["n_seeds"][0] == correct.shape[0] - 1
    assert np.all(np.isnan(em.first_learned(correct, valid, epochs)[-1]))
    setup = em.setup_summary(correct, valid, epochs)
    assert (setup["n_seeds"], setup["n_excluded_seeds"]) == (correct.shape[0] - 1, 1)
    # with the initialisation included the seed is used
    assert em.setup_summary(correct, valid, epochs, start_epoch=0)["n_excluded_seeds"] == 0


def test_no_used_seed_gives_nan_columns():
    correct, p_true, valid, epochs = one_sequence([1, 1, 1])
    s = em.example_summary(correct, p_true, valid, epochs, start_epoch=5)
    assert np.isnan(s["first_learned_median"][0]) and np.isnan(s["confidence"][0])
    assert s["n_seeds"][0] == 0
    setup = em.setup_summary(correct, valid, epochs, start_epoch=5)
    assert np.isnan(setup["forgetting_mean"]) and setup["forgetting_hist"].size == 0


def test_bool_and_uint8_correct_agree_and_inputs_untouched():
    correct, p_true, valid, epochs = random_problem(11)
    before = (correct.copy(), p_true.copy(), valid.copy())
    a = em.example_summary(correct, p_true, valid, epochs)
    b = em.example_summary(correct.astype(bool), p_true, valid, epochs)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(correct, before[0])
    np.testing.assert_array_equal(p_true, before[1])
    np.testing.assert_array_equal(valid, before[2])


# ---------------------------------------------------------------------------- validation


def test_bad_arguments_raise_value_error():
    correct, p_true, valid, epochs = random_problem(0)
    cases = [
        ((correct[0], p_true, valid, epochs), {}, "shape \\[S, E, M, K\\]"),
        ((correct[:, :0], p_true, valid, epochs), {}, "non-empty"),
        ((correct.astype(float), p_true, valid, epochs), {}, "bool or 0/1"),
        ((correct * 2, p_true, valid, epochs), {}, "only 0 and 1"),
        ((correct, p_true[:, :-1], valid, epochs), {}, "p_true must be a float array"),
        ((correct, np.zeros(p_true.shape, int), valid, epochs), {}, "p_true must be a float"),
        ((correct, p_true, valid.astype(int), epochs), {}, "valid must be a bool"),
        ((correct, p_true, valid[:-1], epochs), {}, "valid must be a bool"),
        ((correct, p_true, valid, epochs[:-1]), {}, "epochs must be"),
        ((correct, p_true, valid, epochs.astype(float)), {}, "epochs must be"),
        ((correct, p_true, valid, epochs[::-1].copy()), {}, "strictly increasing"),
        ((correct, p_true, valid, epochs), {"start_epoch": 1.5}, "start_epoch"),
        ((correct, p_true, valid, epochs), {"rt_epoch_indices": [len(epochs)]}, "epoch index"),
        ((correct, p_true, valid, epochs), {"rt_epoch_indices": [-1]}, "epoch index"),
    ]
    for args, kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            em.example_summary(*args, **kwargs)
    bad_p = p_true.copy()
    bad_p[valid] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        em.cartography(correct, bad_p, valid, epochs)
    with pytest.raises(ValueError, match="valid must be"):
        em.missing_checkpoints(valid[0], epochs)


def test_non_finite_p_true_says_which_checkpoint():
    # seed index 1, epoch index 2 (epoch number 5); epoch 0 is before start_epoch: not looked at
    correct = np.ones((2, 4, 2, 3), np.uint8)
    p_true = np.full(correct.shape, 0.5, np.float32)
    p_true[:, 0] = np.nan
    p_true[1, 2, 1, 0] = np.inf
    with pytest.raises(em.NonFiniteProbability, match="seed index 1, epoch 5") as caught:
        em.cartography(correct, p_true, np.ones((2, 4), bool), np.array([0, 2, 5, 9]))
    assert (caught.value.seed, caught.value.epoch) == (1, 5) and isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="by must be"):
        em.hardness_order({"variability": np.zeros(3)}, by="variability")
    with pytest.raises(ValueError, match="no column"):
        em.hardness_order({"correctness": np.zeros(3)})
    with pytest.raises(ValueError, match="equal length"):
        em.hardness_order({"correctness": np.zeros(3), "first_learned_median": np.zeros(2)})
