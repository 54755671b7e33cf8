"""`python -m attnlab.study` — accuracy against sequence length, for every variant, in one command.

    python -m attnlab.study task=mqar variants=[multihead,linear,performer,local] lengths=[64,128,256] seeds=[0,1] out=DIR

The study sits above the run, as the report does. Modules, one job each:
plan (the grid and its checks, before anything runs), launch (the missing cells through Hydra's
multirun, so every launcher applies), collect (the cells read back through attnlab.run.results; study.csv
and study.md), plot (study.png), track (the table and plot to the study's wandb group), cli (the command).
"""

from attnlab.study.cli import main, study

__all__ = ["main", "study"]
