"""What several commands share: loading the config, opening the store, output."""

from __future__ import annotations

import getpass
import os
import sys
import zoneinfo
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from agent.config import Config, ConfigError, load_config
from agent.config.loader import unknown_name
from agent.paths import default_config
from agent.runbook_library import RunbookLibrary
from agent.store import DB_NAME, Store, StoreError, open_store


def echo(text: str = "", *, err: bool = False) -> None:
    """Print a line to standard output (or error)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")


def fail(message: str, code: int) -> NoReturn:
    echo(f"kanshi: {message}", err=True)
    raise SystemExit(code)


def config_path(given: str | None) -> Path:
    return Path(given) if given else default_config()


def load_or_exit(given: str | None, code: int = 2) -> Config:
    """The config, or every problem on stderr and exit ``code``."""
    path = config_path(given)
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            echo(str(issue), err=True)
        count = len(exc.issues)
        fail(f"{path}: {count} problem{'s' if count != 1 else ''} in the config", code)


def load_library_or_exit(config: Config, code: int = 2) -> RunbookLibrary:
    """The config's runbooks (shipped and the customer's), checked against the checks
    that start them; every problem on stderr and exit ``code``."""
    try:
        library = RunbookLibrary.load(config.root.runbooks.directories)
    except ConfigError as exc:
        for issue in exc.issues:
            echo(str(issue), err=True)
        fail(f"{len(exc.issues)} problem(s) in the runbooks", code)
    problems = []
    for check in config.checks:
        if check.runbook is not None and check.runbook.name not in library.books:
            problems.append(f"{config.path}: check {check.name}: "
                            + unknown_name("runbook", check.runbook.name, set(library.books)))
    for problem in problems:
        echo(problem, err=True)
    if problems:
        fail(f"{len(problems)} problem(s) with the checks' runbooks", code)
    return library


def existing_store(config: Config, *, write: bool = False) -> Store:
    """The agent's store, which must already exist; opened read-only unless ``write``.

    Tools never create or migrate a store: that is the agent's job.
    """
    url = config.root.store.url
    if url is not None:  # a shared PostgreSQL store: opening it tells whether it is one
        try:
            return open_store(config.state_dir, migrate=False, readonly=not write,
                              url=url.get_secret_value())
        except StoreError as exc:
            fail(str(exc), 1)
    db = config.state_dir / DB_NAME
    try:
        exists = db.exists()
    except OSError as exc:
        fail(f"cannot look into {config.state_dir}: {exc.strerror or exc}", 1)
    if not exists:
        fail(f"no state at {db}: the agent has not run with this config yet "
             f"(start it with `kanshi run -c {config.path}`)", 1)
    try:
        return open_store(config.state_dir, migrate=False, readonly=not write)
    except StoreError as exc:
        fail(str(exc), 1)


def login_name() -> str:
    """Who runs this command (for the timeline and the audit log)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (containers)
        return f"uid {os.getuid()}"


def local_time(config: Config, moment: datetime | None, with_date: bool = True) -> str:
    """``moment`` in the agent's time zone, or "-"."""
    if moment is None:
        return "-"
    zone = zoneinfo.ZoneInfo(config.root.agent.timezone)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def ago(seconds: float) -> str:
    """``42s``, ``5m``, ``3h 2m``, ``2d 4h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
