"""The `inspect` commands of the analyses: each a thin layer over one library function."""
from __future__ import annotations

import click

from ..cli_util import parse_int_list, parse_levels, split_names, user_errors
from ..devices import resolve_device
from ..errors import UserError
from .cli_options import (DATA, DEVICE, EPOCH, NO_PROGRESS, NO_VERIFY, RNG_SEED, RUN_DIR, SETUP, SHRINKAGE,
                          STEPS, STORE, TSNE_SEED, WORK, not_empty, options, show, workspace)
from .example_measures import HARDNESS_DIRECTION as HARDNESS

READS_STORE = "Reads the r_t store: run `inspect rt` first (`inspect all` does both)."
READS_CHECKPOINTS = "Reads the checkpoints themselves (their representations are cached in WORK/features.zarr)."
READS_NETWORKS = "Reads the checkpoints themselves."


def writes(reads: str, *steps: str) -> str:
    """A command's epilog: what it reads, and the outputs STEP_OUTPUTS names for its steps."""
    from .outputs import STEP_OUTPUTS

    names = [n for step in steps for n in STEP_OUTPUTS[step][0]]
    return (f"{reads} Writes into WORK (default RUN_DIR/inspect) the tables (tables/*.json, .csv) and "
            f"figures (figures/*.png, .pdf) named {', '.join(names)}, and the arrays in analysis.h5 "
            f"(group{'s' if len(steps) > 1 else ''} {', '.join(STEP_OUTPUTS[st][1] for st in steps)})"
            + ("; the per-example table also as tables/examples.parquet." if "examples" in steps else "."))


def _analysis(run_dir, work, store, setups, fn):
    from .analyses import store_data
    from .outputs import Outputs

    ws = workspace(run_dir, work)
    out = Outputs(ws.dir)
    with user_errors():
        show(fn(store_data(ws, split_names(setups), store, out), out, ws))


@click.command("dynamics", epilog=writes(READS_STORE, "dynamics"), short_help="Sorted r_t curves and the epoch-aligned comparison (Figs 4.1, 4.2).")
@options(RUN_DIR, WORK, STORE, SETUP)
@click.option("--epochs", default=None,
              help="Epoch numbers of the reference setup to align the others to (a list, e.g. "
                   "1,5,10,25,50,200; default: those of the thesis the run has, else a spread).")
@click.option("--reference", default=None, help="Reference setup A (default: simclr, else the first).")
@click.option("--include-init", is_flag=True, help="Let eq. 4.4 pick epoch 0 (the thesis's code could not).")
@click.option("--curves", default="all", show_default=True, metavar="all|N",
              help="Fig. 4.1's curves per setup: every evaluated epoch (as the thesis), or N of "
                   "them evenly spread, first and last included.")
def dynamics_cmd(run_dir, work, store, setups, epochs, reference, include_init, curves):
    """Sorted r_t curves (Fig. 4.1) and the epoch-aligned comparison (Fig. 4.2)."""
    from .dynamics import run_dynamics

    ref_epochs = parse_int_list(epochs, "--epochs")
    n_curves = _curves(curves)
    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_dynamics(
        d, out, ref_setup=reference, ref_epochs=ref_epochs, curve_epochs=n_curves,
        include_init=include_init))


def _curves(text: str) -> str | int:
    """`--curves all|N` -> "all" or N >= 1."""
    if text.strip() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"--curves {text!r}: use 'all' or a number of curves >= 1, e.g. 8")
    return n


@click.command("binomial", epilog=writes(READS_STORE, "binomial"))
@options(RUN_DIR, WORK, STORE, SETUP)
@click.option("--draws", default=10, show_default=True, help="Binomial noise draws for the MAE.")
@click.option("--seed", type=RNG_SEED, default=0, show_default=True, help="Seed of the binomial draws and the nulls.")
@click.option("--null-sims", default=1000, show_default=True,
              help="Datasets simulated under 'every image equally hard' to calibrate Tables 4.1/4.2.")
@click.option("--include-init", is_flag=True, help="Let the p0 searches pick epoch 0.")
@click.option("--p0", "levels", default=None,
              help="Accuracy levels p0 (a list; default 0.25,0.5,0.75 as the thesis), or 'range': "
                   "each setup's own, 25/50/75% of the range both its p_hat curves (one augmentation, "
                   "all) cover after the initialization (for short runs).")
def binomial_cmd(run_dir, work, store, setups, draws, seed, null_sims, include_init, levels):
    """Tables 4.1 (chi-square) and 4.2 (MAE vs binomial noise), thesis-faithful and calibrated
    side by side; Fig. 4.3, 4.4, 4.5, B.1."""
    from .binomial import DEFAULT_P0S, run_binomial

    p0s = parse_levels(levels) or DEFAULT_P0S
    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_binomial(
        d, out, p0s, draws=draws, seed=seed, null_sims=null_sims, include_init=include_init))


@click.command("heterogeneity", epilog=writes(READS_STORE, "heterogeneity"))
@options(RUN_DIR, WORK, STORE, SETUP)
@click.option("--epochs", default=None, help="Reference epochs (a list; default as `dynamics`).")
@click.option("--reference", default=None, help="Reference setup A (default: simclr, else the first).")
@click.option("--include-init", is_flag=True, help="Let eq. 4.4 and the fits use epoch 0 (the thesis's code could not).")
def heterogeneity_cmd(run_dir, work, store, setups, epochs, reference, include_init):
    """How heterogeneous difficulty is (beta-binomial rho per epoch) and whether setups agree
    on which images are hard (Spearman of r_t at aligned epochs)."""
    from .heterogeneity import run_heterogeneity

    ref_epochs = parse_int_list(epochs, "--epochs")
    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_heterogeneity(
        d, out, ref_setup=reference, ref_epochs=ref_epochs, include_init=include_init))


@click.command("classes", epilog=writes(READS_STORE, "classes"), short_help="Per-class r_t dynamics (Fig 5.3).")
@options(RUN_DIR, WORK, STORE, SETUP)
def classes_cmd(run_dir, work, store, setups):
    """Per-class r_t dynamics (Fig. 5.3)."""
    from .classes import run_classes

    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_classes(d, out, ws.run.classes))


@click.command("examples", epilog=writes(READS_STORE, "examples"))
@options(RUN_DIR, WORK, STORE, SETUP, *DATA, NO_PROGRESS)
@click.option("--start-epoch", default=1, show_default=True,
              help="First epoch the measures use (0 includes the initialization, whose "
                   "correctness is chance).")
@click.option("--reference", default=None, help="Reference setup of the rt_ref<t> columns "
                                                "(default: simclr, else the first).")
@click.option("--ref-epochs", default=None,
              help="Reference epochs of the rt_ref<t> columns (a list; default: as `dynamics`).")
@click.option("--by", type=click.Choice(list(HARDNESS)), default="correctness", show_default=True,
              help="Measure that orders the hardest/easiest image grids.")
@click.option("--grid", default=32, show_default=True, help="Images in each hardest/easiest grid.")
def examples_cmd(run_dir, work, store, setups, dataset, data_root, no_progress, start_epoch,
                 reference, ref_epochs, by, grid):
    """Per-example difficulty: first-learned epoch, forgetting events, data maps, r_t at the
    aligned epochs; the table tables/examples.{parquet,csv}, figures and a report section."""
    from .examples import ExampleOptions
    from .export import examples_for_workspace
    from .outputs import Outputs

    ws = workspace(run_dir, work)
    refs = parse_int_list(ref_epochs, "--ref-epochs")
    opts = ExampleOptions(start_epoch, reference, tuple(refs) if refs else None, by, grid,
                          not no_progress)
    with user_errors():
        res = examples_for_workspace(ws, Outputs(ws.dir), split_names(setups), store, opts,
                                     {"dataset": dataset, "data_root": data_root}, echo=click.echo)
    show(res)
    click.echo(f"table: {res['table']} (and .csv)")


@click.command("export")
@options(RUN_DIR, WORK, STORE, *DATA, NO_PROGRESS)
@click.option("--to", "to", type=click.Choice(["netcdf", "parquet"]), required=True,
              help="netcdf: the r_t store (one group per setup); parquet: the per-example table.")
@click.option("--out", "target", default=None, metavar="PATH", callback=not_empty,
              help="Output file (default WORK/rt.nc, or WORK/tables/examples.parquet).")
@click.option("--force", is_flag=True,
              help="Replace an existing --out file (an earlier export; never a file of any run directory, "
                   "work folder, bank or r_t store).")
def export_cmd(run_dir, work, store, dataset, data_root, no_progress, to, target, force):
    """Portable copies for readers without the toolkit (xarray, pandas, netCDF tools)."""
    from .export import export

    ws = workspace(run_dir, work)
    with user_errors():
        path = export(ws, to, target, store, {"dataset": dataset, "data_root": data_root},
                      not no_progress, echo=click.echo, force=force)
    click.echo(f"exported: {path}")


def _representations(run_dir, work, setups, device, dataset, data_root, no_verify, fn):
    from .features import FeatureCache
    from .outputs import Outputs

    ws = workspace(run_dir, work)
    names = ws.run.select(split_names(setups))
    dev = resolve_device(device)
    cache = FeatureCache(ws, dev, {"dataset": dataset, "data_root": data_root}, not no_verify, click.echo)
    with user_errors():
        show(fn(cache, Outputs(ws.dir), names, dev))


@click.command("probe", epilog=writes(READS_CHECKPOINTS, "probe"))
@options(RUN_DIR, WORK, SETUP, EPOCH, DEVICE, *DATA, NO_VERIFY)
@click.option("--seed", type=RNG_SEED, default=0, show_default=True, help="Seed of the probe's init and shuffling.")
def probe_cmd(run_dir, work, setups, epoch, device, dataset, data_root, no_verify, seed):
    """Table B.1: linear probes on frozen representations, plus random init and raw pixels."""
    from .representations import run_probe

    _representations(run_dir, work, setups, device, dataset, data_root, no_verify,
                     lambda c, out, names, dev: run_probe(c, out, names, epoch, seed, dev))


@click.command("embed", epilog=writes(READS_CHECKPOINTS, "tsne", "kl"), short_help="t-SNE and KL between class Gaussians (Figs 5.1, 5.2).")
@options(RUN_DIR, WORK, SETUP, EPOCH, DEVICE, *DATA, NO_VERIFY)
@click.option("--seed", type=int, default=None, help="Model seed to embed (default: the first).")
@click.option("--tsne-seed", type=TSNE_SEED, default=0, show_default=True, help="Seed of t-SNE and its 25% subset.")
@click.option("--tsne-method", type=click.Choice(["thesis", "opentsne", "sklearn", "auto"]),
              default="thesis", show_default=True,
              help="thesis: scikit-learn's 2021 defaults as the thesis ran them; opentsne: faster, "
                   "current defaults; sklearn: scikit-learn's current defaults; auto: opentsne, or "
                   "sklearn where openTSNE is missing.")
@click.option("--shrinkage", type=SHRINKAGE, default=0.0, show_default=True,
              help="Shrink class covariances towards a scaled identity (for singular ones).")
def embed_cmd(run_dir, work, setups, epoch, device, dataset, data_root, no_verify, seed, tsne_seed,
              tsne_method, shrinkage):
    """Fig. 5.1 (t-SNE of a stratified 25% of train) and Fig. 5.2 (KL between class Gaussians)."""
    from .representations import run_embed

    _representations(run_dir, work, setups, device, dataset, data_root, no_verify,
                     lambda c, out, names, dev: run_embed(c, out, names, epoch, seed, tsne_seed,
                                                          shrinkage, tsne_method))


@click.command("activations", epilog=writes(READS_NETWORKS, "activations"), short_help="Activation maximization, sigmoid-normalized (Fig 5.4).")
@options(RUN_DIR, WORK, SETUP, EPOCH, DEVICE, NO_VERIFY, NO_PROGRESS)
@click.option("--seed", type=int, default=None, help="Model seed (default: the first).")
@click.option("--steps", type=STEPS, default=1000, show_default=True, help="Gradient-ascent iterations.")
@click.option("--channels", type=click.IntRange(1), default=36, show_default=True, help="Channels per (setup, block).")
@click.option("--channel-seed", type=RNG_SEED, default=0, show_default=True, help="Seed of the channel order and starts.")
def activations_cmd(run_dir, work, setups, epoch, device, no_verify, no_progress, seed, steps,
                    channels, channel_seed):
    """Fig. 5.4: gradient-ascent pseudo-images per (setup, block), sigmoid-normalized."""
    from .activation_figure import run_activations
    from .outputs import Outputs

    ws = workspace(run_dir, work)
    with user_errors():
        show(run_activations(ws, Outputs(ws.dir), ws.run.select(split_names(setups)), epoch, seed,
                              steps, channels, channel_seed, resolve_device(device), not no_verify,
                              not no_progress))


COMMANDS = [dynamics_cmd, binomial_cmd, heterogeneity_cmd, classes_cmd, examples_cmd, export_cmd, probe_cmd, embed_cmd, activations_cmd]
