"""`inspect all`: every analysis in order, each one allowed to fail alone.

The options are checked first (the p0 levels, the reference epochs, --epoch, --redo), then
`rt` evaluates what is new; a UserError there (bad input, a damaged bank or store) stops the
command with exit 2 before any analysis writes. An analysis that cannot be computed for this
run (e.g. KL with fewer images per class than feature dimensions, or a setup that never
reaches an accuracy level) is skipped with its reason, and the outputs an earlier run of it
left are moved to <work>/stale/<analysis>/ (they are not this run's); everything else still
runs and the report lists what was skipped. The list is kept in <work>/skipped.json for the
report. The command exits 0 when everything ran (or was up to date), 3 when something was
skipped, the report included.

Up to date: after an analysis succeeds, <work>/steps.json records a stamp of its inputs
(the r_t store's state, or the sha256 of the checkpoints it reads; its options; the setups;
the dataset; the toolkit's version and STAMP_SCHEMA) and the sha256 of every file it wrote.
A later `inspect all` skips an analysis whose stamp is the same and whose files and
analysis.h5 groups are all still there unchanged (one line says so); anything else (a file
changed by a single `inspect <analysis>` command, an unreadable record, an input that cannot
be read) computes it again. `--redo` computes the named analyses regardless.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .. import artifacts as art
from ..errors import UserError
from .outputs import Outputs, group_digest

STEPS_FILE = "steps.json"
STAMP_SCHEMA = 2  # what a stamp covers; raising it makes every analysis compute again
# Libraries whose version can change what an analysis computes or draws (an absent optional
# one, e.g. openTSNE for `--tsne-method auto`, counts too): part of every stamp
STAMP_LIBRARIES = ("numpy", "scipy", "torch", "scikit-learn", "openTSNE", "h5py", "zarr",
                   "matplotlib", "pandas", "pyarrow")
# The analyses of `inspect all` after rt, in order (the names of --redo and steps.json)
STEP_NAMES = ("dynamics", "binomial", "heterogeneity", "classes", "examples", "probe", "tsne", "kl",
              "activations")
# Which options of `inspect all` each analysis uses (besides the setups): part of its stamp
STEP_OPTIONS = {"dynamics": ("ref_epochs",), "binomial": ("p0s",), "heterogeneity": ("ref_epochs",),
                "classes": (), "examples": ("ref_epochs",), "probe": ("epoch", "device"),
                "tsne": ("epoch", "tsne_method"), "kl": ("epoch", "shrinkage"),
                "activations": ("epoch", "steps", "device")}
STORE_STEPS = ("dynamics", "binomial", "heterogeneity", "classes", "examples")  # read the r_t store
COMMAND_OF = {"tsne": "embed", "kl": "embed"}  # the single command that runs a step


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
    redo: tuple[str, ...] = ()  # analyses computed even when up to date
    store: str | None = None  # the r_t store `rt` fills and the store steps read; None: the default


def parse_redo(text: str | None) -> tuple[str, ...]:
    """`--redo dynamics,kl` or `--redo all` -> step names; UserError naming the valid ones."""
    if text is None:
        return ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return STEP_NAMES
    names = [m for n in names for m in (("tsne", "kl") if n == "embed" else (n,))]  # the command's steps
    unknown = [n for n in names if n not in STEP_NAMES]
    if unknown or not names:
        raise UserError(f"--redo {text!r}: use 'all' or a comma-separated list of "
                        f"{', '.join(STEP_NAMES)} (embed: tsne,kl)")
    return tuple(dict.fromkeys(names))


def run_step(name: str, fn: Callable[[], dict | None], skipped: list[dict], echo,
             fatal: tuple[type[Exception], ...] = ()) -> dict | None:
    """Run one analysis; a failure is recorded as skipped (with its reason), not raised,
    unless it is one of `fatal`."""
    echo(f"== {name}")
    t0 = time.perf_counter()
    try:
        out = fn()
        echo(f"({name}: {time.perf_counter() - t0:.1f} s)")
        return out
    except fatal:
        raise
    except (UserError, ValueError) as e:
        reason = str(e)
    except Exception as e:  # a bug or an unforeseen case: the rest still runs
        reason = (f"{type(e).__name__}: {e} (run `inspect {COMMAND_OF.get(name, name)}` alone "
                  f"for the traceback)")
    from ..progress import close_bars

    close_bars()  # the failed step's bars end before the line saying so
    echo(f"skipped {name}: {reason}")
    skipped.append({"analysis": name, "reason": reason})
    return None


def check_options(ws, setups: list[str], opts: AllOptions) -> None:
    """The checks of `inspect all`'s options that need no store, before any step runs:
    the binomial levels, the reference epochs and --epoch must exist in the run."""
    from .binomial import DEFAULT_P0S, check_args
    from .features import resolve_epoch

    check_args(opts.p0s or DEFAULT_P0S, 1, 0, 1)  # draws, seed, sims: `all` keeps the defaults
    if opts.ref_epochs:
        _check_ref_epochs(ws.run, setups, opts.ref_epochs)
    for s in setups:
        resolve_epoch(ws.run, s, opts.epoch)


def _check_ref_epochs(run: art.Run, setups: list[str], ref_epochs) -> None:
    from .plots import compress_ints

    ref = "simclr" if "simclr" in setups else setups[0]  # as dynamics.resolve_reference
    top = max([run.cfg.setups[ref].epochs] + [max(run.paths.epochs(ref, s) or [0]) for s in run.cfg.seeds])
    bad = [e for e in ref_epochs if not 1 <= e <= top]
    if bad:
        raise UserError(f"--ref-epochs {compress_ints(bad)}: the reference setup {ref} has epochs "
                        f"1-{top} to align at (epoch 0, the initialization, is left out)")


def step_options(opts: AllOptions, name: str) -> dict:
    """The options of `inspect all` that analysis `name` uses (STEP_OPTIONS)."""
    return {k: asdict(opts)[k] for k in STEP_OPTIONS[name]}


def step_stamp(ws, setups: list[str], opts: AllOptions, name: str, store: str | None = None) -> str:
    """The sha256 of everything step `name` reads (STEP_OPTIONS; `store`, the r_t store's
    state, or the checkpoints' sha256; where the dataset is, for the probe images of
    `examples`) and of what it is computed with (`code_version`, STAMP_SCHEMA)."""
    parts = {"schema": STAMP_SCHEMA, "code": code_version(), "step": name, "setups": list(setups),
             "dataset": ws.run.dataset_sha256,
             "options": step_options(opts, name)}
    if name in STORE_STEPS:
        if store is None:
            raise ValueError("a store step's stamp needs the store's state")
        parts["store"] = store
        if name == "examples":
            parts["data"] = opts.data
    else:
        parts["checkpoints"] = checkpoint_record(ws.run, setups, opts.epoch)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of the toolkit's own source (every .py file of the package) and of the
    versions of STAMP_LIBRARIES: a fix to an analysis, or another library, makes every
    earlier result out of date."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    for dist in STAMP_LIBRARIES:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{dist}={version}".encode())
    return h.hexdigest()


def checkpoint_record(run: art.Run, setups: list[str], epoch: int | None) -> dict[str, str | None]:
    """"setup/seed/epoch" -> the manifest's sha256 of every checkpoint the representation
    analyses may read: each setup's chosen epoch, and epoch 0 of every setup (the random-init
    baseline). A file its manifest does not list counts by its size and time."""
    from .features import resolve_epoch
    from .rt_plan import committed_shas

    wanted = {(s, resolve_epoch(run, s, epoch)[0]) for s in setups} | {(s, 0) for s in run.cfg.setups}
    out: dict[str, str | None] = {}
    for s in sorted({s for s, _ in wanted}):
        for seed in run.cfg.seeds:
            shas = committed_shas(run.paths, s, seed)
            for e in sorted(e for name, e in wanted if name == s):
                path = run.paths.checkpoint(s, seed, e)
                stat = path.stat() if path.exists() else None
                out[f"{s}/{seed}/{e}"] = shas.get(e) or (f"unlisted:{stat.st_size}:{stat.st_mtime_ns}"
                                                        if stat else None)
    return out


class StepRecord:
    """<work>/steps.json: per analysis, the stamp of its inputs and the sha256 of the files
    (and the analysis.h5 groups) it wrote when it last succeeded in `inspect all`."""

    def __init__(self, out: Outputs, echo=print):
        self.out, self.path, self.echo = out, out.root / STEPS_FILE, echo

    def _load(self) -> dict:
        try:
            doc = art.read_json(self.path, dict) if self.path.exists() else {}
        except UserError as e:
            self.echo(f"{e}; every analysis is computed again")
            return {}
        steps = doc.get("steps")
        return steps if doc.get("schema") == STAMP_SCHEMA and isinstance(steps, dict) else {}

    def current(self, name: str, stamp: str) -> bool:
        """Whether `name` last succeeded with this stamp and its outputs (files and
        analysis.h5 groups) are all there with the content it wrote."""
        entry = self._load().get(name)
        if not isinstance(entry, dict) or entry.get("stamp") != stamp or not entry.get("files"):
            return False
        files, groups = entry.get("files"), entry.get("groups")
        if not isinstance(files, dict) or not isinstance(groups, dict):
            return False
        if any(h is None or _sha256(self.out.root / f) != h for f, h in files.items()):
            return False
        return all(d is not None and group_digest(self.out.analysis, g) == d for g, d in groups.items())

    def save(self, name: str, stamp: str, files: dict[str, str | None], groups: dict[str, str | None],
             options: dict | None = None) -> None:
        """Record what `name` wrote: the digests taken when it wrote them (`Outputs.hashes`,
        `Outputs.group_digests`), so a file another process changed since is never vouched
        for, and the options it ran with (`options`, to say later which changed). Nothing
        is recorded when a digest is missing."""
        if not files or None in files.values() or None in groups.values():
            self.drop(name)
            return
        entry = {"stamp": stamp, "files": dict(files), "groups": dict(groups)}
        if options is not None:
            entry["options"] = _as_json(options)
        self._update(name, entry)

    def changed_options(self, name: str, options: dict) -> list[str]:
        """'option: before -> now' for each option `name` last succeeded with that differs
        from `options` ([] when none, or when nothing was recorded)."""
        entry = self._load().get(name)
        before = entry.get("options") if isinstance(entry, dict) else None
        if not isinstance(before, dict):
            return []
        now = _as_json(options)
        return [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in now if k in before and before[k] != now[k]]

    def drop(self, name: str) -> None:
        self._update(name, None)

    def _update(self, name: str, entry: dict | None) -> None:
        with self.out.lock():  # read again under the lock: another `all` may have written
            steps = self._load()
            if entry is None and name not in steps:
                return
            steps.pop(name, None)
            if entry is not None:
                steps[name] = entry
            art.write_json_atomic(self.path, {"schema": STAMP_SCHEMA, "steps": steps})


def _as_json(value):
    """`value` as it reads back from JSON (tuples as lists, other objects as strings)."""
    return json.loads(json.dumps(value, default=str))


def _sha256(path: Path) -> str | None:
    try:
        return art.sha256_file(path)
    except OSError:
        return None


@dataclass
class _Session:
    """One `inspect all`: where it writes and what it has found so far."""

    ws: object
    out: Outputs
    record: StepRecord
    echo: Callable
    redo: tuple[str, ...]
    store: str | None = None  # AllOptions.store
    skipped: list[dict] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # up to date, not computed
    partial: list[str] = field(default_factory=list)  # computed in part (their notes say what is missing)
    _store: list[str] = field(default_factory=list)  # the store's state, taken once

    def store_state(self) -> str:
        """The r_t store's state, taken once, before the store steps read it (they share one
        read): data newer than its stamp can only make a later run compute again."""
        from .rtdata import store_state

        if not self._store:
            self._store.append(store_state(self.ws.store_for_reading(self.store)))
        return self._store[0]


def run_tracked(sess: _Session, name: str, fn: Callable[[], dict], stamp: Callable[[], str],
                options: dict | None = None) -> dict | None:
    """One analysis: skipped when up to date, else computed (saying which of its `options`
    changed since it last succeeded here); stamped after success, its earlier outputs moved
    aside after a failure."""
    try:
        mark = stamp()
    except Exception:  # noqa: BLE001  (its inputs cannot be read: compute, and let it say why)
        mark = None
    if mark is not None and name not in sess.redo and sess.record.current(name, mark):
        sess.echo(f"== {name}: up to date (same inputs, options and outputs as when it last ran; "
                  f"--redo {name} computes it again)")
        sess.fresh.append(name)
        return None
    if options is not None and name not in sess.redo and (changed := sess.record.changed_options(name, options)):
        sess.echo(f"note: {name} last ran here with other options ({'; '.join(changed)}); its outputs "
                  f"are made again with these")
    sess.out.hashes.clear()
    sess.out.group_digests.clear()
    res = run_step(name, fn, sess.skipped, sess.echo)
    if res is None:
        sess.record.drop(name)
        moved = sess.out.move_aside(name)
        if moved:
            sess.echo(f"moved the outputs an earlier run of {name} left ({', '.join(moved)}) to "
                      f"{sess.out.root / 'stale' / name}: they are not this run's")
        return None
    if res.get("partial"):
        sess.partial.append(name)
    if mark is not None and not res.get("partial"):  # partial: e.g. no probe images for the grids
        sess.record.save(name, mark, dict(sess.out.hashes), dict(sess.out.group_digests), options)
    else:
        sess.record.drop(name)
    return res


def run_all(ws, rt_step: Callable[[], dict], opts: AllOptions, show: Callable[[dict], None],
            echo=print) -> list[dict]:
    """Every analysis of the workspace, then the report; returns the skipped analyses."""
    setups = ws.run.select(list(opts.setups) if opts.setups else None)
    check_options(ws, setups, opts)
    out = Outputs(ws.dir, echo=echo)
    sess = _Session(ws, out, StepRecord(out, echo), echo, opts.redo, opts.store)
    res = run_step("rt", rt_step, sess.skipped, echo, fatal=(UserError,))
    if res is not None:
        echo(f"evaluated {res['evaluated']} checkpoints in {res['seconds']:.1f} s")
    ws.bind()
    out.tidy()
    out.check_analysis()
    for name, fn in analysis_thunks(ws, out, setups, opts, echo):
        show(run_tracked(sess, name, fn, lambda n=name: step_stamp(
            ws, setups, opts, n, sess.store_state() if n in STORE_STEPS else None),
            {"setups": list(setups), **step_options(opts, name)}) or {})
    finish(sess)
    return sess.skipped


def analysis_thunks(ws, out: Outputs, setups: list[str], opts: AllOptions, echo) -> list:
    """(name, thunk) of every analysis after rt, in STEP_NAMES order. The representation
    cache opens inside the first step that reads it."""
    from .activation_figure import run_activations
    from .analyses import analysis_steps
    from .features import FeatureCache
    from .representations import run_kl, run_probe, run_tsne

    cache = FeatureCache(ws, opts.device, opts.data, opts.verify, echo)
    steps = analysis_steps(ws, out, setups, opts.ref_epochs, echo, store=opts.store, data_opts=opts.data,
                           progress=opts.progress, p0s=opts.p0s)
    steps += [("probe", lambda: run_probe(cache, out, setups, opts.epoch, device=opts.device)),
              ("tsne", lambda: run_tsne(cache, out, setups, opts.epoch, method=opts.tsne_method)),
              ("kl", lambda: run_kl(cache, out, setups, opts.epoch, shrinkage=opts.shrinkage)),
              ("activations", lambda: run_activations(ws, out, setups, opts.epoch, steps=opts.steps,
                                                      device=opts.device, verify=opts.verify,
                                                      progress=opts.progress))]
    return steps


def finish(sess: _Session) -> None:
    """skipped.json, the report (a failure of which is one more skip), the summary line."""
    from .report import build_report

    record = sess.out.root / "skipped.json"
    with sess.out.lock():
        art.write_json_atomic(record, sess.skipped)
    res = run_step("report", lambda: {"report": build_report(sess.ws, list(sess.skipped))},
                   sess.skipped, sess.echo)
    if res is None:
        with sess.out.lock():
            art.write_json_atomic(record, sess.skipped)
    else:
        sess.echo(f"report: {res['report']}")
    sess.echo(summary(sess, record))


def summary(sess: _Session, record: Path) -> str:
    fresh = f"; {len(sess.fresh)} up to date ({', '.join(sess.fresh)})" if sess.fresh else ""
    if sess.partial:
        fresh += f"; computed in part: {', '.join(sess.partial)} (the notes say what is missing)"
    if not sess.skipped:
        return f"done: no analysis skipped{fresh}"
    names = ", ".join(s["analysis"] for s in sess.skipped)
    return f"done with {len(sess.skipped)} skipped ({names}){fresh}; the reasons are in {record} and the report"
