"""``kanshi run``: the agent in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from types import FrameType

from agent import __version__
from agent.api.server import ApiError
from agent.cli.common import echo, fail, load_library_or_exit, load_or_exit
from agent.config import Config
from agent.lock import AlreadyRunning
from agent.logs import setup_logging
from agent.secrets import Redactor
from agent.service import Agent
from agent.store import StoreError


def run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    setup_logging(args.log_level, Redactor(config.secrets()))
    for warning in config.warnings:
        logging.getLogger("agent.config").warning("%s", warning)
    library = load_library_or_exit(config)
    try:
        agent = Agent(config, library=library)
    except StoreError as exc:
        fail(str(exc), 1)
    _banner(config)
    _install_signal_handlers(agent)
    try:
        agent.run_forever()
    except (AlreadyRunning, ApiError) as exc:
        fail(str(exc), 1)
    return 0


def _banner(config: Config) -> None:
    checks = ", ".join(f"{c.name} every {c.interval:g}s" for c in config.enabled_checks)
    channels = ", ".join(n.name for n in config.enabled_notifiers) or "nowhere"
    echo(f"kanshi {__version__} — config {config.path}", err=True)
    echo(f"  checks:  {checks or 'none'}", err=True)
    echo(f"  notices: {channels}", err=True)
    echo(f"  state:   {config.state_dir}", err=True)
    echo("  Ctrl-C stops the agent.", err=True)


def _install_signal_handlers(agent: Agent) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        if agent_stopping[0]:
            echo("kanshi: second interrupt — exiting now", err=True)
            os._exit(130)
        agent_stopping[0] = True
        echo(f"kanshi: {signal.Signals(signum).name} received, stopping "
             "(press Ctrl-C again to exit at once)", err=True)
        agent.request_stop()

    agent_stopping = [False]
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
