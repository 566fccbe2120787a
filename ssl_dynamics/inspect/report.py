"""One self-contained HTML page with every figure and table that exists for a run.

Images are embedded as base64 PNG, so the page can be mailed or archived alone. Each item
gets a sentence saying what it shows, with the run's own numbers (representation dimension,
channels per block, image step) read from the outputs it describes; the run's configuration
closes the page.

The box of analyses that could not be computed comes from <work>/skipped.json, which only
`inspect all` writes. An entry is left out once that analysis has since succeeded on its own
(e.g. `inspect embed --shrinkage 1e-3` after `inspect all` skipped kl): every file it always
writes (ANALYSIS_OUTPUTS) exists and is newer than skipped.json. The outputs of an analysis
still in the box are not shown, nor is an output that an earlier run of its analysis left
(e.g. the image grids of a setup that the last `inspect examples` did not include:
`outputs.stale_outputs`); the page lays out the setups that its outputs hold. An output that
cannot be read (a damaged table, a file that is not a PNG) is named in its section instead;
only the tables this page knows are read.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .. import artifacts as art
from ..errors import UserError
from .binomial_rows import ordinal, spread_step
from .outputs import STEP_OUTPUTS, located_store, matches, stale_outputs, store_key, stores_of_outputs, work_lock
from .workspace import Workspace

if TYPE_CHECKING:
    from .rt_plan import Evaluations

# (name, title, what it shows) in reading order; figures and tables share the namespace.
# "{setup}" in a name repeats the section for every setup of the run ({label}: its display name).
SECTIONS = [
    ("fig4_1_sorted_rt", "Fig. 4.1: sorted r_t curves",
     "For each setup, r_t(x) of every probe image sorted ascending, at several epochs: the "
     "probability over seeds and augmentations that the image is classified correctly."),
    ("fig4_2_aligned", "Fig. 4.2: epoch-aligned comparison",
     "Sorted r_t of every setup at the epoch whose mean r_t is closest to the reference "
     "setup's at each reference epoch (eq. 4.4)."),
    ("aligned_epochs", "Aligned epochs", "The epoch of each setup matched to each reference epoch."),
    ("table4_1_chisquare", "Table 4.1: chi-square tests against binomial noise",
     "Counts of correct seeds per image for one fixed augmentation versus Binomial(N, p̂0). "
     "The thesis-faithful statistic uses every bin; its textbook p-value is invalid where expected "
     "counts are tiny, so p_thesis_sim gives its p-value against datasets simulated with every "
     "image equally hard. The pooled tests merge tail bins until every expected count is at least "
     "5. rho measures directly how different the images are (0 = equally hard)."),
    ("fig4_3_binomial_counts", "Fig. 4.3: observed vs binomial counts",
     "How many images were classified correctly by n of N seeds, against the binomial expectation."),
    ("fig4_3_sorted_rtilde", "Fig. 4.3 (as drawn in the thesis): sorted r̃_t vs binomial noise",
     "r̃_t for one fixed augmentation, sorted over images (solid), beside sorted binomial noise "
     "with the same mean (dashed), at the first epochs reaching each p0."),
    ("first_second_diff", "First vs second view, per epoch",
     "Mean absolute difference and correlation between r_t (and r̃_t) from first and second views."),
    ("table4_2_mae", "Table 4.2: MAE to binomial noise, thesis-faithful and calibrated",
     "How to read it: the thesis compared each setup's sorted r_t with sorted binomial noise and "
     "read a small MAE (column mae) as 'difficulty behaves like noise'. But r_t averages N seeds "
     "times M augmentations, so even if every image were exactly as hard as every other it would "
     "be much narrower than that noise, so with equally hard images the MAE takes a value set by "
     "the design: about 0.049 for 30 seeds, 10 augmentations, 1024 images at p = 0.4, but about "
     "0.005 when the augmentations are identical (no augmentation). null_mae is that value for "
     "each row's own design. z and p say how far the observed MAE lies from it: a tiny p means "
     "the images really differ in difficulty (z < 0: some extra spread pulled r_t towards the "
     "noise; z > 0: more spread pushed it beyond). The MAE is not monotone in that spread and "
     "crosses null_mae on the way, so a large p does NOT show equally hard images; read rho "
     "(Table 4.1, inspect heterogeneity) for how different the images are, and compare setups "
     "by rho, not by the MAE, z or p. The *_within columns ask the same with the observed "
     "correlation between the augmentations of one image under one seed kept."),
    ("fig4_4_binomial_noise", "Fig. 4.4: r_t vs binomial noise", "Sorted r_t beside sorted binomial noise."),
    ("fig4_5_aug_spread", "Fig. 4.5: spread over augmentations",
     "Evenly spaced images of the r_t-sorted probe set (the step is on the x-axis): one dot per "
     "augmentation (r̃), the line is r_t."),
    ("figB_1_first_second", "Fig. B.1: first vs second SimCLR view",
     "r_t and r̃_t computed from the first views against those from the second views."),
    ("heterogeneity", "Heterogeneity of difficulty at the aligned epochs",
     "Beta-binomial intra-class correlation rho of the counts of correct seeds per image: 0 means "
     "every image is equally hard, 1 that every image is learned by all seeds or by none."),
    ("fig_heterogeneity", "How different the images are, by setup",
     "rho against the mean r_t (left) and at the epochs aligned to the reference setup (right), "
     "with 95% intervals."),
    ("hardness_agreement", "Do setups find the same images hard?",
     "Spearman rank correlation of per-image r_t between two setups at epochs aligned by mean r_t."),
    ("fig_hardness_agreement", "Agreement of hardness between setups",
     "Spearman correlation of per-image r_t for every pair of setups at each aligned epoch."),
    ("fig5_3_class_rt", "Fig. 5.3: per-class dynamics", "Mean r_t of the probe images of each class by epoch."),
    ("class_rt", "Per-class r_t", "Mean r_t per class at the last epoch and when it first reaches 0.5."),
    ("examples_summary", "Per-example difficulty, by setup",
     "From the stored correctness of every seed and replay: the epoch from which an image "
     "stays learned, forgetting events (correct to incorrect between consecutive epochs), data-"
     "map coordinates and the epochs aligned to the reference; the per-image values are in "
     "tables/examples.parquet (and .csv)."),
    ("examples_cartography", "Data maps (dataset cartography)",
     "Each probe image at its variability (std over epochs) and confidence (mean over epochs) "
     "of the true-class probability, coloured by the share of epochs it was correct."),
    ("examples_forgetting", "Forgetting events",
     "How often a (seed, replay, image) went from correct to incorrect between consecutive "
     "epochs; 'unforgettable' images were learned and never forgotten by any seed or replay."),
    ("examples_hardest_{setup}", "Hardest probe images: {label}",
     "The probe images this setup found hardest, with their true class (and, for random "
     "labels, the label trained on) and the value of the ordering measure."),
    ("examples_easiest_{setup}", "Easiest probe images: {label}",
     "The probe images this setup found easiest, captioned as above."),
    ("examples_rank_agreement", "Cross-setup agreement of first-learned epochs",
     "Spearman rank correlation between setups of the images' median first-learned epoch: "
     "do the setups learn the same images first?"),
    ("tableB_1_probe", "Table B.1: linear probes",
     "Accuracy of a linear classifier on the frozen representation of the backbone (its "
     "dimension: column dim), with a randomly initialised network and raw pixels as baselines."),
    ("fig5_1_tsne", "Fig. 5.1: t-SNE of the representation",
     "2-D t-SNE of a class-stratified quarter of the training set, coloured by true class."),
    ("fig5_2_kl", "Fig. 5.2: KL divergence between class Gaussians",
     "KL(N_y || N_z) between Gaussians fitted to each class's representations (log colour scale)."),
    ("kl_pairs", "KL divergence per pair of classes", "The values of Fig. 5.2, one row per pair."),
    ("fig5_4_activations", "Fig. 5.4: activation maximization",
     "Inputs that maximize single channels of each block (how many: the table below), found by "
     "gradient ascent, shown sigmoid-normalized."),
    ("activations", "Activation maximization runs", "Channels per block and how many never fired."),
]
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;height:auto;border:1px solid #ddd}
.scroll{max-width:100%;overflow-x:auto;margin:0.5em 0}
table{border-collapse:collapse;font-size:0.85em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}th{background:#f3f3f3}
td.text{text-align:left}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.8em;white-space:pre-wrap;word-break:break-all}
.what{color:#555}.skipped{background:#fff4e5;border-left:4px solid #f0a020;padding:0.5em 1em}"""
SIGNIFICANT = 4  # digits shown for floats in the page (the CSV keeps full precision)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first 8 bytes of every PNG file
# Row fields of the tables that name a setup: the setups the outputs hold
SETUP_FIELDS = ("setup", "model", "ref_setup", "setup_a", "setup_b")

# The files (relative to the work folder) that each step of `inspect all` always writes when
# it succeeds; one tuple of alternatives is enough. Outputs written only in some runs (Fig.
# 4.5, Fig. B.1, ...) are not listed, nor is `rt`: its store's files are written as soon as
# an evaluation starts (or is submitted), so a skipped rt stays in the box.
ANALYSIS_OUTPUTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dynamics": (("figures/fig4_1_sorted_rt.png", "figures/fig4_2_aligned.png",
                  "tables/aligned_epochs.json"),),
    "binomial": (("figures/fig4_3_binomial_counts.png", "figures/fig4_3_sorted_rtilde.png",
                  "figures/fig4_4_binomial_noise.png", "tables/table4_1_chisquare.json",
                  "tables/table4_2_mae.json"),),
    "heterogeneity": (("figures/fig_heterogeneity.png", "tables/heterogeneity.json",
                       "tables/hardness_agreement.json"),),
    "classes": (("figures/fig5_3_class_rt.png", "tables/class_rt.json"),),
    "examples": (("figures/examples_cartography.png", "figures/examples_forgetting.png",
                  "tables/examples_summary.json", "tables/examples_rank_agreement.json"),),
    "probe": (("tables/tableB_1_probe.json",),),
    "tsne": (("figures/fig5_1_tsne.png",),),
    "kl": (("figures/fig5_2_kl.png", "tables/kl_pairs.json"),),
    "activations": (("figures/fig5_4_activations.png", "tables/activations.json"),),
}


def still_skipped(work: Path, skipped: list[dict], since_ns: int) -> list[dict]:
    """The entries of `skipped` whose analysis has not succeeded since `since_ns` (the
    mtime of skipped.json): not every file of one alternative in ANALYSIS_OUTPUTS exists
    with a newer mtime. Unknown analyses stay listed."""
    def done(name) -> bool:
        for paths in ANALYSIS_OUTPUTS.get(name, ()):
            try:
                if min((work / p).stat().st_mtime_ns for p in paths) > since_ns:
                    return True
            except OSError:  # one of them is missing
                continue
        return False

    return [s for s in skipped if not (isinstance(s, dict) and done(s.get("analysis")))]


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _table_rows(work: Path, name: str) -> list[dict]:
    return json.loads((work / "tables" / f"{name}.json").read_text()).get("rows", [])


def probe_text(work: Path) -> str | None:
    """Table B.1, with the dimension D of the representation from the table's dim column."""
    dims = {r.get("dim") for r in _table_rows(work, "tableB_1_probe") if r.get("model") != "raw_pixels"}
    if len(dims) != 1 or not isinstance(d := dims.pop(), int):
        return None
    return (f"Accuracy of a linear classifier on the frozen {d}-d representation of the backbone, "
            f"with a randomly initialised network and raw pixels as baselines.")


def activations_text(work: Path) -> str | None:
    """Fig. 5.4, with the channels per block from the activations table: those maximized
    (as many as could fire) of those asked for (--channels, at most the block's width)."""
    rows = _table_rows(work, "activations")
    blocks: dict[int, list[dict]] = {}
    for r in rows:
        blocks.setdefault(int(r["block"]), []).append(r)
    if not blocks:
        return None
    parts = []
    for b, rs in sorted(blocks.items()):
        live = [int(r["channels"]) for r in rs]
        asked = {int(r["channels"]) + int(r["no_live_channel"]) for r in rs
                 if r.get("no_live_channel") is not None}
        if len(asked) == 1 and (a := asked.pop()) != min(live):
            parts.append(f"block {b}: {_span(live)} of {a}")
        else:
            parts.append(f"block {b}: {_span(live)}")
    return ("Inputs that maximize single channels, found by gradient ascent, shown "
            "sigmoid-normalized. Channels per setup and block (those that could fire, of those "
            "asked for): " + ", ".join(parts) + ".")


def spread_text(work: Path) -> str | None:
    """Fig. 4.5, with the image step of each setup from the `binomial` group of analysis.h5:
    K = the setup's probe images, checked against the number of images drawn."""
    import h5py

    from .plots import setup_label

    found: dict[str, tuple[int, int]] = {}
    with h5py.File(work / "analysis.h5", "r") as f:
        g = f["binomial"]
        order = json.loads(g.attrs["setups"]) if "setups" in g.attrs else sorted(g)
        for s in order:
            sg = g.get(s)
            if not isinstance(sg, h5py.Group) or "probe" not in sg:
                continue
            drawn = [sg[n]["order"].shape[0] for n in sg if n.startswith("spread_")]
            if not drawn:
                continue
            k = int(sg["probe"].shape[0])
            step = spread_step(k)
            if any(n != -(-k // step) for n in drawn):
                return None  # drawn with another rule: say nothing rather than something false
            found[s] = (step, k)
    if not found:
        return None
    tail = ": one dot per augmentation (r̃), the line is r_t."
    if len(set(found.values())) == 1:
        step, k = next(iter(found.values()))
        which = "Every image" if step == 1 else f"Every {ordinal(step)} image"
        return f"{which} of the r_t-sorted probe set (K = {k} images){tail}"
    each = "; ".join(f"{setup_label(s)}: every {ordinal(step)} of K = {k}"
                     for s, (step, k) in found.items())
    return f"Evenly spaced images of the r_t-sorted probe set ({each}){tail}"


# Sections whose sentence states numbers of the run: read from the outputs themselves (None,
# or outputs that cannot be read: the generic sentence of SECTIONS).
DESCRIBE = {"tableB_1_probe": probe_text, "fig5_4_activations": activations_text,
            "fig4_5_aug_spread": spread_text}


def describe(name: str, what: str, work: Path) -> str:
    fn = DESCRIBE.get(name)
    if fn is None:
        return what
    try:
        return fn(work) or what
    except (OSError, KeyError, ValueError, TypeError):
        return what


def _fmt(v) -> tuple[str, bool]:
    """(cell text, is text) for one value."""
    if isinstance(v, float):
        return f"{v:.{SIGNIFICANT}g}", False
    if isinstance(v, (int, bool)) or v is None:
        return ("" if v is None else str(v)), False
    return html.escape(str(v)), True


def table_html(rows: list[dict], columns: list[str] | None = None, limit: int = 60) -> str:
    """A table in the CSV's column order, floats rounded, scrolling inside its box."""
    if not rows:
        return "<p>(empty)</p>"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows[:limit]:
        cells = [_fmt(r.get(c)) for c in cols]
        body.append("<tr>" + "".join(f"<td class=text>{t}</td>" if is_text else f"<td>{t}</td>"
                                     for t, is_text in cells) + "</tr>")
    more = f"<p>… {len(rows) - limit} more rows in the CSV.</p>" if len(rows) > limit else ""
    return f"<div class=scroll><table><tr>{head}</tr>{''.join(body)}</table></div>{more}"


def _section(name: str, title: str, what: str, figures: Path, tables: Path,
             hidden: set[str] = frozenset()) -> str | None:
    """A figure (else its table) with its title and sentence; None when neither is there
    or both are `hidden` ("figures/<name>", "tables/<name>")."""
    png, tab = figures / f"{name}.png", tables / f"{name}.json"
    png_ok = png.exists() and f"figures/{name}" not in hidden
    if not (png_ok or (tab.exists() and f"tables/{name}" not in hidden)):
        return None
    what = describe(name, what, figures.parent)
    head = f"<h2>{html.escape(title)}</h2>" + (f"<p class=what>{html.escape(what)}</p>" if what else "")
    path = png if png_ok else tab
    try:
        return head + (_figure_html(name, png) if png_ok else _table_doc_html(tab))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        why = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        where = path.relative_to(figures.parent)
        return head + f"<p class=skipped>could not read {html.escape(str(where))} ({html.escape(why)})</p>"


def _figure_html(name: str, png: Path) -> str:
    data = png.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG image" if data else "empty file")
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def _table_doc_html(tab: Path) -> str:
    doc = json.loads(tab.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("rows", []), list):
        raise ValueError("not a table of this toolkit")
    note = f"<p class=what>{html.escape(str(doc['note']))}</p>" if doc.get("note") else ""
    return note + table_html(doc.get("rows", []), doc.get("columns"))


def expand_sections(setups: list[str]) -> list[tuple[str, str, str]]:
    """SECTIONS with each run of consecutive per-setup entries repeated for every setup, in
    the run's order (setup by setup: its hardest images, then its easiest)."""
    from .plots import setup_label

    out: list[tuple[str, str, str]] = []
    block: list[tuple[str, str, str]] = []
    for entry in SECTIONS + [("", "", "")]:  # the sentinel flushes a final block
        if "{setup}" in entry[0]:
            block.append(entry)
            continue
        out += [(n.format(setup=s), t.format(label=setup_label(s)), w)
                for s in setups for n, t, w in block]
        block = []
        if entry[0]:
            out.append(entry)
    return out


def _stores_html(work: Path, skipped: list[dict], run, setups: list[str]) -> str:
    """Which r_t store the analyses on this page read: one line, or a warning when they
    read different stores (e.g. `inspect dynamics --store OTHER` into the same work folder);
    a warning naming the analyses that read their store before it last changed; and one for
    each such store that lacks checkpoints the run has now (`setups`'). Each store's
    evaluated checkpoints are read once for all of these."""
    from .rt_plan import evaluations, store_behind

    failed = {s.get("analysis") for s in skipped if isinstance(s, dict)}
    used = {step: src for step, src in stores_of_outputs(work).items() if step not in failed}
    if not used:
        return ""
    located = {step: located_store(src, work, run.root) for step, src in used.items()}
    held: dict[Path, Evaluations | None] = {}
    for where in dict.fromkeys(located.values()):
        try:
            held[where] = evaluations(where)
        except (UserError, OSError):
            held[where] = None
    behind = []
    for where, now in held.items():
        if now is not None and (note := store_behind(run, where, setups, now)):
            behind.append(f"<div class=skipped><p>{html.escape(note[0].upper() + note[1:])}. The "
                          f"analyses on this page show the store as it was when they ran: rerun them "
                          f"after it (<code>inspect all</code> does both).</p></div>")
    return _store_lines(work, used, located) + _changed_html(work, used, located, held) + "".join(behind)


def _changed_html(work: Path, used: dict[str, dict], located: dict[str, Path],
                  held: dict[Path, Evaluations | None]) -> str:
    """A warning naming the analyses that read their r_t store before it last changed
    (checkpoints evaluated since, or again; another store at its place): the evaluation
    snapshot their session recorded (`Outputs.note_store`) differs from the store's now
    (`held`: each store's `Evaluations`, None where it could not be read). Sessions of older
    versions (no snapshot) are passed over; a store that cannot be read now is named as not
    checked."""
    older: dict[tuple[str, str], list[str]] = {}
    for step, src in used.items():
        setups, state, then = src.get("setups"), src.get("state"), src.get("evaluated")
        if not isinstance(state, str) or not isinstance(setups, list) or \
                not all(isinstance(x, str) for x in setups):
            continue
        where = located[step]
        now = held[where]
        current = None if now is None else now.snapshot(setups)
        if current is None:
            why = "could not be read to check whether it changed since"
        elif current[0] == state:
            continue
        elif src.get("store_id") and now.store_id and now.store_id != src["store_id"]:
            why = "is another store now (evaluated anew since)"
        elif isinstance(then, int) and not isinstance(then, bool) and then != current[1]:
            why = f"held {then} evaluated checkpoints then and holds {current[1]} now"
        else:
            why = "has had checkpoints evaluated again since"
        older.setdefault((_shown(work, where), why), []).append(step)
    if not older:
        return ""
    items = "".join(f"<li><b>{html.escape(', '.join(steps))}</b>: {html.escape(where)} {html.escape(why)}</li>"
                    for (where, why), steps in older.items())
    return (f"<div class=skipped><p>These analyses may show an older state of their r_t store "
            f"than it holds now; rerun them (<code>inspect all</code> reruns what changed):</p>"
            f"<ul>{items}</ul></div>")


def _shown(work: Path, where: str | Path) -> str:
    """A store's path as the report shows it: the work folder's own relative to it (as
    the folder moves), another as it is."""
    where, work = Path(where).resolve(), work.resolve()
    return str(where.relative_to(work) if work in where.parents else where)


def _store_lines(work: Path, used: dict[str, dict], located: dict[str, Path]) -> str:
    """The store line (or the warning about several stores) of `_stores_html`."""

    def describe_store(step: str, src: dict) -> str:
        size = (f" ({src['probes']} probe images x {src['replays']} replays)"
                if "probes" in src and "replays" in src else "")
        return f"{_shown(work, located[step])}{size}"

    by_store: dict[str, list[str]] = {}
    described: dict[str, str] = {}
    for step, src in used.items():
        by_store.setdefault(store_key(src), []).append(step)
        described.setdefault(store_key(src), describe_store(step, src))
    if len(by_store) == 1:
        return (f"<p class=what>r_t of {', '.join(used)}: "
                f"{html.escape(described[next(iter(by_store))])}.</p>")
    items = "".join(f"<li><b>{html.escape(', '.join(steps))}</b>: {html.escape(described[key])}</li>"
                    for key, steps in by_store.items())
    return (f"<div class=skipped><p>These analyses read {len(by_store)} different r_t stores, so "
            f"their numbers are not comparable; rerun them with one <code>--store</code>, or give "
            f"each store its own <code>--work</code> folder:</p><ul>{items}</ul></div>")


def _skipped_html(skipped: list[dict]) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li><b>{html.escape(s['analysis'])}</b>: {html.escape(s['reason'])}</li>"
                    for s in skipped)
    return (f"<div class=skipped><p>Analyses that could not be computed for this run "
            f"(everything else is below):</p><ul>{items}</ul></div>")


def _rows_or_none(work: Path, name: str) -> list[dict]:
    """The rows of a table, [] when it is missing or cannot be read (its section says so)."""
    try:
        rows = _table_rows(work, name)
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def setups_in_outputs(work: Path, names: list[str], run_setups: list[str]) -> list[str]:
    """The run's setups that the tables `names` mention, in the run's order."""
    seen = {str(r.get(k)) for n in names for r in _rows_or_none(work, n) for k in SETUP_FIELDS}
    return [s for s in run_setups if s in seen]


def hidden_outputs(work: Path, skipped: list[dict], names: set[str]) -> set[str]:
    """Outputs not to show ("tables/<name>", "figures/<name>"): those of analyses still
    listed as skipped, and those an earlier run of their analysis left (`stale_outputs`)."""
    failed = {s.get("analysis") for s in skipped if isinstance(s, dict)} & set(STEP_OUTPUTS)
    hide = {f"{kind}/{n}" for step in failed for n in names if matches(n, STEP_OUTPUTS[step][0])
            for kind in ("tables", "figures")}
    return hide | stale_outputs(work, names)


def _layout(ws: Workspace, skipped: list[dict]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The sections to lay out, in order (known ones, then unknown figures), and the setups
    the outputs hold. Per-setup sections: the setups of the last `examples` table."""
    run_setups = list(ws.run.cfg.setups)
    known = {name for name, _, _ in expand_sections(run_setups)}
    present = setups_in_outputs(ws.dir, sorted(n for n, _, _ in SECTIONS if "{" not in n), run_setups)
    examined = setups_in_outputs(ws.dir, ["examples_summary"], run_setups)
    extra = [(p.stem, p.stem, "") for p in sorted((ws.dir / "figures").glob("*.png")) if p.stem not in known]
    return expand_sections(examined) + extra, present


def build_report(ws: Workspace, skipped: list[dict] | None = None) -> Path:
    """Write <work>/report/index.html; returns its path. `skipped` lists analyses that
    `inspect all` could not compute ({"analysis", "reason"}); by default the list that the
    last `inspect all` left in <work>/skipped.json, less the analyses that have succeeded
    on their own since (`still_skipped`)."""
    run = ws.run
    figures, tables = ws.dir / "figures", ws.dir / "tables"
    if skipped is None:
        record = ws.dir / "skipped.json"
        skipped = (still_skipped(ws.dir, art.read_json(record, list), record.stat().st_mtime_ns)
                   if record.exists() else [])
    sections, present = _layout(ws, skipped)
    hidden = hidden_outputs(ws.dir, skipped, {n for n, _, _ in sections})
    ds = run.meta["dataset"]
    which = (f"Setups in these outputs: {', '.join(present)} (the run has {', '.join(run.cfg.setups)})"
             if present else f"Setups of the run: {', '.join(run.cfg.setups)}")
    parts = [f"<h1>Learning dynamics report: {html.escape(run.root.name)}</h1>",
             f"<p>{html.escape(which)}; the run has {len(run.cfg.seeds)} seeds (each analysis says "
             f"how many it read); dataset: {html.escape(str(ds.get('name')))} ({ds['n_train']} train "
             f"images).</p>",
             _skipped_html(skipped), _stores_html(ws.dir, skipped, run, present or list(run.cfg.setups))]
    shown = [p for p in (_section(n, t, w, figures, tables, hidden) for n, t, w in sections) if p]
    parts += shown or ["<p>No analysis outputs yet: run <code>inspect all</code>.</p>"]
    setups_cfg = {s: sc.to_dict() for s, sc in run.cfg.setups.items()}
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(
        {"run": run.meta.get("config"), "setups": setups_cfg, "dataset": ds,
         "provenance": run.meta.get("provenance"),
         **({"provenance_later": run.meta["provenance_later"]} if run.meta.get("provenance_later") else {})},
        indent=2)) + "</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(run.root.name)} report</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
    target = ws.dir / "report" / "index.html"
    with work_lock(ws.dir):
        art.write_bytes_atomic(target, page.encode())
    return target
