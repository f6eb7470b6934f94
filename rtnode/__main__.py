"""``python -m rtnode`` is the ``rtnode`` command."""

from rtnode.cli import run

run()
