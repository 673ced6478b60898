"""The ``bcdiag`` command line: one click group, one module per command family."""

from __future__ import annotations

import os

import click

from bcdiag import __version__
from bcdiag.cli.benchmark import benchmark
from bcdiag.cli.data import data
from bcdiag.cli.db import db
from bcdiag.cli.export import export
from bcdiag.cli.models import evaluate, promote, retrain, rollback
from bcdiag.cli.predict import predict
from bcdiag.cli.run import run
from bcdiag.cli.train import train
from bcdiag.cli.users import audit, users
from bcdiag.cli.validate import validate
from bcdiag.errors import BcdiagError
from bcdiag.platform.telemetry import telemetry_off_env


class BcdiagGroup(click.Group):
    """A click group that reports bcdiag's own errors as one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BcdiagError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=BcdiagGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bcdiag")
def main() -> None:
    """bcdiag: breast-cancer decision support centred on Jupyter."""
    os.environ.update(telemetry_off_env())  # for every command and what it starts


for command in (validate, db, export, data, train, evaluate, promote, predict, benchmark, run):
    main.add_command(command)
main.add_command(retrain)
main.add_command(rollback)
main.add_command(users)
main.add_command(audit)
