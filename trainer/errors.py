"""One error type for problems the user can fix, and a CLI runner that prints them as one line."""

from __future__ import annotations

import sys

import click


class UserError(ValueError):
    """A problem with the user's input or environment; printed as one line, exit status 2."""


def run_cli(group: click.Group) -> None:
    """Run a click group; turn UserError/ValueError/OSError into one line on stderr and exit 2.

    `--debug` anywhere on the command line shows the full traceback instead.
    """
    debug = "--debug" in sys.argv[1:]
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (UserError, ValueError, OSError, KeyError) as e:
        if debug:
            raise
        msg = str(e) if not isinstance(e, KeyError) else str(e.args[0] if e.args else e)
        click.echo(f"error: {msg}", err=True)
        sys.exit(2)
