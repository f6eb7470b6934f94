"""The ``--config`` option every rtnode command shares, and loading it for a command.

One definition, so that every command finds its configuration the same way ($RTNODE_CONFIG,
then ./config.yaml, then the embedded defaults) and reports a bad file the same way: each
problem as ``file:line: key: message`` on standard error, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtnode.config import Config, ConfigError, load_config

CONFIG_HELP = ("Config file (default: $RTNODE_CONFIG, else ./config.yaml, else "
               "/etc/rtnode/config.yaml, else embedded defaults).")

ConfigFile = Annotated[Optional[Path], typer.Option("--config", "-c", help=CONFIG_HELP,
                                                    show_default=False)]


def config_or_exit(path: Optional[Path]) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"config error: {problem}\n")
        raise typer.Exit(2) from None
