"""The ``bcdiag`` command line: one click group, one module per command family."""

from __future__ import annotations

import click

from bcdiag import __version__
from bcdiag.cli.db import db
from bcdiag.cli.export import export
from bcdiag.cli.run import run
from bcdiag.cli.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bcdiag")
def main() -> None:
    """bcdiag: breast-cancer decision support centred on Jupyter."""


for command in (validate, db, export, run):
    main.add_command(command)
