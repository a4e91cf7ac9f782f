"""Runbooks in the agent: triggers, execution, crash recovery, and the hooks the
engine needs (timeline, emergency-contact gate, reaching people, resolving).

- An incident of a check with ``runbook:`` starts a run, if the plan has
  automatic recovery and no maintenance window covers the target.
- Runs are rows in the store; the agent claims due ones (manual runs scheduled
  for later, automatic ones) and executes them in a small pool.
- A run whose owner died (the agent, or a ``kanshi runbook run`` killed
  mid-run) is adopted: resumed at a step that is safe to repeat, else marked
  *interrupted* and people are told. Nothing is silently forgotten.
- A verified recovery resolves the incident.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from agent.config import CheckSpec, Config
from agent.incidents import IncidentManager
from agent.policy.contract import Contract
from agent.policy.escalation import channels_of
from agent.runbook_library import RunbookLibrary, action_class
from agent.secrets import Redactor
from agent.store import Store
from agent.store.incidents import Incident
from agent.store.runbooks import Run
from checks.aws.session import AwsAccount
from checks.base import Clock
from runbooks.actions.aws_base import RESOURCE as AWS
from runbooks.actions.aws_base import AwsSessions
from runbooks.engine import VERIFY, Engine, Outcome, RunRequest
from runbooks.params import ParameterError, resolve
from runbooks.template import TemplateError, render

logger = logging.getLogger(__name__)


def aws_accounts(specs: Mapping[str, CheckSpec]) -> list[AwsAccount]:
    """The AWS accounts of the configured AWS checks: AWS runbook steps name them
    (``account:``, or a target such as ``prod/ap-northeast-1/i-…``)."""
    found: list[AwsAccount] = []
    for spec in specs.values():
        found += [a for a in getattr(spec.config, "accounts", ()) if isinstance(a, AwsAccount)]
    return found


def owner_id(kind: str) -> str:
    """``agent:host:pid`` / ``cli:host:pid``: who executes a run."""
    return f"{kind}:{os.uname().nodename}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Is the process named by ``owner`` still running (on this host)?"""
    if not owner or owner.count(":") != 2:
        return False
    _, host, pid = owner.split(":")
    if host != os.uname().nodename:
        return True  # another host's process: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


class RunbookHooks:
    """What the engine needs from the agent, over the store and the incident layer."""

    def __init__(self, config: Config, store: Store, contract: Contract,
                 incidents: IncidentManager, specs: Mapping[str, CheckSpec], clock: Clock,
                 owner: str) -> None:
        self.config = config
        self.store = store
        self.contract = contract
        self.incidents = incidents
        self.specs = specs
        self.clock = clock
        self.owner = owner

    def record(self, request: RunRequest, kind: str, message: str,
               data: dict[str, Any] | None = None) -> None:
        now = self.clock.now()
        detail = {**(data or {}), "message": message}
        with self.store.db.tx():
            self.store.audit.write(now, self.owner, kind, f"runbook-run/{request.run_id}",
                                   detail)
            if request.incident_id is not None:
                self.store.incidents.add_event(request.incident_id, now, kind, message=message,
                                               actor=f"runbook run #{request.run_id}",
                                               data=data)

    def emergency_ack_needed(self, request: RunRequest) -> bool:
        incident = self._incident(request)
        if incident is None:
            return False
        events = self.store.incidents.events(incident.id)
        return self.contract.needs_emergency_ack(incident, events, self.clock.now())

    def finished(self, request: RunRequest, state: str, outcome: str) -> None:
        if request.nested or request.dry_run:
            return
        incident = self._incident(request)
        if incident is None or not incident.is_open:
            return
        if state == "succeeded":
            self.incidents.resolve_by_runbook(incident, self.clock.now(), outcome,
                                              request.run_id)
        elif state in ("failed", "interrupted", "refused"):
            self.notify(request, "runbook_failed", (), f"runbook {request.runbook.name} "
                                                        f"{state}: {outcome}")

    def notify(self, request: RunRequest, kind: str, contacts: tuple[str, ...],
               message: str) -> str:
        """Queue a notice about this run to contacts (or the incident's channels)."""
        now = self.clock.now()
        incident = self._incident(request)
        channels = self._channels(incident, contacts)
        if not channels:
            return "nobody to tell: no channel reaches them"
        with self.store.db.tx():
            if incident is not None:
                event = self.store.incidents.add_event(
                    incident.id, now, kind, message=message,
                    actor=f"runbook run #{request.run_id}", data={"channels": channels})
                self.incidents.notice(incident, kind, channels, message, now, event)
            else:
                self.incidents.outbox.enqueue(self._loose_fields(request, kind, message, now),
                                              channels, event_id=None)
        return f"told {', '.join(contacts) or 'the usual channels'} ({', '.join(channels)})"

    def _channels(self, incident: Incident | None, contacts: tuple[str, ...]) -> list[str]:
        root = self.config.root
        if contacts:
            return channels_of(root.contacts, contacts, open_now=True)
        if incident is not None and incident.check in self.specs:
            return list(self.specs[incident.check].notify)
        return [n.name for n in self.config.enabled_notifiers]

    def _loose_fields(self, request: RunRequest, kind: str, message: str,
                      now: datetime) -> dict[str, Any]:
        return {"kind": kind, "incident_id": None, "dedup_key": f"runbook/{request.target}",
                "host": self.config.root.agent.name, "check": request.runbook.name,
                "target": request.target, "status": "UNKNOWN", "previous_status": "UNKNOWN",
                "severity": "B", "message": message, "detected_at": now, "at": now,
                "attempts": None, "outage_seconds": None, "flap_percent": None}

    def _incident(self, request: RunRequest) -> Incident | None:
        if request.incident_id is None:
            return None
        return self.store.incidents.get(request.incident_id)


class RunbookService:
    """Owns the engine, the library and the run pool of one process."""

    def __init__(self, config: Config, store: Store, contract: Contract,
                 incidents: IncidentManager, specs: Mapping[str, CheckSpec], clock: Clock,
                 redactor: Redactor, *, kind: str = "agent", poll: float = 1.0,
                 library: RunbookLibrary | None = None, shared: bool = False) -> None:
        self.config = config
        self.store = store
        #: Other agents use the store too: their runs are theirs while their lease lives.
        self.shared = shared
        self.clock = clock
        self.owner = owner_id(kind)
        self.library = library or RunbookLibrary.load(config.root.runbooks.directories)
        self.hooks = RunbookHooks(config, store, contract, incidents, specs, clock, self.owner)
        settings = config.root.runbooks
        resources = {"service_manager": settings.service_manager, "notify": self.hooks.notify,
                     AWS: AwsSessions(aws_accounts(specs),
                                      allowed_calls=settings.aws_call_allow)}
        self.engine = Engine(store.runbooks, self.hooks, clock, self.library.get, action_class,
                             resources, scrub=redactor,
                             emergency_ack_timeout=settings.emergency_ack_timeout, poll=poll)
        self.contract = contract
        self.specs = specs
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="runbook")
        self._slots = threading.Semaphore(settings.concurrency)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.recover(at_start=True)
        self._thread = threading.Thread(target=self._loop, name="runbooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking runs; runs in flight leave off where they are (their commands are
        killed) and are adopted at the next start."""
        self._stop.set()
        self.engine.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        beats = 0
        while not self._stop.wait(1.0):
            try:
                self.run_due()
                beats += 1
                if beats % 30 == 0:
                    self.recover(at_start=False)
            except Exception:
                logger.exception("runbook pass failed; trying again shortly")

    def run_due(self, wait: bool = False) -> list[int]:
        """Claim due runs and execute them (in the pool; ``wait`` for tests)."""
        free = 0
        while self._slots.acquire(blocking=False):
            free += 1
        claimed = self.store.runbooks.claim_due(self.clock.now(), self.owner, free) \
            if free else []
        for _ in range(free - len(claimed)):
            self._slots.release()
        futures = [self._pool.submit(self._execute, run) for run in claimed]
        if wait:
            for future in futures:
                future.result()
        return [r.id for r in claimed]

    def _execute(self, run: Run, resume: tuple[int, str | None] | None = None,
                 prior: dict[str, Any] | None = None) -> Outcome | None:
        try:
            request = self.request_for(run, resume, prior)
            if request is None:
                return None
            return self.engine.execute(request)
        finally:
            self._slots.release()

    def request_for(self, run: Run, resume: tuple[int, str | None] | None = None,
                    prior: dict[str, Any] | None = None) -> RunRequest | None:
        """The engine's request for a stored run (None if it cannot run: ended so)."""
        try:
            book = self.library.get(run.runbook)
            params = resolve(book, run.params)
        except (LookupError, ParameterError) as exc:
            self.store.runbooks.set_state(run.id, "failed", self.clock.now(), outcome=str(exc))
            return None
        level, step = resume or (0, None)
        return RunRequest(run.id, book, run.target, params, run.trigger, run.dry_run,
                          run.incident_id, level, step, prior or {})

    # -- triggers ----------------------------------------------------------------------

    def on_incident_opened(self, spec: CheckSpec, incident: Incident, at: datetime) -> None:
        """Start the check's runbook for a new incident, if the contract allows."""
        ref = spec.runbook
        if ref is None:
            return
        reason = self._why_not_automatic(incident, at)
        if reason is None:
            try:
                target, params = self._rendered(ref.target, ref.params, incident)
                resolve(self.library.get(ref.name), params)
            except (LookupError, ParameterError, TemplateError) as exc:
                reason = f"the check's runbook settings are wrong: {exc}"
        if reason is not None:
            self.store.incidents.add_event(incident.id, at, "runbook_not_run",
                                           message=f"{ref.name} not started: {reason}")
            return
        run_id = self.store.runbooks.create(
            runbook=ref.name, target=target, params=params, trigger="auto",
            incident_id=incident.id, requested_by="kanshi", dry_run=False, state="scheduled",
            scheduled_for=at, now=at)
        self.store.incidents.add_event(incident.id, at, "runbook_requested",
                                       message=f"{ref.name} on {target} (run #{run_id})",
                                       data={"run": run_id})

    def _why_not_automatic(self, incident: Incident, at: datetime) -> str | None:
        plan = self.config.root.plan
        if not plan.automatic_recovery:
            return f"the plan ({plan.name}) has no automatic recovery: notify only"
        window = self.contract.maintenance.active(incident.check, incident.target, at)
        if window is not None:
            return f"maintenance window {window.name}: no automatic runbooks"
        return None

    def _rendered(self, target: str, params: dict[str, Any],
                  incident: Incident) -> tuple[str, dict[str, Any]]:
        context = {"check": incident.check, "target": incident.target,
                   "host": self.config.root.agent.name}
        return str(render(target, context)), dict(render(dict(params), context))

    # -- crash recovery --------------------------------------------------------------------

    def recover(self, at_start: bool) -> None:
        """Adopt runs whose owner died: resume them if safe, else mark them interrupted.

        At start every other agent's run is dead (this agent holds the state
        directory's lock); a ``kanshi runbook run`` process is asked whether it lives.
        """
        now = self.clock.now()
        live = set(self.store.leases.live(now)) if self.shared else set()
        for run in self.store.runbooks.abandoned(now + timedelta(seconds=1)):
            if run.owner == self.owner:
                continue
            agent_run = bool(run.owner) and str(run.owner).startswith("agent:")
            if self.shared and agent_run:
                if run.owner in live:
                    continue  # a live agent's run, wherever it is
            elif not (at_start and agent_run) and owner_alive(run.owner):
                continue
            if self.store.runbooks.adopt(run.id, self.owner, now, now + timedelta(seconds=1)):
                self._resume_or_interrupt(run)

    def _resume_or_interrupt(self, run: Run) -> None:
        steps = [s for s in self.store.runbooks.steps(run.id) if s.level == run.level]
        last = steps[-1] if steps else None
        prior = {s.step: {"outputs": s.outputs, "changed": s.changed, "summary": s.summary}
                 for s in steps if s.state == "succeeded"}
        if last is not None and last.state == "running" and not last.resumable:
            self._interrupt(run, f"interrupted while running step {last.step} ({last.action}),"
                                 " which is not safe to repeat: check the target by hand")
            return
        resume_at = last.step if last is not None and last.state in (
            "running", "waiting_approval") else self._next_step(run, last)
        logger.warning("runbook run #%d (%s on %s) was abandoned: resuming at level %d%s",
                       run.id, run.runbook, run.target, run.level + 1,
                       f", step {resume_at}" if resume_at else "")
        self._pool.submit(self._execute_adopted, run, (run.level, resume_at), prior)

    def _execute_adopted(self, run: Run, resume: tuple[int, str | None],
                         prior: dict[str, Any]) -> None:
        request = self.request_for(run, resume, prior)
        if request is None:
            return
        self.hooks.record(request, "runbook_resumed", f"resumed after its owner "
                                                       f"({run.owner}) stopped")
        self.engine.execute(request)

    def _next_step(self, run: Run, last: Any) -> str | None:
        """The step after ``last`` in its level (None: start of the level / its verify)."""
        if last is None:
            return None
        try:
            level = self.library.get(run.runbook).levels[run.level]
        except (LookupError, IndexError):
            return None
        ids = [s.id for s in level.steps]
        if last.step in ids and ids.index(last.step) + 1 < len(ids):
            return ids[ids.index(last.step) + 1]
        return VERIFY  # every step is done (or the verify itself was cut short)

    def _interrupt(self, run: Run, message: str) -> None:
        now = self.clock.now()
        self.store.runbooks.set_state(run.id, "interrupted", now, outcome=message)
        self.store.runbooks.unlock(run.target, run.id)
        request = self.request_for(run)
        if request is None:
            return
        self.hooks.record(request, "runbook_interrupted", message)
        self.hooks.notify(request, "runbook_failed", (), f"runbook run #{run.id} "
                                                          f"({run.runbook} on {run.target}): "
                                                          f"{message}")
        logger.error("runbook run #%d: %s", run.id, message)
