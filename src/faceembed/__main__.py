"""``python -m faceembed`` runs the CLI."""

from faceembed.cli import main

main()
