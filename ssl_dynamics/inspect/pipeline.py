"""`inspect all`: every analysis in order, each one allowed to fail alone.

An analysis that cannot be computed for this run (e.g. KL with fewer images per class
than feature dimensions, or a setup that never reaches an accuracy level) is skipped with
its reason; everything else still runs and the report lists what was skipped. The list
is kept in <work>/skipped.json for the report. The command exits 0 when everything ran,
3 when something was skipped.
"""
from __future__ import annotations

import time

from dataclasses import dataclass, field
from typing import Callable

from .. import artifacts as art
from ..errors import UserError


@dataclass(frozen=True)
class AllOptions:
    """What `inspect all` passes to the single analyses (each keeps its own defaults)."""

    setups: tuple[str, ...] | None = None
    epoch: int | None = None  # representation analyses; None: the thesis's epoch or the last
    ref_epochs: tuple[int, ...] | None = None  # None: the thesis's that exist, else a spread
    steps: int = 1000  # activation maximization
    shrinkage: float = 0.0
    tsne_method: str = "thesis"
    p0s: tuple[float, ...] | str | None = None  # binomial levels; None: the thesis's
    device: str = "cpu"
    verify: bool = True
    progress: bool = True
    data: dict = field(default_factory=dict)


def run_step(name: str, fn: Callable[[], dict | None], skipped: list[dict], echo) -> dict | None:
    """Run one analysis; a failure is recorded as skipped (with its reason), not raised."""
    echo(f"== {name}")
    t0 = time.perf_counter()
    try:
        out = fn()
        echo(f"({name}: {time.perf_counter() - t0:.1f} s)")
        return out
    except (UserError, ValueError) as e:
        reason = str(e)
    except Exception as e:  # a bug or an unforeseen case: the rest still runs
        reason = f"{type(e).__name__}: {e} (run `inspect {name}` alone for the traceback)"
    echo(f"skipped {name}: {reason}")
    skipped.append({"analysis": name, "reason": reason})
    return None


def run_all(ws, rt_step: Callable[[], dict], opts: AllOptions, show: Callable[[dict], None],
            echo=print) -> list[dict]:
    """Every analysis of the workspace, then the report; returns the skipped analyses."""
    from .activation_figure import run_activations
    from .analyses import analysis_steps
    from .features import FeatureCache
    from .outputs import Outputs
    from .report import build_report
    from .representations import run_kl, run_probe, run_tsne

    skipped: list[dict] = []
    out = Outputs(ws.dir)
    setups = ws.run.select(list(opts.setups) if opts.setups else None)
    res = run_step("rt", rt_step, skipped, echo)
    if res is not None:
        echo(f"evaluated {res['evaluated']} checkpoints in {res['seconds']:.1f} s")
    for name, fn in analysis_steps(ws, out, setups, opts.ref_epochs, echo, data_opts=opts.data,
                                   progress=opts.progress, p0s=opts.p0s):
        show(run_step(name, fn, skipped, echo) or {})
    cache = FeatureCache(ws, opts.device, opts.data, opts.verify, echo)
    steps = [("probe", lambda: run_probe(cache, out, setups, opts.epoch, device=opts.device)),
             ("tsne", lambda: run_tsne(cache, out, setups, opts.epoch, method=opts.tsne_method)),
             ("kl", lambda: run_kl(cache, out, setups, opts.epoch, shrinkage=opts.shrinkage)),
             ("activations", lambda: run_activations(ws, out, setups, opts.epoch, steps=opts.steps,
                                                     device=opts.device, verify=opts.verify,
                                                     progress=opts.progress))]
    for name, fn in steps:
        show(run_step(name, fn, skipped, echo) or {})
    art.write_json_atomic(ws.dir / "skipped.json", skipped)
    echo(f"report: {build_report(ws, skipped)}")
    return skipped
