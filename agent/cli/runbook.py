"""``kanshi runbook …``: list, show, validate, run (now, dry, or later), follow, approve."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from agent.cli.common import (
    echo,
    existing_store,
    fail,
    load_library_or_exit,
    load_or_exit,
    local_time,
    login_name,
)
from agent.cli.table import table
from agent.clock import SystemClock
from agent.config import Config
from agent.config.source import Issue
from agent.incidents import IncidentManager
from agent.outbox import Outbox
from agent.policy.contract import Contract, calendar_from
from agent.runbook_library import RunbookLibrary, load_runbook_file
from agent.runbook_service import RunbookService
from agent.secrets import Redactor
from agent.store import Store
from agent.store.runbooks import FINAL, Run
from runbooks.params import ParameterError, resolve
from runbooks.schema import Runbook

#: What a run's final state means for the exit code.
EXIT = {"succeeded": 0, "planned": 0}


def add_parser(sub: Any, config_option: Any) -> None:
    rb = sub.add_parser("runbook", help="recovery runbooks and the operations catalogue")
    config_option(rb)
    acts = rb.add_subparsers(dest="runbook_command", required=True, metavar="ACTION")
    for name, text in (("list", "the runbooks this agent knows"), ("runs", "recent runs")):
        action = acts.add_parser(name, help=text)
        config_option(action, on_action=True)
    show = acts.add_parser("show", help="a runbook's parameters and levels")
    config_option(show, on_action=True)
    show.add_argument("name")
    validate = acts.add_parser("validate", help="check a runbook file, list every problem")
    validate.add_argument("file")
    run = acts.add_parser("run", help="run a runbook now, later, or as a dry run")
    config_option(run, on_action=True)
    run.add_argument("name")
    run.add_argument("--target", required=True, help="what it acts on (host, instance id…)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    when = run.add_mutually_exclusive_group()
    when.add_argument("--at", help="run at this time (ISO; contract time zone if no offset)")
    when.add_argument("--earliest-business-days", type=int, metavar="N",
                      help="run at the start of the N-th business day from now")
    run.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    run.add_argument("--by", help="who asks (default: your login name)")
    for name, text in (("logs", "a run's steps (and follow it live with --follow)"),
                       ("approve", "approve the step a run waits on"),
                       ("cancel", "cancel a run (it stops between steps)")):
        action = acts.add_parser(name, help=text)
        config_option(action, on_action=True)
        action.add_argument("run", type=int)
        if name == "logs":
            action.add_argument("--follow", action="store_true")
        if name == "approve":
            action.add_argument("--by", help="who approves (default: your login name)")
            action.add_argument("--reject", action="store_true", help="say no instead")


def runbook(args: argparse.Namespace) -> int:
    if args.runbook_command == "validate":
        return _validate(args.file)
    config = load_or_exit(args.config)
    library = load_library_or_exit(config)
    if args.runbook_command in ("list", "show"):
        return _list(library) if args.runbook_command == "list" else _show(library, args.name)
    write = args.runbook_command in ("run", "approve", "cancel")
    store = existing_store(config, write=write)
    try:
        handler = {"run": _run, "runs": _runs, "logs": _logs, "approve": _approve,
                   "cancel": _cancel}[args.runbook_command]
        return handler(args, config, store, library)
    finally:
        store.close()


# -- reading ---------------------------------------------------------------------------

def _validate(path: str) -> int:
    from pathlib import Path

    issues: list[Issue] = []
    book = load_runbook_file(Path(path), issues)
    for issue in issues:
        echo(str(issue), err=True)
    if book is None:
        fail(f"{path}: {len(issues)} problem(s)", 2)
    echo(f"{path}: OK — runbook {book.name}, {len(book.levels)} level(s), "
         f"{sum(len(lv.steps) for lv in book.levels)} step(s)")
    return 0


def _list(library: RunbookLibrary) -> int:
    rows = [(b.name, b.category, b.target, b.description) for b in
            (library.get(n) for n in library.names())]
    echo(table(("RUNBOOK", "CATEGORY", "TARGET", "DESCRIPTION"), rows))
    return 0


def _show(library: RunbookLibrary, name: str) -> int:
    book = _get(library, name)
    echo(f"{book.name} ({book.category}, acts on a {book.target}): {book.description}")
    echo("\nparameters:")
    echo(table(("NAME", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"),
               [(n, p.type, "yes" if p.required else "no",
                 "-" if p.default is None else p.default, p.description)
                for n, p in book.parameters.items()]))
    echo("\nlevels:")
    for i, level in enumerate(book.levels, 1):
        if level.run:
            echo(f"  {i}. {level.name}: hand over to runbook {level.run}")
        elif level.escalate:
            echo(f"  {i}. {level.name}: hand over to people")
        else:
            steps = ", ".join(f"{s.id} ({s.action})" for s in level.steps)
            verify = level.verify.action if level.verify else "-"
            echo(f"  {i}. {level.name}: {steps}; verify with {verify}")
    return 0


def _runs(args: argparse.Namespace, config: Config, store: Store, library: Any) -> int:
    runs = store.runbooks.recent(50)
    if not runs:
        echo("no runbook runs yet")
        return 0
    echo(table(("RUN", "RUNBOOK", "TARGET", "TRIGGER", "STATE", "WHEN", "BY", "OUTCOME"),
               [(f"#{r.id}", r.runbook, r.target, r.trigger + (" (dry)" if r.dry_run else ""),
                 r.state, local_time(config, r.started_at or r.scheduled_for),
                 r.requested_by, r.outcome) for r in runs]))
    return 0


def _logs(args: argparse.Namespace, config: Config, store: Store, library: Any) -> int:
    run = _get_run(store, args.run)
    follow = Follower(store, config, run.id)
    if args.follow:
        return follow.until_done()
    follow.print_all()
    return EXIT.get(follow.run().state, 1) if follow.run().state in FINAL else 0


# -- acting ------------------------------------------------------------------------------

def _run(args: argparse.Namespace, config: Config, store: Store,
         library: RunbookLibrary) -> int:
    book = _get(library, args.name)
    params = _params(book, args.param)
    _check_plan(config, book)
    who = args.by or login_name()
    service = _service(config, store, library)
    now = datetime.now(UTC)
    when = _when(args, config, now)
    if when is not None and not args.dry_run:
        return _schedule(store, config, book, args.target, params, who, when, now)
    if args.dry_run or not args.yes:
        plan_state = _execute(service, store, config, book, args.target, params, who,
                              dry_run=True)
        if args.dry_run:
            return EXIT.get(plan_state, 1)
        if not _confirm(f"run {book.name} on {args.target} now?"):
            echo("not run")
            return 1
    return EXIT.get(_execute(service, store, config, book, args.target, params, who,
                             dry_run=False), 1)


def _params(book: Runbook, pairs: list[str]) -> dict[str, Any]:
    given: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--param {pair!r}: expected KEY=VALUE", 2)
        given[key.strip()] = value
    try:
        return resolve(book, given)
    except ParameterError as exc:
        for problem in exc.problems:
            echo(f"parameter {problem}", err=True)
        fail(f"{len(exc.problems)} problem(s) with the parameters of {book.name}", 2)


def _check_plan(config: Config, book: Runbook) -> None:
    plan = config.root.plan
    if book.category == "operation" and not plan.operations:
        fail(f"the plan ({plan.name}) does not include operations on request", 1)
    if book.category == "recovery" and not plan.automatic_recovery:
        fail(f"the plan ({plan.name}) has no failure response: notify only", 1)


def _when(args: argparse.Namespace, config: Config, now: datetime) -> datetime | None:
    if args.at:
        from agent.cli.maintenance import parse_moment

        return parse_moment(args.at, config, now)
    if args.earliest_business_days is not None:
        calendar = calendar_from(config.root.business_hours)
        day = now.astimezone(calendar.zone).date()
        for _ in range(args.earliest_business_days):
            day = calendar.next_business_day(day)
        span = calendar.open_span(day)
        assert span is not None
        return span[0]
    return None


def _schedule(store: Store, config: Config, book: Runbook, target: str,
              params: dict[str, Any], who: str, when: datetime, now: datetime) -> int:
    with store.db.tx():
        run_id = store.runbooks.create(runbook=book.name, target=target, params=params,
                                       trigger="scheduled", incident_id=None, requested_by=who,
                                       dry_run=False, state="scheduled", scheduled_for=when,
                                       now=now)
        store.audit.write(now, who, "runbook.schedule", f"runbook-run/{run_id}",
                          {"runbook": book.name, "target": target, "at": when.isoformat()})
    echo(f"run #{run_id}: {book.name} on {target} scheduled for {local_time(config, when)} "
         "(the running agent carries it out; `kanshi runbook runs` shows it)")
    return 0


def _execute(service: RunbookService, store: Store, config: Config, book: Runbook,
             target: str, params: dict[str, Any], who: str, *, dry_run: bool) -> str:
    """Run here, printing progress; the final state."""
    now = datetime.now(UTC)
    run_id = store.runbooks.create(runbook=book.name, target=target, params=params,
                                   trigger="manual", incident_id=None, requested_by=who,
                                   dry_run=dry_run, state="waiting_lock", scheduled_for=now,
                                   now=now, owner=service.owner)
    store.audit.write(now, who, "runbook.dry_run" if dry_run else "runbook.run",
                      f"runbook-run/{run_id}", {"runbook": book.name, "target": target})
    run = store.runbooks.get(run_id)
    assert run is not None
    request = service.request_for(run)
    if request is None:
        return "failed"
    echo(f"run #{run_id}: {book.name} on {target}" + (" — DRY RUN, nothing changes" if dry_run
                                                     else ""))
    worker = threading.Thread(target=service.engine.execute, args=(request,), daemon=True)
    worker.start()
    follower = Follower(store, config, run_id)
    try:
        while worker.is_alive():
            follower.print_new()
            worker.join(0.5)
    except KeyboardInterrupt:
        store.runbooks.request_cancel(run_id)
        echo("cancelling (Ctrl-C again to leave it running in the background)…", err=True)
        worker.join()
    follower.print_new()
    final = follower.run()
    echo(f"run #{run_id} {final.state}: {final.outcome}")
    return final.state


def _approve(args: argparse.Namespace, config: Config, store: Store, library: Any) -> int:
    run = _get_run(store, args.run)
    waiting = [s for s in store.runbooks.steps(run.id) if s.state == "waiting_approval"
               and s.approval is None]
    if not waiting:
        fail(f"run #{run.id} is not waiting for an approval (state: {run.state})", 1)
    who = args.by or login_name()
    decision = "rejected" if args.reject else "approved"
    now = datetime.now(UTC)
    with store.db.tx():
        store.runbooks.decide(waiting[-1].id, decision, who)
        store.audit.write(now, who, f"runbook.{decision}", f"runbook-run/{run.id}",
                          {"step": waiting[-1].step})
    echo(f"run #{run.id}: step {waiting[-1].step} {decision} by {who}")
    return 0


def _cancel(args: argparse.Namespace, config: Config, store: Store, library: Any) -> int:
    run = _get_run(store, args.run)
    now = datetime.now(UTC)
    if run.state == "scheduled":
        store.runbooks.set_state(run.id, "cancelled", now, outcome=f"cancelled by "
                                                                    f"{login_name()}")
    elif not store.runbooks.request_cancel(run.id):
        fail(f"run #{run.id} has already ended ({run.state})", 1)
    store.audit.write(now, login_name(), "runbook.cancel", f"runbook-run/{run.id}")
    echo(f"run #{run.id}: cancel requested (it stops before its next step)")
    return 0


# -- helpers ------------------------------------------------------------------------------

class Follower:
    """Prints a run's steps as they happen (step, state, elapsed)."""

    def __init__(self, store: Store, config: Config, run_id: int) -> None:
        self.store, self.config, self.run_id = store, config, run_id
        self.shown: dict[int, str] = {}
        self.headed: set[int] = set()

    def run(self) -> Run:
        run = self.store.runbooks.get(self.run_id)
        assert run is not None
        return run

    def print_new(self, run_id: int | None = None, indent: str = "  ") -> None:
        """Steps not shown yet (or whose state changed), and those of handed-over runs."""
        run_id = self.run_id if run_id is None else run_id
        for step in self.store.runbooks.steps(run_id):
            if self.shown.get(step.id) == step.state:
                continue
            self.shown[step.id] = step.state
            elapsed = ((step.ended_at or datetime.now(UTC)) - step.started_at).total_seconds()
            detail = step.error or step.summary
            echo(f"{indent}level {step.level + 1}  {step.step:<14} {step.state:<16} "
                 f"{elapsed:6.1f}s  {detail}")
        for child in self.store.runbooks.children(run_id):
            if child.id not in self.headed:
                self.headed.add(child.id)
                echo(f"{indent}→ run #{child.id}: {child.runbook}")
            self.print_new(child.id, indent + "    ")
        sys.stdout.flush()

    def print_all(self) -> None:
        run = self.run()
        echo(f"run #{run.id}: {run.runbook} on {run.target} ({run.trigger}"
             f"{', dry run' if run.dry_run else ''}) — {run.state}")
        self.print_new()
        if run.outcome:
            echo(f"outcome: {run.outcome}")

    def until_done(self) -> int:
        self.print_all()
        while self.run().state not in FINAL:
            time.sleep(1.0)
            self.print_new()
        run = self.run()
        echo(f"run #{run.id} {run.state}: {run.outcome}")
        return EXIT.get(run.state, 1)


def _service(config: Config, store: Store, library: RunbookLibrary) -> RunbookService:
    clock = SystemClock()
    contract = Contract(config, store)
    outbox = Outbox(store, clock, config.root.outbox, {n.name: n for n in config.notifiers},
                    config.root.business_hours.timezone)
    specs = {s.name: s for s in config.enabled_checks}
    incidents = IncidentManager(store, outbox, config.root.agent.name, contract.maintenance,
                                specs)
    return RunbookService(config, store, contract, incidents, specs, clock,
                          Redactor(config.secrets()), kind="cli", library=library)


def _get(library: RunbookLibrary, name: str) -> Runbook:
    try:
        return library.get(name)
    except LookupError as exc:
        fail(str(exc), 2)


def _get_run(store: Store, run_id: int) -> Run:
    run = store.runbooks.get(run_id)
    if run is None:
        fail(f"no runbook run #{run_id}", 1)
    return run


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        fail("not a terminal to confirm on: give --yes to run without asking", 2)
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

