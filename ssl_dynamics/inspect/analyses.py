"""The analyses that read only the r_t store, as named steps with their inputs loaded once."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .outputs import Outputs
from .rtdata import SetupRt, load_rt
from .workspace import Workspace


def store_data(ws: Workspace, setups: list[str] | None, store: str | Path | None = None,
               out: Outputs | None = None) -> dict[str, SetupRt]:
    """The r_t of `setups` (default: every setup in the store); a name the run does not have
    is refused as such, before the store is read. `out` records which store was read (and
    its state) and says when the store lacks checkpoints the run has (or holds changed ones)."""
    if setups:
        ws.run.select(setups)
    path = ws.store_for_reading(store)
    return load_rt(path, setups) if out is None else read_noted(ws, path, setups, out)


def read_noted(ws: Workspace, path: Path, setups: list[str] | None, out: Outputs) -> dict[str, SetupRt]:
    """The r_t of `setups` (default: all) from the store at `path`, noted in `out`: which
    store, and a snapshot of what it held, taken before reading (a checkpoint evaluated
    meanwhile makes the record older, never newer); and a note when the store lacks
    checkpoints the run has, or holds changed ones. The evaluated checkpoints are read once
    for both."""
    from .rt_plan import evaluations, store_behind

    held = evaluations(path, setups or None)
    data = load_rt(path, setups)
    out.note_store(path, data, held.snapshot(), ws.run.root)
    if (behind := store_behind(ws.run, path, list(data), held)) is not None:
        out.echo(f"note: {behind}")
    return data


def analysis_steps(ws: Workspace, out: Outputs, setups: list[str], ref_epochs, echo,
                   store: str | Path | None = None, data_opts: dict | None = None,
                   progress: bool = True, p0s=None) -> list[tuple[str, Callable[[], dict]]]:
    """(name, thunk) for dynamics, binomial, heterogeneity, classes and examples; the store is
    read on first use. `data_opts` says where the dataset is (for the probe images of
    `examples`)."""
    from .binomial import DEFAULT_P0S, run_binomial
    from .classes import run_classes
    from .dynamics import run_dynamics
    from .examples import ExampleOptions
    from .export import examples_for_workspace
    from .heterogeneity import run_heterogeneity

    loaded: dict[str, dict[str, SetupRt]] = {}

    def data() -> dict[str, SetupRt]:
        if "rt" not in loaded:
            loaded["rt"] = store_data(ws, setups, store, out)
        return loaded["rt"]

    def examples() -> dict:
        opts = ExampleOptions(ref_epochs=tuple(ref_epochs) if ref_epochs else None, progress=progress)
        return examples_for_workspace(ws, out, setups, store, opts, data_opts, echo, data())

    return [("dynamics", lambda: run_dynamics(data(), out, ref_epochs=ref_epochs)),
            ("binomial", lambda: run_binomial(data(), out, p0s or DEFAULT_P0S)),
            ("heterogeneity", lambda: run_heterogeneity(data(), out, ref_epochs=ref_epochs)),
            ("classes", lambda: run_classes(data(), out, ws.run.classes)),
            ("examples", examples)]
