"""`inspect`: phase two from the command line (a thin layer over the inspect modules).

Never trains. `inspect rt` evaluates checkpoints into the r_t store; every other command
reads only stored arrays (or the representation cache), so re-plotting takes seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..cli_util import EXIT_PARTIAL, parse_int_list, parse_levels, run_cli, split_names
from ..devices import resolve_device
from . import cli_analyses
from ..errors import UserError
from .cli_options import (BANK, DATA, DEVICE, EPOCH_ALL, NO_PROGRESS, NO_VERIFY, PRECISION, RUN_DIR, SETUP,
                          SHRINKAGE, STEPS, STORE, WORK, options, show, workspace)

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
      inspect submit rt RUN_DIR   `rt` as cluster (or local) jobs, in shards
    Outputs go to RUN_DIR/inspect/ (figures/, tables/, analysis.h5, report/), or to --work DIR.
    Exit status: 0 done, 1 jobs failed (their logs named), 2 bad input or something to fix
    (one line on stderr), 3 `all` skipped some analyses, 130 interrupted (work done is kept).
    """


def _rt_step(ws, setups, epochs, shard, allow_missing, bank, probes, replays, bank_seed,
             simclr_batch, dataset, data_root, device, precision, no_verify, no_progress, store=None,
             group="auto"):
    from .rt import BankRequest, EvalOptions, Selection, compute_rt, parse_shard
    from .rt_plan import resolve_group

    select = Selection(tuple(split_names(setups) or ()) or None,
                       tuple(parse_int_list(epochs, "--epochs")) if epochs is not None else None,
                       parse_shard(shard), allow_missing)
    request = BankRequest(probes, replays, bank_seed, simclr_batch, Path(bank) if bank else None)
    dev = resolve_device(device)
    opts = EvalOptions(dev, precision == "bf16", not no_verify, not no_progress,
                       resolve_group(group, dev, ws.run.cfg.backbone))
    return lambda: compute_rt(ws, select, opts, request, store,
                              {"dataset": dataset, "data_root": data_root}, echo=click.echo)


@cli.command("rt")
@options(RUN_DIR, WORK, STORE, SETUP, *DATA, DEVICE, PRECISION, NO_VERIFY, NO_PROGRESS)
@click.option("--epochs", default=None, help="Only these epoch numbers (a comma-separated list; default: all).")
@click.option("--shard", default=None, metavar="I/N",
              help="Take shard I of N (a checkpoint's shard depends on its setup, seed and epoch only).")
@click.option("--allow-missing", is_flag=True, help="Evaluate what exists when checkpoints are missing.")
@options(*BANK)
def rt_cmd(run_dir, work, store, setups, dataset, data_root, device, precision, no_verify, no_progress,
           epochs, shard, allow_missing, bank, probes, replays, bank_seed, simclr_batch, group):
    """Evaluate every checkpoint of RUN_DIR on the bank into the r_t store (resumable)."""
    ws = workspace(run_dir, work)
    step = _rt_step(ws, setups, epochs, shard, allow_missing, bank, probes, replays, bank_seed,
                    simclr_batch, dataset, data_root, device, precision, no_verify, no_progress, store,
                    group)
    res = step()
    ws.bind()
    waited = res.get("waited_s", {})
    click.echo(f"evaluated {res['evaluated']} checkpoints in {res['seconds']:.1f} s "
               f"({res['checkpoints_per_s']:.2f} ckpt/s, {res['images_per_s']:.0f} images/s; "
               f"waited {waited.get('checkpoints', 0):.1f} s for the loader, "
               f"{waited.get('writes', 0):.1f} s for the store) -> {res['store']}")


@cli.command("report")
@options(RUN_DIR, WORK)
def report_cmd(run_dir, work):
    """One self-contained HTML page with every figure and table of the work folder."""
    from .outputs import Outputs
    from .report import build_report

    if work is not None and not Path(work).is_dir():  # a report of nothing: no new folder for it
        raise UserError(f"--work {work}: no such folder (its analyses write it; the report reads it)")
    ws = workspace(run_dir, work)
    Outputs(ws.dir).tidy()
    try:
        page = build_report(ws)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # UserError, OSError: run_cli's
        raise UserError(f"cannot build the report of {ws.dir}: {type(e).__name__}: {e}") from None
    empty = not any(any(d.glob("*")) for d in (ws.dir / "figures", ws.dir / "tables") if d.is_dir())
    click.echo(f"report: {page}" + (" (no analysis outputs yet: run `inspect all` first)" if empty else ""))


@cli.command("all")
@options(RUN_DIR, WORK, STORE, SETUP, EPOCH_ALL, DEVICE, PRECISION, *DATA, NO_VERIFY, NO_PROGRESS, *BANK)
@click.option("--ref-epochs", default=None,
              help="Reference epochs of `dynamics`, `heterogeneity` and `examples` (a list; default: the thesis's that exist).")
@click.option("--steps", type=STEPS, default=1000, show_default=True,
              help="Activation-maximization iterations.")
@click.option("--allow-missing", is_flag=True, help="Evaluate what exists when checkpoints are missing.")
@click.option("--shrinkage", type=SHRINKAGE, default=0.0, show_default=True, help="KL covariance shrinkage (see embed).")
@click.option("--tsne-method", type=click.Choice(["thesis", "opentsne", "sklearn", "auto"]),
              default="thesis", show_default=True, help="t-SNE implementation (see `inspect embed --help`).")
@click.option("--p0", "levels", default=None,
              help="Accuracy levels of the binomial tables (a list, default 0.25,0.5,0.75), or "
                   "'range': each setup's own (short runs, the demo).")
@click.option("--redo", default=None, metavar="STEP[,STEP]|all",
              help="Compute these analyses even when they are up to date (dynamics, binomial, "
                   "heterogeneity, classes, examples, probe, tsne, kl (embed: both), activations, or all).")
def all_cmd(run_dir, work, store, setups, epoch, device, precision, dataset, data_root, no_verify,
            no_progress, bank, probes, replays, bank_seed, simclr_batch, group, ref_epochs, steps,
            allow_missing, shrinkage, tsne_method, levels, redo):
    """Every analysis, then the report. An analysis whose inputs, options and outputs are
    unchanged since it last ran here is up to date and not computed again (--redo). One that
    cannot be computed is skipped with its reason (listed in the output and the report), the
    outputs an earlier run of it left are moved to WORK/stale/, and the command exits 3.
    Bad options, or a bank or store that `rt` refuses, stop it first (exit 2)."""
    from .pipeline import AllOptions, parse_redo, run_all

    ws = workspace(run_dir, work)
    names = ws.run.select(split_names(setups))
    rt = _rt_step(ws, tuple(names), None, None, allow_missing, bank, probes, replays, bank_seed,
                  simclr_batch, dataset, data_root, device, precision, no_verify, no_progress, store, group)
    refs = parse_int_list(ref_epochs, "--ref-epochs")
    opts = AllOptions(tuple(names), epoch, tuple(refs) if refs else None, steps, shrinkage,
                      tsne_method, parse_levels(levels), resolve_device(device), not no_verify,
                      not no_progress, {"dataset": dataset, "data_root": data_root}, parse_redo(redo),
                      store)
    if run_all(ws, rt, opts, show, echo=click.echo):
        sys.exit(EXIT_PARTIAL)


from .submit_cli import submit as _submit  # noqa: E402  (`inspect submit rt ...`)

for _command in cli_analyses.COMMANDS:
    cli.add_command(_command)

cli.add_command(_submit)


def main() -> None:
    run_cli(cli, "what was finished is kept (evaluated checkpoints, written outputs); rerun the same "
                 "command to resume")


if __name__ == "__main__":
    main()
