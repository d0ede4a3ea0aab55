"""`python -m parley`: the `parley` command, where the console script is not on PATH."""

from parley.cli import app

app(prog_name="parley")
