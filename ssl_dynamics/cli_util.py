"""What both command lines share: one-line errors with exit status 2, device options."""
from __future__ import annotations

import sys

import click

from .errors import UserError


def run_cli(group: click.Group) -> None:
    """Call a click group; a UserError becomes `error: <message>` and exit status 2."""
    try:
        group.main(standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: completed epochs/chunks are on disk; rerun to resume", err=True)
        sys.exit(130)
