"""The offline tiny model every CPU test and `recipes/tiny.yaml` run on: its build, its trained
base (shipped under bases/), the fingerprint that checks it and the tables it reproduces."""
