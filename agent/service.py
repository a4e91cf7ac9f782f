"""The running agent: checks on a schedule, results into incidents, notices out."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.clock import SystemClock
from agent.config import CheckSpec, Config
from agent.confirm import CheckState, advance
from agent.dispatch import Dispatcher
from agent.emergency import EmergencyNotices
from agent.heartbeat_out import HeartbeatSender, agent_health
from agent.incidents import IncidentManager
from agent.leases import POLICY, WorkLeases, check_item
from agent.lock import StateLock
from agent.outbox import Outbox
from agent.policy.contract import Contract
from agent.policy.watch import PolicyWatch
from agent.reserve import SpaceReserve
from agent.runbook_library import RunbookLibrary
from agent.runbook_service import RunbookService, owner_id
from agent.runner import CheckRunner
from agent.scheduler import CheckScheduler
from agent.sdnotify import SystemdNotifier
from agent.secrets import Redactor
from agent.store import Store, open_store
from checks.base import Check, CheckContext, Clock, LocalResources, Result, Status
from notifiers.base import Notifier

if TYPE_CHECKING:
    from agent.api.server import ApiServer
    from checks.aws.publish import CloudWatchPublisher

logger = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
#: Escalations, clocks and end-of-maintenance notices are looked at this often.
POLICY_EVERY = 30.0


def build_check(spec: CheckSpec, clock: Clock, shared: LocalResources, scrub: Redactor,
                state: dict[str, Any] | None = None) -> Check:
    """Instantiate the check a spec describes."""
    context = CheckContext(clock=clock, state=state if state is not None else {}, scrub=scrub,
                           shared=shared)
    return spec.cls(spec.name, spec.config, timeout=spec.timeout, context=context)


class Agent:
    """Wires config, store, checks, incidents and the outbox together."""

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 store: Store | None = None, library: RunbookLibrary | None = None,
                 share_work: bool | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.redactor = Redactor(config.secrets())
        url = config.root.store.url
        self.store = store or open_store(
            config.state_dir, url=url.get_secret_value() if url is not None else None)
        #: Other agents may share the store (PostgreSQL): the work is leased.
        self.shared_store = self.store.db.shared
        self.agent_id = owner_id("agent")
        self.specs = {s.name: s for s in config.enabled_checks}
        self.shared = LocalResources()
        self.checks = {name: build_check(spec, self.clock, self.shared, self.redactor,
                                         self.store.checks.kv_load(name))
                       for name, spec in self.specs.items()}
        self.notifiers = _build_notifiers(config)
        channels = {n.name: n for n in config.notifiers}
        settings = config.root.outbox
        self.outbox = Outbox(self.store, self.clock, settings, channels,
                             config.root.agent.timezone)
        self.dispatcher = Dispatcher(self.store, self.clock, settings, self.notifiers,
                                     self.outbox, scrub=self.redactor,
                                     owner=self.agent_id if self.shared_store else None)
        self.contract = Contract(config, self.store)
        self.incidents = IncidentManager(self.store, self.outbox, config.root.agent.name,
                                         self.contract.maintenance, self.specs)
        self.runbooks = RunbookService(config, self.store, self.contract, self.incidents,
                                       self.specs, self.clock, self.redactor,
                                       library=library, shared=self.shared_store)
        self.incidents.on_opened = self.runbooks.on_incident_opened
        self.policy = PolicyWatch(config, self.contract, self.store, self.incidents, self.specs,
                                  self.clock)
        self.emergency = EmergencyNotices(self.notifiers, channels, config.root.agent.name)
        self.reserve = SpaceReserve(config.state_dir)
        self.lock = StateLock(config.state_dir)
        self.runner = CheckRunner(self.clock)
        self.publisher = _build_publisher(config)
        self.api: ApiServer | None = None
        self.sd = SystemdNotifier()
        self.heartbeat_out: HeartbeatSender | None = None
        self.scheduler = CheckScheduler(self.run_check, workers=config.root.scheduler.workers,
                                        spread=config.root.scheduler.spread)
        self.leases: WorkLeases | None = None
        # Tests that drive one agent by hand on PostgreSQL say share_work=False: every
        # check is theirs, as on SQLite (the store's code path is still the shared one).
        if self.shared_store if share_work is None else share_work:
            self.leases = WorkLeases(self.store.leases, self.agent_id,
                                     [POLICY, *map(check_item, self.specs)],
                                     config.root.store.lease, self.clock,
                                     self._gained, self._lost)
        self._run_id: int | None = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Lock the state directory, record this run, close what left the config, go.

        Raises :class:`agent.lock.AlreadyRunning` if another agent uses the SQLite store.
        On a shared store the checks this agent runs come and go with its leases.
        """
        if not self.shared_store:
            self.lock.acquire()
            self.reserve.ensure()
        now = self.clock.now()
        self._run_id = self.store.runs.start(os.uname().nodename, os.getpid(), __version__, now)
        self.close_unconfigured()
        if self.leases is not None:
            self.leases.join()  # the first share is scheduled before the scheduler starts
            self.leases.start()
        else:
            for name, spec in self.specs.items():
                self.scheduler.add_check(name, spec.interval)
        self.scheduler.add_task("heartbeat", self.heartbeat, self.config.root.agent.heartbeat)
        self.scheduler.add_task("prune-history", self.prune_history, PRUNE_EVERY)
        self.scheduler.add_task("policy", self._policy_tick, POLICY_EVERY)
        beat = self.config.root.heartbeat_out
        if beat is not None and beat.enabled:
            self.heartbeat_out = HeartbeatSender(
                beat, lambda: agent_health(self, beat.unhealthy_when))
            self.scheduler.add_task("heartbeat-out", self.heartbeat_out.beat, beat.interval)
        if self.sd.watchdog_interval is not None:
            self.scheduler.add_task("watchdog", self._watchdog, self.sd.watchdog_interval)
        if self.config.root.api.enabled:
            try:
                self._start_api()
            except Exception:
                self.store.runs.stop(self._run_id, self.clock.now())
                if self.leases is not None:
                    self.leases.stop()
                if not self.shared_store:
                    self.lock.release()
                raise
        self.dispatcher.start()
        self.runbooks.start()
        self.scheduler.start()
        self.sd.ready(f"{len(self.specs)} checks, {len(self.notifiers)} channels")
        logger.info("kanshi %s started: %d checks, %d channels, store %s", __version__,
                    len(self.specs), len(self.notifiers), self.store.db.path)

    def stop(self) -> None:
        """Stop scheduling, let running checks and sends finish, record a clean stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.sd.stopping()
        if self.api is not None:
            api = self.api
            _attempt("stopping the API", api.stop)
        _attempt("stopping the scheduler", lambda: self.scheduler.shutdown(wait=True))
        if self.heartbeat_out is not None:
            _attempt("closing the heartbeat", self.heartbeat_out.close)
        if self.leases is not None:
            _attempt("giving back leases", self.leases.stop)
        _attempt("stopping runbooks", self.runbooks.stop)
        senders_done = self.dispatcher.stop()
        for check in self.checks.values():
            _attempt(f"closing check {check.name}", check.close)
        _attempt("closing shared resources", self.shared.close)
        for notifier in self.notifiers.values():
            _attempt(f"closing channel {notifier.name}", notifier.close)
        if self._run_id is not None:
            run_id = self._run_id
            _attempt("recording the stop", lambda: self.store.runs.stop(run_id, self.clock.now()))
        if senders_done:  # a sender still stuck in a send may yet write its outcome
            self.store.close()
        if not self.shared_store:
            self.lock.release()
        logger.info("kanshi stopped")

    def _start_api(self) -> None:
        """Serve the API, the web page and /metrics; on the very first start, make an
        admin token so someone can log in (written to a file only its owner reads)."""
        from agent.api.server import ApiServer
        from agent.web import add_web

        self.api = ApiServer(self, self.config.root.api, extra=(add_web,))
        try:
            self.api.start()
        except Exception:
            self.api = None
            raise
        if not self.store.tokens.all():
            try:
                path = write_initial_token(self.store, self.config.state_dir, self.clock.now())
            except Exception:  # on a shared store another agent made it first
                logger.info("web page and API at %s", self.api.public_url)
                return
            logger.warning("no API token existed: created token 'admin' (role admin) in %s — "
                           "log in at %s with it, then make your own with `kanshi token add` "
                           "and revoke it", path, self.api.public_url)
        else:
            logger.info("web page and API at %s", self.api.public_url)

    def _watchdog(self) -> None:
        """Tell systemd we are alive — not while a sender is dead: a restart repairs it."""
        if self.dispatcher.alive:
            self.sd.watchdog()

    def heartbeat(self) -> None:
        """Record that the agent is alive (and that its parts are)."""
        if self._run_id is not None:
            self.store.runs.beat(self._run_id, self.clock.now())
        if self.shared_store:
            self.store.notifications.release_dead(self.clock.now(), self.agent_id)
        if not self.dispatcher.alive:
            logger.critical("a notification worker has died: notices are not being sent; "
                            "restart kanshi")
        if not self.shared_store:
            self.reserve.ensure()

    def _gained(self, items: set[str]) -> None:
        for item in sorted(items):
            name = item.removeprefix("check:")
            if item != name and name in self.specs:
                self.scheduler.add_check(name, self.specs[name].interval)

    def _lost(self, items: set[str]) -> None:
        for item in sorted(items):
            name = item.removeprefix("check:")
            if item != name:
                self.scheduler.remove_check(name)

    def _runs(self, item: str) -> bool:
        """Is ``item`` this agent's to run (always, on a store of its own)?"""
        return self.leases is None or self.leases.holds(item)

    def _policy_tick(self) -> None:
        if self._runs(POLICY):
            self.policy.tick()
        self.dispatcher.wake()

    def prune_history(self) -> None:
        if not self._runs(POLICY):
            return
        cutoff = self.clock.now() - timedelta(seconds=self.config.root.store.history)
        removed = self.store.checks.prune_history(cutoff)
        if removed:
            logger.info("pruned %d results older than %s", removed, cutoff.date())

    # -- one run of one check ---------------------------------------------------

    def run_check(self, name: str) -> float:
        """Run one check now and process its results; return the next interval."""
        spec, check = self.specs[name], self.checks[name]
        if not self._runs(check_item(name)):
            return spec.interval  # another agent's now; the job is being removed
        try:
            memory = json.dumps(check.context.state, sort_keys=True, default=str)
            results = self.runner.run(check, spec.timeout)
            soft = self._process_or_spill(spec, results)
            if self.publisher is not None and spec.type_name in PUBLISHED_TYPES:
                self.publisher.publish(results)  # never raises; logs why it could not
            if json.dumps(check.context.state, sort_keys=True, default=str) != memory:
                self.store.checks.kv_save(name, dict(check.context.state))
        except Exception:  # the store or a bug: log it, keep the schedule alive
            logger.exception("processing the results of check %s failed", name)
            return spec.retry_interval  # nothing was recorded: look again soon
        self.dispatcher.wake()
        return spec.retry_interval if soft else spec.interval

    def _process_or_spill(self, spec: CheckSpec, results: list[Result]) -> bool:
        """:meth:`process`, surviving a full disk under the store (see agent.reserve)."""
        try:
            return self.process(spec, results)
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
        if self.reserve.release():
            logger.critical("the disk holding %s is full: released kanshi's %d MB reserve "
                            "so alerts can still be recorded — free space there now",
                            self.config.state_dir, self.reserve.size // 2**20)
            try:
                return self.process(spec, results)
            except sqlite3.OperationalError as exc:
                if not _disk_full(exc):
                    raise
        sent = self.emergency.send(spec, results, self.clock.now())
        logger.critical("the disk holding %s is full and the reserve is spent: results of %s "
                        "are not recorded (%d unrecorded notice(s) sent directly)",
                        self.config.state_dir, spec.name, sent)
        return True

    def process(self, spec: CheckSpec, results: list[Result]) -> bool:
        """Store results, advance confirmation, open/close incidents.

        Returns True while any target is waiting for confirmation (retry soon).
        """
        states = self.store.checks.states(spec.name)
        now = self.clock.now()
        soft = False
        whole_run = any(r.target == "" for r in results)  # about the check as a whole
        with self.store.db.tx():
            if self.leases is not None and not self.store.leases.holds(
                    check_item(spec.name), self.agent_id, now):
                # The lease lapsed while the check ran (a stall, a lost store): another
                # agent may run it now, so these results are not ours to record.
                logger.warning("check %s: results dropped, its lease is no longer ours",
                               spec.name)
                return False
            for result in self._with_check_level(spec, results, states):
                before = states.get(result.target) or CheckState.fresh(result.at or now)
                step = advance(before, result.status, result.at or now, spec.max_attempts,
                               spec.flapping)
                self.store.checks.record(result, step.state)
                self.incidents.apply(spec, result, step)
                soft = soft or step.state.soft
                if result.target == "" and not whole_run and _settled_ok(step.state):
                    self.store.checks.forget(spec.name, "")  # the run-level trouble is over
            if not whole_run:
                self._forget_vanished(spec, states, {r.target for r in results}, now)
        return soft

    def _with_check_level(self, spec: CheckSpec, results: list[Result],
                          states: dict[str, CheckState]) -> Iterable[Result]:
        """Results plus, after a run that worked, an OK for an earlier check-level failure."""
        yield from results
        failed_before = "" in states and not _settled_ok(states[""])
        if failed_before and not any(r.target == "" for r in results):
            first = results[0]
            yield Result(Status.OK, "the check answers again", "", {}, spec.name, first.at,
                         first.duration)

    def _forget_vanished(self, spec: CheckSpec, states: dict[str, CheckState],
                         reported: set[str], now: datetime) -> None:
        # The check-level row ("") goes once it is settled OK: it only says the check
        # answers again, and would otherwise linger as an extra target forever.
        gone = states.keys() - reported
        if "" in gone and not _settled_ok(states[""]):
            gone.discard("")
        for target in gone:
            self.incidents.close_vanished(spec, target, now)
            self.store.checks.forget(spec.name, target)
            logger.info("check %s no longer reports %s; its state was dropped", spec.name,
                        target)

    def close_unconfigured(self) -> None:
        """Close incidents and drop state of checks no longer in the config."""
        now = self.clock.now()
        for incident in self.store.incidents.find(open_only=True, limit=100_000):
            if incident.check not in self.specs:
                self.incidents.close_orphan(incident, now, "the check is no longer configured "
                                                          "(removed or disabled)")
        for name in self.store.checks.checks_with_state() - self.specs.keys():
            self.store.checks.forget(name)

    def run_forever(self) -> None:
        """Start, block until :meth:`request_stop`, then stop cleanly."""
        try:
            self.start()
        except BaseException:
            self.store.close()
            raise
        try:
            while not self._stop_requested.wait(1.0):
                pass
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`run_forever` to stop (safe from a signal handler)."""
        self._stop_requested.set()


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _settled_ok(state: CheckState) -> bool:
    return state.hard_status is Status.OK and not state.soft


def _attempt(what: str, action: Callable[[], object]) -> None:
    """Run one step of a shutdown; a failure is logged and the shutdown goes on."""
    try:
        action()
    except Exception:
        logger.exception("%s failed", what)


def _build_notifiers(config: Config) -> dict[str, Notifier]:
    return {spec.name: spec.cls(spec.name, spec.config) for spec in config.enabled_notifiers}


#: Check types whose results the CloudWatch publisher sends (memory/swap, disk).
PUBLISHED_TYPES = frozenset({"memory", "disk"})


def _build_publisher(config: Config) -> CloudWatchPublisher | None:
    settings = config.root.cloudwatch_publish
    if settings is None or not settings.enabled:
        return None
    from checks.aws.publish import CloudWatchPublisher  # boto3 only when configured

    return CloudWatchPublisher(settings)


#: Where the first start leaves the initial admin token (mode 0600).
INITIAL_TOKEN_FILE = "initial-admin-token"


def write_initial_token(store: Store, state_dir: Path, now: datetime) -> Path:
    """Create token ``admin`` and write it to ``state_dir/initial-admin-token`` (0600);
    only its hash is stored."""
    from agent.api.tokens import new_token

    token = new_token()
    path = state_dir / INITIAL_TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    store.tokens.add("admin", "admin", token, "kanshi (first start)", now)
    return path
