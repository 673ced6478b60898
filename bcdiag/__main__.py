"""``python -m bcdiag`` runs the command line."""

from bcdiag.cli import main

main()
