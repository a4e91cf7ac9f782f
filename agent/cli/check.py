"""``kanshi check NAME… | --all``: run checks once, like a Nagios plugin."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

from agent.cli.common import echo, fail, load_or_exit
from agent.cli.table import table
from agent.clock import SystemClock
from agent.config import CheckSpec, Config
from agent.logs import setup_logging
from agent.runner import CheckRunner
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import LocalResources, Result, Status, worst

#: A config that cannot be loaded is UNKNOWN to whoever runs this as a plugin.
EXIT_BAD_CONFIG = int(Status.UNKNOWN)


def check(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config, code=EXIT_BAD_CONFIG)
    redactor = Redactor(config.secrets())
    setup_logging("WARNING", redactor, keep_existing=True)
    specs = _selected(config, args.names, args.all)
    results = run_once(specs, redactor)
    if args.json:
        echo(json.dumps([_as_json(r) for r in results], ensure_ascii=False, indent=2))
    else:
        rows = [(r.check, r.target or "(check)", r.status.name, r.message) for r in results]
        echo(table(("CHECK", "TARGET", "STATUS", "MESSAGE"), rows))
    return int(worst([r.status for r in results]))


def run_once(specs: list[CheckSpec], redactor: Redactor) -> list[Result]:
    """Run ``specs`` concurrently, each with its hard timeout; results in config order."""
    clock, shared = SystemClock(), LocalResources()
    runner = CheckRunner(clock)
    try:
        checks = [build_check(s, clock, shared, redactor) for s in specs]
        with ThreadPoolExecutor(max(1, min(16, len(checks)))) as pool:
            runs = [pool.submit(runner.run, c, s.timeout) for c, s in zip(checks, specs,
                                                                           strict=True)]
            results = [r for run in runs for r in run.result()]
        for c in checks:
            c.close()
    finally:
        shared.close()
    return results


def _selected(config: Config, names: list[str], every: bool) -> list[CheckSpec]:
    if every and names:
        fail("give check names or --all, not both", EXIT_BAD_CONFIG)
    if every:
        if not config.enabled_checks:
            fail("no check is enabled in the config: nothing to run", EXIT_BAD_CONFIG)
        return list(config.enabled_checks)
    if not names:
        fail("name the checks to run, or --all (configured: "
             f"{', '.join(c.name for c in config.checks) or 'none'})", EXIT_BAD_CONFIG)
    known = {c.name: c for c in config.checks}
    missing = [n for n in names if n not in known]
    if missing:
        fail(f"no such check: {', '.join(missing)} (configured: {', '.join(known) or 'none'})",
             EXIT_BAD_CONFIG)
    return [known[n] for n in names]


def _as_json(result: Result) -> dict[str, object]:
    return {"check": result.check, "target": result.target, "status": result.status.name,
            "code": int(result.status), "message": result.message, "metrics": result.metrics,
            "at": result.at.isoformat() if result.at else None, "duration": result.duration}
