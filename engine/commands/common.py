"""Pieces several subcommands share: finding and loading the engine file."""

from __future__ import annotations

import argparse
import sys

from channels.configfile import ConfigError
from engine.config import EngineConfig, config_path, load_config


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`, defaulting to INTERLINK_CONFIG or conf/interlink.yaml."""
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="engine file (default: $INTERLINK_CONFIG or conf/interlink.yaml)")


def load_or_exit(args: argparse.Namespace) -> EngineConfig:
    """Load the engine file, or print every error with its location and exit 2."""
    try:
        return load_config(config_path(args.config))
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        raise SystemExit(2) from exc
