"""`python -m lite_cpt.cli ...`, the same as `lite-cpt ...`."""

from lite_cpt.cli import app

app()
