"""``kanshi config check [FILE]``: validate and list every problem at once."""

from __future__ import annotations

import argparse

from agent.cli.common import echo, load_library_or_exit, load_or_exit


def config_check(args: argparse.Namespace) -> int:
    config = load_or_exit(args.file)
    for warning in config.warnings:
        echo(f"warning: {warning}", err=True)
    library = load_library_or_exit(config)
    enabled = len(config.enabled_checks)
    channels = ", ".join(n.name for n in config.enabled_notifiers) or "none"
    echo(f"{config.path}: OK — {len(config.checks)} checks ({enabled} enabled), "
         f"notices to: {channels}; {len(library.names())} runbooks; state in "
         f"{config.state_dir}")
    return 0
