"""`inspect`: phase two from the command line (a thin layer over the inspect modules).

Never trains. `inspect rt` evaluates checkpoints into the r_t store; every other command
reads only stored arrays, so re-plotting takes seconds.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..cli_util import run_cli
from ..errors import UserError
from ..train.loop import resolve_device

RUN_DIR = click.argument("run_dir", type=click.Path(file_okay=False))
STORE = click.option("--store", default=None, type=click.Path(),
                     help="r_t store: *.zarr (default RUN_DIR/inspect/rt.zarr) or *.h5.")
SETUPS = click.option("--setups", default=None,
                      help="Comma-separated setups (default: all in the store/run).")


def parse_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r}: use comma-separated integers, e.g. 1,5,10") from None


def split_setups(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def store_path(run_dir: str, store: str | None) -> Path:
    return Path(store) if store else Path(run_dir) / "inspect" / "rt.zarr"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Phase two: per-example learning dynamics from archived checkpoints.

    \b
    Order of work:
      inspect rt RUN_DIR          evaluate checkpoints on a fixed augmentation bank
      inspect dynamics RUN_DIR    sorted r_t curves, epoch alignment (Fig. 4.1, 4.2)
      inspect binomial RUN_DIR    chi-square and MAE vs binomial noise (Tables 4.1, 4.2)
      inspect classes RUN_DIR     per-class r_t dynamics (Fig. 5.3)
      inspect probe RUN_DIR       linear probes (Table B.1)
      inspect embed RUN_DIR       t-SNE and KL between class Gaussians (Fig. 5.1, 5.2)
      inspect activations RUN_DIR activation maximization (Fig. 5.4)
      inspect report RUN_DIR      one HTML page with everything
      inspect all RUN_DIR         all of the above, in order
    Outputs go to RUN_DIR/inspect/ (figures/, tables/, analysis.h5, report/).
    """


@cli.command("rt")
@RUN_DIR
@STORE
@SETUPS
@click.option("--epochs", default=None, help="Only these epochs (comma-separated; default: all).")
@click.option("--shard", default=None, metavar="I/N", help="Take every N-th pending checkpoint, from I.")
@click.option("--allow-missing", is_flag=True, help="Evaluate what exists when checkpoints are missing.")
@click.option("--bank", "bank_path", default=None, type=click.Path(dir_okay=False),
              help="Bank file (default RUN_DIR/inspect/bank.h5; built on first use).")
@click.option("--probes", type=int, default=None, help="K: probe images in the bank [new bank: 1024].")
@click.option("--replays", type=int, default=None, help="M: augmentations per probe image [new bank: 10].")
@click.option("--bank-seed", type=int, default=None, help="Seed of the probe choice and replays [new bank: 0].")
@click.option("--simclr-batch", type=int, default=None,
              help="B: SimCLR views are classified within fixed batches of B images "
                   "[new bank: the simclr setup's training batch size, 256 in the thesis].")
@click.option("--data-root", default=None, help="Where the run's dataset is now (to build the bank).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--no-progress", is_flag=True)
def rt_cmd(run_dir, store, setups, epochs, shard, allow_missing, bank_path, probes, replays,
           bank_seed, simclr_batch, data_root, device, precision, no_progress):
    """Evaluate every checkpoint of RUN_DIR on the bank into the r_t store (resumable)."""
    from .rt import compute_rt

    res = compute_rt(run_dir, store_path(run_dir, store), split_setups(setups),
                     parse_list(epochs, "--epochs"), shard, allow_missing, resolve_device(device),
                     precision == "bf16", probes, replays, bank_seed, simclr_batch, bank_path,
                     data_root, progress=not no_progress, echo=click.echo)
    click.echo(f"evaluated {res['evaluated']} checkpoints in {res['seconds']:.1f} s "
               f"({res['checkpoints_per_s']:.2f} ckpt/s, {res['images_per_s']:.0f} images/s) "
               f"-> {res['store']}")


def _print_result(res: dict) -> None:
    from .outputs import format_table

    for name, rows in res.get("tables", {}).items():
        click.echo(f"\n{name}\n{format_table(rows)}")
    for note in res.get("notes", []):
        click.echo(f"note: {note}")
    for fig in res.get("figures", []):
        click.echo(f"figure: {fig}")


@cli.command("dynamics")
@RUN_DIR
@STORE
@SETUPS
@click.option("--epochs", default="1,5,10,25,50,200", show_default=True,
              help="Epochs of the reference setup to align the others to (eq. 4.4).")
@click.option("--reference", default="simclr", show_default=True, help="Reference setup A.")
def dynamics_cmd(run_dir, store, setups, epochs, reference):
    """Sorted r_t curves (Fig. 4.1) and the epoch-aligned comparison (Fig. 4.2)."""
    from .dynamics import run_dynamics
    from .outputs import Outputs
    from .store import load_rt

    data = load_rt(store_path(run_dir, store), split_setups(setups))
    _print_result(run_dynamics(data, Outputs(run_dir), ref_setup=reference,
                               ref_epochs=tuple(parse_list(epochs, "--epochs"))))


@cli.command("binomial")
@RUN_DIR
@STORE
@SETUPS
@click.option("--draws", default=10, show_default=True, help="Binomial noise draws for the MAE.")
@click.option("--seed", default=0, show_default=True, help="Seed of the binomial draws.")
def binomial_cmd(run_dir, store, setups, draws, seed):
    """Tables 4.1 (chi-square) and 4.2 (MAE vs binomial noise); Fig. 4.3, 4.4, 4.5, B.1."""
    from .binomial import run_binomial
    from .outputs import Outputs
    from .store import load_rt

    data = load_rt(store_path(run_dir, store), split_setups(setups))
    _print_result(run_binomial(data, Outputs(run_dir), draws=draws, seed=seed))


@cli.command("classes")
@RUN_DIR
@STORE
@SETUPS
def classes_cmd(run_dir, store, setups):
    """Per-class r_t dynamics (Fig. 5.3)."""
    from ..train.grid import load_run_config
    from .classes import run_classes
    from .outputs import Outputs
    from .store import load_rt

    _, meta = load_run_config(run_dir)
    data = load_rt(store_path(run_dir, store), split_setups(setups))
    _print_result(run_classes(data, Outputs(run_dir), meta.get("classes") or []))


EPOCH = click.option("--epoch", type=int, default=None,
                     help="Checkpoint epoch to analyse (default: each setup's last).")
DEVICE = click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
DATA_ROOT = click.option("--data-root", default=None, help="Where the run's dataset is now.")


def _run_setups(run_dir: str, setups: str | None) -> list[str]:
    from ..train.grid import load_run_config
    from .rt import select_setups

    cfg, _ = load_run_config(run_dir)
    return select_setups(cfg, split_setups(setups))


def _cache(run_dir, device, data_root):
    from .features import FeatureCache

    return FeatureCache(run_dir, resolve_device(device), data_root, echo=click.echo)


@cli.command("probe")
@RUN_DIR
@SETUPS
@EPOCH
@DEVICE
@DATA_ROOT
@click.option("--seed", default=0, show_default=True, help="Seed of the probe's init and shuffling.")
def probe_cmd(run_dir, setups, epoch, device, data_root, seed):
    """Table B.1: linear probes on frozen representations, plus random init and raw pixels."""
    from .outputs import Outputs
    from .representations import run_probe

    names = _run_setups(run_dir, setups)
    _print_result(run_probe(_cache(run_dir, device, data_root), Outputs(run_dir), names, epoch,
                            seed, resolve_device(device)))


@cli.command("embed")
@RUN_DIR
@SETUPS
@EPOCH
@DEVICE
@DATA_ROOT
@click.option("--seed", type=int, default=None, help="Model seed to embed (default: the first).")
@click.option("--tsne-seed", default=0, show_default=True)
@click.option("--tsne-method", type=click.Choice(["auto", "opentsne", "sklearn"]), default="auto",
              show_default=True)
@click.option("--shrinkage", default=0.0, show_default=True,
              help="Shrink class covariances towards a scaled identity (for singular ones).")
def embed_cmd(run_dir, setups, epoch, device, data_root, seed, tsne_seed, tsne_method, shrinkage):
    """Fig. 5.1 (t-SNE of a stratified 25% of train) and Fig. 5.2 (KL between class Gaussians)."""
    from .outputs import Outputs
    from .representations import run_embed

    names = _run_setups(run_dir, setups)
    _print_result(run_embed(_cache(run_dir, device, data_root), Outputs(run_dir), names, epoch, seed,
                            tsne_seed, shrinkage, tsne_method))


@cli.command("activations")
@RUN_DIR
@SETUPS
@EPOCH
@DEVICE
@click.option("--seed", type=int, default=None, help="Model seed (default: the first).")
@click.option("--steps", default=1000, show_default=True, help="Gradient-ascent iterations.")
@click.option("--channels", default=36, show_default=True, help="Channels per (setup, block).")
@click.option("--channel-seed", default=0, show_default=True, help="Seed of the channel choice and starts.")
def activations_cmd(run_dir, setups, epoch, device, seed, steps, channels, channel_seed):
    """Fig. 5.4: gradient-ascent pseudo-images per (setup, block), sigmoid-normalized."""
    from .activation_figure import run_activations
    from .outputs import Outputs

    names = _run_setups(run_dir, setups)
    _print_result(run_activations(run_dir, Outputs(run_dir), names, epoch, seed, steps, channels,
                                  channel_seed, resolve_device(device), echo=click.echo))


@cli.command("report")
@RUN_DIR
def report_cmd(run_dir):
    """One self-contained HTML page with every figure and table of RUN_DIR."""
    from .report import build_report

    click.echo(f"report: {build_report(run_dir)}")


@cli.command("all")
@RUN_DIR
@SETUPS
@EPOCH
@DEVICE
@DATA_ROOT
@click.option("--ref-epochs", default="1,5,10,25,50,200", show_default=True,
              help="Reference epochs for `dynamics` (those the run lacks are skipped).")
@click.option("--steps", default=1000, show_default=True, help="Activation-maximization iterations.")
@click.option("--allow-missing", is_flag=True, help="Evaluate what exists when checkpoints are missing.")
@click.option("--shrinkage", default=0.0, show_default=True, help="KL covariance shrinkage (see embed).")
@click.option("--probes", type=int, default=None, help="K for a new bank [1024].")
@click.option("--replays", type=int, default=None, help="M for a new bank [10].")
@click.option("--no-progress", is_flag=True)
def all_cmd(run_dir, setups, epoch, device, data_root, ref_epochs, steps, allow_missing, shrinkage,
            probes, replays, no_progress):
    """Every analysis, then the report: rt, dynamics, binomial, classes, probe, embed, activations."""
    from ..train.grid import load_run_config
    from .activation_figure import run_activations
    from .binomial import run_binomial
    from .classes import run_classes
    from .dynamics import run_dynamics, usable_ref_epochs
    from .outputs import Outputs
    from .report import build_report
    from .representations import run_embed, run_probe
    from .rt import compute_rt
    from .store import load_rt

    dev = resolve_device(device)
    names = _run_setups(run_dir, setups)
    cfg, meta = load_run_config(run_dir)
    click.echo("== rt")
    res = compute_rt(run_dir, setups=names, allow_missing=allow_missing, device=dev,
                     n_probe=probes, n_replays=replays, data_root=data_root,
                     progress=not no_progress, echo=click.echo)
    click.echo(f"evaluated {res['evaluated']} checkpoints in {res['seconds']:.1f} s")
    data = load_rt(store_path(run_dir, None), names)
    out = Outputs(run_dir)
    ref = "simclr" if "simclr" in names else names[0]
    usable = usable_ref_epochs(data, ref, parse_list(ref_epochs, "--ref-epochs"))
    if not usable:  # none of the asked epochs was evaluated: compare at the last one
        usable = (int(data[ref].evaluated_epochs()[-1]),)
    click.echo("== dynamics")
    _print_result(run_dynamics(data, out, ref_setup=ref, ref_epochs=usable))
    click.echo("== binomial")
    _print_result(run_binomial(data, out))
    click.echo("== classes")
    _print_result(run_classes(data, out, meta.get("classes") or []))
    cache = _cache(run_dir, device, data_root)
    click.echo("== probe")
    _print_result(run_probe(cache, out, names, epoch, device=dev))
    click.echo("== embed")
    _print_result(run_embed(cache, out, names, epoch, shrinkage=shrinkage))
    click.echo("== activations")
    _print_result(run_activations(run_dir, out, names, epoch, steps=steps, device=dev, echo=click.echo))
    click.echo(f"report: {build_report(run_dir)}")


def main() -> None:
    run_cli(cli)


if __name__ == "__main__":
    main()
