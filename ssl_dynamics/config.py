"""Frozen configuration: one `SetupConfig` per training setup, one `RunConfig` per grid.

Defaults are the thesis's (its Appendix A; docs/science.md). Presets scale the grid down for the
demo (embedded dataset, CPU) and for smoke tests (synthetic data, tiny network).
Every field can be overridden by name (`override`), which is what the CLI's `--set` uses.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UserError

# Bump when the meaning of a stored field changes. 2: augment "none" is ToTensor alone (as the
# reference code trained random_labels); what schema 1 called "none" (ToTensor + Normalize)
# is "normalize" (upgrade_setup_dict).
SCHEMA_VERSION = 2

SETUP_NAMES = ("simclr", "supervised", "random_labels", "random_labels_aug")


def canonical_order(names) -> list[str]:
    """The thesis's order (simclr, supervised, random_labels, random_labels_aug), then others."""
    return sorted(names, key=lambda n: (SETUP_NAMES.index(n) if n in SETUP_NAMES else len(SETUP_NAMES), n))


@dataclass(frozen=True)
class SetupConfig:
    """Everything that defines how one setup trains (identical for all of its seeds)."""

    name: str
    objective: str  # "simclr" (InfoNCE over 2B views) or "classify" (cross-entropy)
    augment: str  # "simclr" | "supervised" | "none" (see augment/)
    epochs: int
    optimizer: str  # "adam" | "sgd"
    lr: float
    momentum: float = 0.9  # SGD only (Appendix A)
    weight_decay: float = 1e-4  # Appendix A, all setups
    batch_size: int = 256  # Appendix A, all setups
    temperature: float = 1.0  # simclr 0.07; classification divides logits by it (1 = plain CE)
    head_dim: int = 10  # simclr: 128-d projection; classification: number of classes
    random_labels: bool = False
    # "reference": the thesis's code (see schedules.py); "cosine": cosine to zero over the run
    schedule: str = "reference"
    constant_lr_epochs: int = 10  # simclr reference schedule: lr held for the first 10 epochs
    cosine_period_epochs: int = 200  # classification reference schedule: T_max = 200 epochs
    drop_last: bool = True  # fixed batch size (SimCLR needs it; 195 batches per CIFAR epoch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def thesis_setups(n_classes: int = 10) -> dict[str, SetupConfig]:
    """The four setups of docs/science.md with the thesis's defaults."""
    classify = dict(objective="classify", optimizer="sgd", lr=3e-4, head_dim=n_classes)
    return {
        "simclr": SetupConfig(
            name="simclr", objective="simclr", augment="simclr", epochs=200, optimizer="adam",
            lr=3e-4, temperature=0.07, head_dim=128,
        ),
        "supervised": SetupConfig(name="supervised", augment="supervised", epochs=50, **classify),
        "random_labels": SetupConfig(
            name="random_labels", augment="none", epochs=20, random_labels=True, **classify
        ),
        "random_labels_aug": SetupConfig(
            name="random_labels_aug", augment="supervised", epochs=500, random_labels=True,
            **classify,
        ),
    }


@dataclass(frozen=True)
class RunConfig:
    """What is shared by every setup of one run directory."""

    preset: str = "thesis"
    dataset: str = "cifar10"  # cifar10 | digits | synthetic | imagefolder:<path>
    data_root: str = "data"
    train_subset: int = 0  # 0 = whole training set; else a seeded class-stratified subset
    backbone: str = "resnet18_cifar"
    width: int = 64  # 64 = the thesis network (11,173,962 parameters with a 10-way head)
    seeds: tuple[int, ...] = tuple(range(30))  # 30 seeds per setup, as in the thesis
    # the ONE random-label permutation, shared by every model seed; any fixed value will do
    # (the reference code takes it from --target-shuffle, with no default), this one is ours
    label_seed: int = 12345
    subset_seed: int = 0  # picks train_subset when it is set
    setups: dict[str, SetupConfig] = field(default_factory=thesis_setups)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        return d


def _scaled_setups(epochs: dict[str, int], batch_size: int, n_classes: int = 10,
                   lr_scale: float = 1.0, adam_scale: float = 1.0) -> dict[str, SetupConfig]:
    base = thesis_setups(n_classes)
    out = {}
    for name, cfg in base.items():
        # On a few hundred images the thesis's lrs barely move a network in a few epochs;
        # demo/smoke raise them so that r_t has visible dynamics. The factors were picked by
        # hand on the demo: SGD's 3e-4 x 300 = 0.09 (a usual SGD rate), Adam's 3e-4 x 3 = 9e-4
        # (Adam's step is already scaled per parameter, so a small factor moves it as much).
        lr = cfg.lr * (lr_scale if cfg.optimizer == "sgd" else adam_scale)
        out[name] = replace(cfg, epochs=epochs[name], batch_size=batch_size, lr=lr,
                            constant_lr_epochs=min(cfg.constant_lr_epochs, epochs[name] // 2),
                            cosine_period_epochs=max(epochs.values()))
    return out


def preset(name: str) -> RunConfig:
    """thesis (the full grid), demo (embedded digits on the CPU), smoke (tests)."""
    if name == "thesis":
        return RunConfig()
    if name == "demo":
        # random labels need more epochs than true ones before r_t moves off chance
        epochs = {"simclr": 8, "supervised": 6, "random_labels": 14, "random_labels_aug": 14}
        return RunConfig(
            preset="demo", dataset="digits", width=8, seeds=tuple(range(4)),
            # 64 images a batch: the digits train split has 1,438 images (22 full batches)
            setups=_scaled_setups(epochs, batch_size=64, lr_scale=300.0, adam_scale=3.0),
        )
    if name == "smoke":
        epochs = {"simclr": 2, "supervised": 2, "random_labels": 2, "random_labels_aug": 2}
        return RunConfig(
            preset="smoke", dataset="synthetic", width=4, seeds=(0, 1),
            setups=_scaled_setups(epochs, batch_size=16, lr_scale=300.0),
        )
    raise UserError(f"unknown preset {name!r}: choose one of thesis, demo, smoke")


def _coerce(value: str, like: Any) -> Any:
    """Parse a command-line string into the type of the default it replaces."""
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


SETUP_FIELDS = {f.name for f in fields(SetupConfig)} - {"name"}
RUN_FIELDS = {f.name for f in fields(RunConfig)} - {"setups", "seeds", "preset"}


def override(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply `key=value` overrides.

    `lr=0.1` sets a field of every setup, `simclr.lr=1e-3` of one setup, `width=16` a run
    field. Unknown keys and unparsable values raise UserError.
    """
    for item in assignments:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        setup, _, fname = key.rpartition(".")
        try:
            if setup:
                if setup not in cfg.setups:
                    raise UserError(f"override {item!r}: unknown setup {setup!r}")
                if fname not in SETUP_FIELDS:
                    raise UserError(f"override {item!r}: unknown setup field {fname!r}")
                sc = cfg.setups[setup]
                new = {**cfg.setups, setup: replace(sc, **{fname: _coerce(value, getattr(sc, fname))})}
                cfg = replace(cfg, setups=new)
            elif fname in RUN_FIELDS:
                cfg = replace(cfg, **{fname: _coerce(value, getattr(cfg, fname))})
            elif fname in SETUP_FIELDS:
                new = {n: replace(s, **{fname: _coerce(value, getattr(s, fname))})
                       for n, s in cfg.setups.items()}
                for s in new.values():  # it applies to every setup: name the override, not one setup
                    validate_setup(s, owner=f"override {item!r} (every setup): ")
                cfg = replace(cfg, setups=new)
            else:
                raise UserError(
                    f"override {item!r}: unknown key; setup fields: {', '.join(sorted(SETUP_FIELDS))}; "
                    f"run fields: {', '.join(sorted(RUN_FIELDS))}"
                )
        except ValueError:
            raise UserError(f"override {item!r}: cannot parse {value!r}") from None
    validate(cfg)
    return cfg


CHOICES = {"objective": ("simclr", "classify"), "augment": ("simclr", "supervised", "none", "normalize"),
           "optimizer": ("adam", "sgd"), "schedule": ("reference", "cosine", "constant")}
# (field, lowest allowed value, whether the lowest value itself is allowed)
SETUP_BOUNDS = (("epochs", 1, True), ("batch_size", 1, True), ("head_dim", 1, True),
                ("constant_lr_epochs", 0, True), ("cosine_period_epochs", 1, True),
                ("lr", 0.0, False), ("temperature", 0.0, False), ("weight_decay", 0.0, True),
                ("momentum", 0.0, True))
RUN_BOUNDS = (("width", 1, True), ("train_subset", 0, True), ("label_seed", 0, True),
              ("subset_seed", 0, True))
INT_MAX = 2**63 - 1  # numpy and torch take seeds and sizes as signed 64-bit integers
MAX_SEEDS = 100_000  # far beyond any study (the thesis has 30); a typo like 0-99999999999 stops here
DATASETS = ("cifar10", "digits", "synthetic")  # plus imagefolder:<path>


def _check_number(owner: str, name: str, value: Any, low: float, inclusive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{owner}{name} must be a finite number, got {value!r}")
    if value < low or (value == low and not inclusive):
        raise UserError(f"{owner}{name} must be {'>=' if inclusive else '>'} {low}, got {value!r}")
    if isinstance(value, int) and value > INT_MAX:
        raise UserError(f"{owner}{name} must be at most 2**63 - 1, got {value!r}")


def validate_setup(s: SetupConfig, owner: str | None = None) -> None:
    """Every value a later step would reject, refused now with one line (starting `owner`)."""
    owner = owner or f"setup {s.name}: "
    for name, allowed in CHOICES.items():
        if getattr(s, name) not in allowed:
            raise UserError(f"{owner}{name} must be one of {', '.join(allowed)}, got {getattr(s, name)!r}")
    for name, low, inclusive in SETUP_BOUNDS:
        _check_number(owner, name, getattr(s, name), low, inclusive)
    if s.momentum >= 1:
        raise UserError(f"{owner}momentum must be below 1, got {s.momentum!r}")
    if not isinstance(s.drop_last, bool) or not isinstance(s.random_labels, bool):
        raise UserError(f"{owner}drop_last and random_labels must be true or false")


def validate(cfg: RunConfig) -> None:
    for key, s in cfg.setups.items():
        if s.name != key:
            raise UserError(f"setup {key!r} is named {s.name!r} in its own config")
        validate_setup(s)
    validate_run_fields(cfg)
    from .models import check_backbone

    check_backbone(cfg.backbone)


def validate_run_fields(cfg: RunConfig) -> None:
    """The run-level values (bounds, seeds, dataset): what run.json alone holds."""
    for name, low, inclusive in RUN_BOUNDS:
        _check_number("", name, getattr(cfg, name), low, inclusive)
    if not cfg.seeds or any(not isinstance(s, int) or s < 0 or s > INT_MAX for s in cfg.seeds):
        raise UserError("seeds must be a non-empty list of integers from 0 to 2**63 - 1")
    if cfg.dataset not in DATASETS and not cfg.dataset.startswith("imagefolder:"):
        raise UserError(f"unknown dataset {cfg.dataset!r}: use cifar10, digits, synthetic or "
                        f"imagefolder:<path>")


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-3' -> (0,1,2,3); '0,2,5' and '0-2,7' work too."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-")
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                if hi_i - lo_i >= MAX_SEEDS:
                    raise UserError(f"seed range {part!r} has {hi_i - lo_i + 1} seeds; at most "
                                    f"{MAX_SEEDS} are allowed")
                seeds.extend(range(lo_i, hi_i + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"malformed seed range {text!r}: use e.g. 0-29, 0,3,7 or 0-3,10") from None
    if not seeds or min(seeds) < 0 or max(seeds) > INT_MAX:
        raise UserError(f"malformed seed range {text!r}: seeds are integers from 0 to 2**63 - 1")
    if len(set(seeds)) > MAX_SEEDS:
        raise UserError(f"{text!r} names more than {MAX_SEEDS} seeds")
    return tuple(sorted(set(seeds)))


def check_schema(version: Any, source: str) -> int:
    """The schema a stored file (`source`, as messages name it) was written under: 1 when it
    records none. Refused: one that is not a positive integer (an int, or its digits as
    checkpoint metadata stores them), and one newer than this toolkit's, whose layout this
    version could misread."""
    if version is None:
        return 1
    if getattr(version, "ndim", None) == 0 and hasattr(version, "item"):  # a numpy scalar (HDF5)
        version = version.item()
    if isinstance(version, str) and version.isascii() and version.isdigit():
        version = int(version)
    if not isinstance(version, numbers.Integral) or isinstance(version, bool) or version < 1:
        raise UserError(f"corrupt {source}: schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise UserError(f"{source} was written under schema {version}, by a newer version of the "
                        f"toolkit than this one (schema {SCHEMA_VERSION}); upgrade ssl_dynamics")
    return int(version)


def setup_from_dict(d: Any, source: str = "setup config") -> SetupConfig:
    """A SetupConfig from its stored form (extra keys like schema_version ignored), checked."""
    if not isinstance(d, dict):
        raise UserError(f"corrupt {source}: expected a JSON object")
    version = check_schema(d.get("schema_version"), source)
    d = upgrade_setup_dict(d, version)
    known = {f.name for f in fields(SetupConfig)}
    try:
        sc = SetupConfig(**{k: v for k, v in d.items() if k in known})
    except TypeError as e:
        raise UserError(f"corrupt {source}: {e}") from None
    try:
        validate_setup(sc)
    except UserError as e:
        raise UserError(f"corrupt {source}: {e}") from None
    return sc


def upgrade_augment(kind: str, schema_version: Any) -> str:
    """An augmentation name stored under an older schema, in today's terms: before schema 2
    "none" normalized its input, which is today's "normalize"."""
    try:
        old = int(schema_version) < 2
    except (TypeError, ValueError):
        return kind
    return "normalize" if old and kind == "none" else kind


def upgrade_setup_dict(d: Any, schema_version: Any) -> Any:
    """A setup config stored under an older schema, in today's terms (upgrade_augment)."""
    if isinstance(d, dict) and "augment" in d:
        return {**d, "augment": upgrade_augment(d["augment"], schema_version)}
    return d


def canonical_json(d: Any) -> str:
    """A stable text form used to compare configs and stored in file attributes."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


LOCATION_FIELDS = ("data_root", "dataset")  # where the data lies: may differ between machines


def absolute_location(field: str, value: str) -> str:
    """A data location (`data_root`, or the path of `dataset` imagefolder:<path>) made
    absolute, ~ expanded and normalized ("a/../b" is b; symbolic links stay as given)."""
    def absolute(path: str) -> str:
        return os.path.normpath(Path(path).expanduser().absolute())

    if field == "dataset":
        return f"imagefolder:{absolute(value[len('imagefolder:'):])}" if value.startswith("imagefolder:") else value
    return absolute(value)


def absolute_locations(cfg: RunConfig) -> RunConfig:
    """The config with its data locations made absolute (`absolute_location`), so that
    run.json names the data wherever phase two runs from."""
    return replace(cfg, **{f: absolute_location(f, getattr(cfg, f)) for f in LOCATION_FIELDS})
