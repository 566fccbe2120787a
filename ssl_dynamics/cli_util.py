"""What both command lines share: one-line errors with exit status 2, signals, option parsing.

Exit statuses: 0 success; 1 work in other processes (workers, cluster jobs) failed (one line
naming their logs); 2 bad input or something the user can fix: a damaged file, a full disk,
memory that runs out (one line `error: ...`);
3 `inspect all` finished with some analyses skipped; 130 interrupted (finished work kept).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import click

from .errors import UserError, WorkFailed

EXIT_WORK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130


def run_cli(group: click.Group, resume_hint: str) -> None:
    """Call a click group; user-fixable failures become `error: <message>` and exit 2."""
    try:
        _run_group(group)
    except UserError as e:
        _fail(str(e))
    except WorkFailed as e:
        _fail(str(e), EXIT_WORK_FAILED)
    except click.exceptions.Abort:
        _interrupted(resume_hint)
    except click.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `inspect` alone (click >= 8.2): the help, as help
            e.show()
            sys.exit(e.exit_code)
        _fail(_click_message(e))
    except KeyboardInterrupt:
        _interrupted(resume_hint)
    except MemoryError:
        _fail(OUT_OF_MEMORY)
    except RuntimeError as e:  # torch's allocators raise RuntimeError, not MemoryError
        if str(e).startswith("Symlink loop from"):  # Path.resolve() before Python 3.13 (then OSError)
            _fail(f"{e}: a symbolic link that leads back to itself; remove it or choose another path")
        if not is_out_of_memory(e):
            raise
        _fail(f"{OUT_OF_MEMORY} ({str(e).splitlines()[0][:200]})")
    except OSError as e:
        from .artifacts import is_no_space

        if is_no_space(e):  # only a write runs out of space
            where = f" while writing {e.filename}" if e.filename else ""
            _fail(f"no space left on the device{where}; free some space and rerun the same "
                  f"command: finished work is kept")
        _fail(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))


def _run_group(group: click.Group) -> None:
    from .artifacts import created_folders, remove_unused_folders

    mark = created_folders()
    try:
        group.main(standalone_mode=False)
    except BaseException as e:  # a refused command leaves no empty output folder behind
        if not (isinstance(e, SystemExit) and e.code in (None, 0)):
            remove_unused_folders(since=mark)
        raise


OUT_OF_MEMORY = ("out of memory: the work does not fit this machine's memory; use a smaller "
                 "network, batch or --pack (finished work is kept)")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether an exception is an allocator's refusal (CPU or GPU), not a bug."""
    import torch

    text = str(e)
    return isinstance(e, torch.cuda.OutOfMemoryError) or "can't allocate memory" in text \
        or "not enough memory" in text or "out of memory" in text.lower()


def _click_message(e: click.ClickException) -> str:
    """click's own usage errors, on one line (with a pointer to --help)."""
    if isinstance(e, click.UsageError) and e.ctx is not None:
        return f"{e.format_message()} (see `{e.ctx.command_path} --help`)"
    return e.format_message()


def _interrupted(resume_hint: str) -> None:
    from .progress import close_bars

    close_bars()
    click.echo(f"interrupted: {resume_hint}", err=True)
    sys.exit(EXIT_INTERRUPTED)


def _fail(message: str, status: int = EXIT_USER_ERROR) -> None:
    from .progress import close_bars

    close_bars()
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(status)


@contextmanager
def user_errors() -> Iterator[None]:
    """Library code raises ValueError for bad arguments; at the command line that is bad input."""
    try:
        yield
    except ValueError as e:
        raise UserError(str(e)) from None


def split_names(values: tuple[str, ...] | None) -> list[str] | None:
    """`--setup a --setup b,c` -> [a, b, c]; None when not given (every caller's "all").

    Given but naming nothing (`--setup ,` or `--setup ''`) is refused: never "all" by accident.
    """
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise UserError("--setup names no setup")
    return names


def parse_int_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    items = [v.strip() for v in text.split(",")]
    if not any(items):  # `--epochs ,` or '': not "all" by accident
        raise UserError(f"{what} {text!r}: give at least one integer, e.g. 1,5,10 (or leave the option out)")
    try:
        return [int(v) for v in _no_empty_item(items, text, what)]
    except ValueError:
        raise UserError(f"{what} {text!r}: use comma-separated integers, e.g. 1,5,10") from None


def _no_empty_item(items: list[str], text: str, what: str) -> list[str]:
    """The items of a comma-separated list; an empty one among others (`1,,5`, `1,5,`) is
    refused: a typo, not a value left out on purpose."""
    if not all(items):
        raise UserError(f"{what} {text!r} has an empty item; give each value once, e.g. 1,5,10")
    return items


def parse_levels(text: str | None) -> tuple[float, ...] | str | None:
    """`--p0 0.25,0.5,0.75` -> floats; `--p0 range` -> "range"; None when not given."""
    if text is None or text.strip() == "range":
        return None if text is None else "range"
    items = [v.strip() for v in text.split(",")]
    if not any(items):  # `--p0 ''` or `--p0 ,`: not the defaults by accident
        raise UserError(f"--p0 {text!r}: give at least one number in (0, 1], or 'range' (or leave "
                        f"the option out)")
    try:
        return tuple(float(v) for v in _no_empty_item(items, text, "--p0"))
    except ValueError:
        raise UserError(f"--p0 {text!r}: use comma-separated numbers in (0, 1], or 'range'") from None
