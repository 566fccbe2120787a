"""What the `inspect` commands share: options, the work folder, printing a result."""
from __future__ import annotations

import click

from .workspace import open_workspace

def not_empty(ctx, param, value):
    """A path option given as '' is a mistake (an unset shell variable), never the default."""
    if value is not None and not str(value).strip():
        raise click.BadParameter("an empty path; give one, or leave the option out")
    return value


RUN_DIR = click.argument("run_dir")
WORK = click.option("--work", default=None, metavar="DIR", callback=not_empty,
                    help="Where phase-two outputs go (default RUN_DIR/inspect; use for read-only archives).")
STORE = click.option("--store", default=None, callback=not_empty,
                     help="r_t store: *.zarr or *.h5 (default: WORK's rt.zarr, else its rt.h5, "
                          "else the run's own; `rt` makes WORK/rt.zarr when WORK has none).")
SETUP = click.option("--setup", "setups", multiple=True, metavar="NAME",
                     help="Setup(s) to include (repeatable, or comma-separated; default: all).")
EPOCH = click.option("--epoch", type=int, default=None,
                     help="The one checkpoint epoch to analyse (default: the thesis's epoch when the "
                          "run has it, else each setup's last).")
EPOCH_ALL = click.option("--epoch", type=int, default=None,
                         help="The checkpoint epoch of probe, embed (t-SNE, KL) and activations (default: "
                              "the thesis's epoch when the run has it, else each setup's last); the r_t "
                              "analyses use every evaluated epoch.")
# Seeds of random streams: numpy and torch take them as 64-bit integers; a negative or larger
# one is refused by click with the option's name instead of an overflow deep inside.
RNG_SEED = click.IntRange(0, 2**63 - 1)
TSNE_SEED = click.IntRange(0, 2**32 - 1)  # scikit-learn's random_state is a 32-bit seed
# Shrinkage weight of a covariance towards a scaled identity: a convex combination.
SHRINKAGE = click.FloatRange(0.0, 1.0)
# gradient-ascent iterations: the thesis ran 1,000; a million is hours per image on a GPU,
# and larger counts overflow the per-step records
STEPS = click.IntRange(0, 1_000_000)
DEVICE = click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
DATA = [click.option("--dataset", default=None, help="Where the run's dataset is now, e.g. "
                                                     "imagefolder:<new path> (its checksum must match)."),
        click.option("--data-root", default=None, help="Where CIFAR-10 is now (checksum checked).")]
NO_VERIFY = click.option("--no-verify", is_flag=True,
                         help="Skip checking each checkpoint's sha256 against its manifest (faster).")
NO_PROGRESS = click.option("--no-progress", is_flag=True, help="Hide progress bars.")
PRECISION = click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
                         help="Evaluation arithmetic of `rt`: bf16 autocast is faster on a GPU; one store "
                              "holds one precision per setup.")

# how `rt`, `all` and `submit rt` choose the bank, and how many checkpoints share a pass
BANK = [click.option("--bank", default=None, callback=not_empty,
                     help="Bank file (default WORK/bank.h5; built on first use)."),
        click.option("--probes", type=int, default=None,
                     help="K: probe images in a new bank [1024, or every training image when fewer]."),
        click.option("--replays", type=int, default=None, help="M: augmentations per probe image [10]."),
        click.option("--bank-seed", type=RNG_SEED, default=None, help="Seed of the probe choice and replays [0]."),
        click.option("--simclr-batch", type=int, default=None,
                     help="B: SimCLR views are classified within fixed batches of B images "
                          "[the simclr setup's training batch size, 256 in the thesis]; K must be a "
                          "multiple of B."),
        click.option("--group", default="auto", show_default=True,
                     help="Checkpoints of one setup evaluated per forward pass as one grouped network: "
                          "auto (1: one at a time, the fastest measured) or a number; 1 = one at a time.")]


def options(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def show(res: dict) -> None:
    from .outputs import format_table

    for name, rows in res.get("tables", {}).items():
        click.echo(f"\n{name}\n{format_table(rows)}")
    for note in res.get("notes", []):
        click.echo(f"note: {note}")
    for fig in res.get("figures", []):
        click.echo(f"figure: {fig}")


def workspace(run_dir, work):
    return open_workspace(run_dir, work, echo=click.echo)
