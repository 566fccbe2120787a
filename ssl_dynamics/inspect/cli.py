"""`inspect`: phase two from the command line (a thin layer over the inspect modules).

Never trains. `inspect rt` evaluates checkpoints into the r_t store; every other command
reads only stored arrays (or the representation cache), so re-plotting takes seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..cli_util import EXIT_PARTIAL, parse_int_list, run_cli, split_names, user_errors
from ..devices import resolve_device
from .example_measures import HARDNESS_DIRECTION as HARDNESS
from .workspace import open_workspace

RUN_DIR = click.argument("run_dir")
WORK = click.option("--work", default=None, metavar="DIR",
                    help="Where phase-two outputs go (default RUN_DIR/inspect; use for read-only archives).")
STORE = click.option("--store", default=None, help="r_t store: *.zarr (default WORK/rt.zarr) or *.h5.")
SETUP = click.option("--setup", "setups", multiple=True, metavar="NAME",
                     help="Setup(s) to include (repeatable, or comma-separated; default: all).")
EPOCH = click.option("--epoch", type=int, default=None,
                     help="The one checkpoint epoch to analyse (default: the thesis's epoch when the "
                          "run has it, else each setup's last).")
DEVICE = click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
DATA = [click.option("--dataset", default=None, help="Where the run's dataset is now, e.g. "
                                                     "imagefolder:<new path> (its checksum must match)."),
        click.option("--data-root", default=None, help="Where CIFAR-10 is now (checksum checked).")]
NO_VERIFY = click.option("--no-verify", is_flag=True,
                         help="Skip checking each checkpoint's sha256 against its manifest (faster).")
NO_PROGRESS = click.option("--no-progress", is_flag=True, help="Hide progress bars.")


def options(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Phase two: per-example learning dynamics from archived checkpoints.

    \b
    Order of work:
      inspect rt RUN_DIR          evaluate checkpoints on a fixed augmentation bank
      inspect dynamics RUN_DIR    sorted r_t curves, epoch alignment (Fig. 4.1, 4.2)
      inspect binomial RUN_DIR    chi-square and MAE vs binomial noise (Tables 4.1, 4.2)
      inspect heterogeneity RUN_DIR  rho of difficulty per epoch, agreement between setups
      inspect classes RUN_DIR     per-class r_t dynamics (Fig. 5.3)
      inspect examples RUN_DIR    per-example difficulty: forgetting, first-learned epoch,
                                  data maps, hardest/easiest images (table examples.parquet)
      inspect probe RUN_DIR       linear probes (Table B.1)
      inspect embed RUN_DIR       t-SNE and KL between class Gaussians (Fig. 5.1, 5.2)
      inspect activations RUN_DIR activation maximization (Fig. 5.4)
      inspect report RUN_DIR      one HTML page with everything
      inspect all RUN_DIR         all of the above, in order
      inspect export RUN_DIR      portable copies: --to netcdf (r_t store), --to parquet (table)
    Outputs go to RUN_DIR/inspect/ (figures/, tables/, analysis.h5, report/), or to --work DIR.
    Exit status: 0 done, 2 bad input (one line on stderr), 3 `all` skipped some analyses.
    """


def _show(res: dict) -> None:
    from .outputs import format_table

    for name, rows in res.get("tables", {}).items():
        click.echo(f"\n{name}\n{format_table(rows)}")
    for note in res.get("notes", []):
        click.echo(f"note: {note}")
    for fig in res.get("figures", []):
        click.echo(f"figure: {fig}")


def _ws(run_dir, work):
    return open_workspace(run_dir, work, echo=click.echo)


def _rt_step(ws, setups, epochs, shard, allow_missing, bank, probes, replays, bank_seed,
             simclr_batch, dataset, data_root, device, precision, no_verify, no_progress, store=None,
             group="auto"):
    from .rt import BankRequest, EvalOptions, Selection, compute_rt, parse_shard
    from .rt_plan import resolve_group

    select = Selection(tuple(split_names(setups) or ()) or None,
                       tuple(parse_int_list(epochs, "--epochs")) if epochs else None,
                       parse_shard(shard), allow_missing)
    request = BankRequest(probes, replays, bank_seed, simclr_batch, Path(bank) if bank else None)
    dev = resolve_device(device)
    opts = EvalOptions(dev, precision == "bf16", not no_verify, not no_progress,
                       resolve_group(group, dev, ws.run.cfg.backbone))
    return lambda: compute_rt(ws, select, opts, request, store,
                              {"dataset": dataset, "data_root": data_root}, echo=click.echo)


@cli.command("rt")
@options(RUN_DIR, WORK, STORE, SETUP, *DATA, DEVICE, NO_VERIFY, NO_PROGRESS)
@click.option("--epochs", default=None, help="Only these epoch numbers (a comma-separated list; default: all).")
@click.option("--shard", default=None, metavar="I/N", help="Take every N-th checkpoint of the grid, from I.")
@click.option("--allow-missing", is_flag=True, help="Evaluate what exists when checkpoints are missing.")
@click.option("--bank", default=None, help="Bank file (default WORK/bank.h5; built on first use).")
@click.option("--probes", type=int, default=None, help="K: probe images in a new bank [1024].")
@click.option("--replays", type=int, default=None, help="M: augmentations per probe image [10].")
@click.option("--bank-seed", type=int, default=None, help="Seed of the probe choice and replays [0].")
@click.option("--simclr-batch", type=int, default=None,
              help="B: SimCLR views are classified within fixed batches of B images "
                   "[the simclr setup's training batch size, 256 in the thesis].")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--group", default="auto", show_default=True,
              help="Checkpoints of one setup evaluated per forward pass as one grouped network: "
                   "auto (1 on the CPU, 8 on a GPU) or a number; 1 = one at a time.")
def rt_cmd(run_dir, work, store, setups, dataset, data_root, device, no_verify, no_progress,
           epochs, shard, allow_missing, bank, probes, replays, bank_seed, simclr_batch, precision, group):
    """Evaluate every checkpoint of RUN_DIR on the bank into the r_t store (resumable)."""
    ws = _ws(run_dir, work)
    step = _rt_step(ws, setups, epochs, shard, allow_missing, bank, probes, replays, bank_seed,
                    simclr_batch, dataset, data_root, device, precision, no_verify, no_progress, store,
                    group)
    res = step()
    click.echo(f"evaluated {res['evaluated']} checkpoints in {res['seconds']:.1f} s "
               f"({res['checkpoints_per_s']:.2f} ckpt/s, {res['images_per_s']:.0f} images/s) "
               f"-> {res['store']}")


def _analysis(run_dir, work, store, setups, fn):
    from .analyses import store_data
    from .outputs import Outputs

    ws = _ws(run_dir, work)
    with user_errors():
        _show(fn(store_data(ws, split_names(setups), store), Outputs(ws.dir), ws))


@cli.command("dynamics")
@options(RUN_DIR, WORK, STORE, SETUP)
@click.option("--epochs", default=None,
              help="Epoch numbers of the reference setup to align the others to (a list, e.g. "
                   "1,5,10,25,50,200; default: those of the thesis the run has, else a spread).")
@click.option("--reference", default=None, help="Reference setup A (default: simclr, else the first).")
@click.option("--include-init", is_flag=True, help="Let eq. 4.4 pick epoch 0 (the thesis's code could not).")
def dynamics_cmd(run_dir, work, store, setups, epochs, reference, include_init):
    """Sorted r_t curves (Fig. 4.1) and the epoch-aligned comparison (Fig. 4.2)."""
    from .dynamics import run_dynamics

    ref_epochs = parse_int_list(epochs, "--epochs")
    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_dynamics(
        d, out, ref_setup=reference, ref_epochs=ref_epochs, include_init=include_init))


@cli.command("binomial")
@options(RUN_DIR, WORK, STORE, SETUP)
@click.option("--draws", default=10, show_default=True, help="Binomial noise draws for the MAE.")
@click.option("--seed", default=0, show_default=True, help="Seed of the binomial draws and the nulls.")
@click.option("--null-sims", default=1000, show_default=True,
              help="Datasets simulated under 'every image equally hard' to calibrate Tables 4.1/4.2.")
@click.option("--include-init", is_flag=True, help="Let the p0 searches pick epoch 0.")
def binomial_cmd(run_dir, work, store, setups, draws, seed, null_sims, include_init):
    """Tables 4.1 (chi-square) and 4.2 (MAE vs binomial noise), thesis-faithful and calibrated
    side by side; Fig. 4.3, 4.4, 4.5, B.1."""
    from .binomial import run_binomial

    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_binomial(
        d, out, draws=draws, seed=seed, null_sims=null_sims, include_init=include_init))


@cli.command("heterogeneity")
@options(RUN_DIR, WORK, STORE, SETUP)
@click.option("--epochs", default=None, help="Reference epochs (a list; default as `dynamics`).")
@click.option("--reference", default=None, help="Reference setup A (default: simclr, else the first).")
def heterogeneity_cmd(run_dir, work, store, setups, epochs, reference):
    """How heterogeneous difficulty is (beta-binomial rho per epoch) and whether setups agree
    on which images are hard (Spearman of r_t at aligned epochs)."""
    from .heterogeneity import run_heterogeneity

    ref_epochs = parse_int_list(epochs, "--epochs")
    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_heterogeneity(
        d, out, ref_setup=reference, ref_epochs=ref_epochs))


@cli.command("classes")
@options(RUN_DIR, WORK, STORE, SETUP)
def classes_cmd(run_dir, work, store, setups):
    """Per-class r_t dynamics (Fig. 5.3)."""
    from .classes import run_classes

    _analysis(run_dir, work, store, setups, lambda d, out, ws: run_classes(d, out, ws.run.classes))


@cli.command("examples")
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

    ws = _ws(run_dir, work)
    refs = parse_int_list(ref_epochs, "--ref-epochs")
    opts = ExampleOptions(start_epoch, reference, tuple(refs) if refs else None, by, grid,
                          not no_progress)
    with user_errors():
        res = examples_for_workspace(ws, Outputs(ws.dir), split_names(setups), store, opts,
                                     {"dataset": dataset, "data_root": data_root}, echo=click.echo)
    _show(res)
    click.echo(f"table: {res['table']} (and .csv)")


@cli.command("export")
@options(RUN_DIR, WORK, STORE, *DATA, NO_PROGRESS)
@click.option("--to", "to", type=click.Choice(["netcdf", "parquet"]), required=True,
              help="netcdf: the r_t store (one group per setup); parquet: the per-example table.")
@click.option("--out", "target", default=None, metavar="PATH",
              help="Output file (default WORK/rt.nc, or WORK/tables/examples.parquet).")
def export_cmd(run_dir, work, store, dataset, data_root, no_progress, to, target):
    """Portable copies for readers without the toolkit (xarray, pandas, netCDF tools)."""
    from .export import export

    ws = _ws(run_dir, work)
    with user_errors():
        path = export(ws, to, target, store, {"dataset": dataset, "data_root": data_root},
                      not no_progress, echo=click.echo)
    click.echo(f"exported: {path}")


def _representations(run_dir, work, setups, device, dataset, data_root, no_verify, fn):
    from .features import FeatureCache
    from .outputs import Outputs

    ws = _ws(run_dir, work)
    names = ws.run.select(split_names(setups))
    dev = resolve_device(device)
    cache = FeatureCache(ws, dev, {"dataset": dataset, "data_root": data_root}, not no_verify, click.echo)
    with user_errors():
        _show(fn(cache, Outputs(ws.dir), names, dev))


@cli.command("probe")
@options(RUN_DIR, WORK, SETUP, EPOCH, DEVICE, *DATA, NO_VERIFY)
@click.option("--seed", default=0, show_default=True, help="Seed of the probe's init and shuffling.")
def probe_cmd(run_dir, work, setups, epoch, device, dataset, data_root, no_verify, seed):
    """Table B.1: linear probes on frozen representations, plus random init and raw pixels."""
    from .representations import run_probe

    _representations(run_dir, work, setups, device, dataset, data_root, no_verify,
                     lambda c, out, names, dev: run_probe(c, out, names, epoch, seed, dev))


@cli.command("embed")
@options(RUN_DIR, WORK, SETUP, EPOCH, DEVICE, *DATA, NO_VERIFY)
@click.option("--seed", type=int, default=None, help="Model seed to embed (default: the first).")
@click.option("--tsne-seed", default=0, show_default=True)
@click.option("--tsne-method", type=click.Choice(["thesis", "opentsne", "sklearn", "auto"]),
              default="thesis", show_default=True,
              help="thesis: scikit-learn's 2021 defaults as the thesis ran them; opentsne: faster.")
@click.option("--shrinkage", default=0.0, show_default=True,
              help="Shrink class covariances towards a scaled identity (for singular ones).")
def embed_cmd(run_dir, work, setups, epoch, device, dataset, data_root, no_verify, seed, tsne_seed,
              tsne_method, shrinkage):
    """Fig. 5.1 (t-SNE of a stratified 25% of train) and Fig. 5.2 (KL between class Gaussians)."""
    from .representations import run_embed

    _representations(run_dir, work, setups, device, dataset, data_root, no_verify,
                     lambda c, out, names, dev: run_embed(c, out, names, epoch, seed, tsne_seed,
                                                          shrinkage, tsne_method))


@cli.command("activations")
@options(RUN_DIR, WORK, SETUP, EPOCH, DEVICE, NO_VERIFY, NO_PROGRESS)
@click.option("--seed", type=int, default=None, help="Model seed (default: the first).")
@click.option("--steps", default=1000, show_default=True, help="Gradient-ascent iterations.")
@click.option("--channels", default=36, show_default=True, help="Channels per (setup, block).")
@click.option("--channel-seed", default=0, show_default=True, help="Seed of the channel order and starts.")
def activations_cmd(run_dir, work, setups, epoch, device, no_verify, no_progress, seed, steps,
                    channels, channel_seed):
    """Fig. 5.4: gradient-ascent pseudo-images per (setup, block), sigmoid-normalized."""
    from .activation_figure import run_activations
    from .outputs import Outputs

    ws = _ws(run_dir, work)
    with user_errors():
        _show(run_activations(ws, Outputs(ws.dir), ws.run.select(split_names(setups)), epoch, seed,
                              steps, channels, channel_seed, resolve_device(device), not no_verify,
                              not no_progress))


@cli.command("report")
@options(RUN_DIR, WORK)
def report_cmd(run_dir, work):
    """One self-contained HTML page with every figure and table of the work folder."""
    from .report import build_report

    click.echo(f"report: {build_report(_ws(run_dir, work))}")


@cli.command("all")
@options(RUN_DIR, WORK, SETUP, EPOCH, DEVICE, *DATA, NO_VERIFY, NO_PROGRESS)
@click.option("--ref-epochs", default=None,
              help="Reference epochs for `dynamics` (a list; default: the thesis's that exist).")
@click.option("--steps", default=1000, show_default=True, help="Activation-maximization iterations.")
@click.option("--allow-missing", is_flag=True, help="Evaluate what exists when checkpoints are missing.")
@click.option("--shrinkage", default=0.0, show_default=True, help="KL covariance shrinkage (see embed).")
@click.option("--tsne-method", type=click.Choice(["thesis", "opentsne", "sklearn", "auto"]),
              default="thesis", show_default=True)
@click.option("--probes", type=int, default=None, help="K for a new bank [1024].")
@click.option("--replays", type=int, default=None, help="M for a new bank [10].")
def all_cmd(run_dir, work, setups, epoch, device, dataset, data_root, no_verify, no_progress,
            ref_epochs, steps, allow_missing, shrinkage, tsne_method, probes, replays):
    """Every analysis, then the report. An analysis that cannot be computed is skipped with
    its reason (listed in the output and the report) and the command exits 3."""
    from .pipeline import AllOptions, run_all

    ws = _ws(run_dir, work)
    names = ws.run.select(split_names(setups))
    rt = _rt_step(ws, tuple(names), None, None, allow_missing, None, probes, replays, None, None,
                  dataset, data_root, device, "fp32", no_verify, no_progress)
    refs = parse_int_list(ref_epochs, "--ref-epochs")
    opts = AllOptions(tuple(names), epoch, tuple(refs) if refs else None, steps, shrinkage,
                      tsne_method, resolve_device(device), not no_verify, not no_progress,
                      {"dataset": dataset, "data_root": data_root})
    if run_all(ws, rt, opts, _show, echo=click.echo):
        sys.exit(EXIT_PARTIAL)


from .submit_cli import submit as _submit  # noqa: E402  (`inspect submit rt ...`)

cli.add_command(_submit)


def main() -> None:
    run_cli(cli, "evaluated checkpoints are in the store; rerun the same command to resume")


if __name__ == "__main__":
    main()
