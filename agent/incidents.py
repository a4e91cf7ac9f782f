"""Turn confirmed transitions into incidents, timeline events and notices.

One open incident per (check, target) — the database enforces it. Notices go
out on transitions only: problem, change, recovery (with the outage duration),
flapping start/stop, and "no longer reported". While a check is flapping its
transitions are written to the timeline but not notified.

Call :meth:`IncidentManager.apply` inside the transaction that stores the
result, so incident, timeline and outbox change together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from agent.config import CheckSpec
from agent.confirm import Step, Transition
from agent.outbox import Outbox
from agent.policy.maintenance import MaintenanceSchedule
from agent.store import Store
from agent.store.incidents import Incident, dedup_key
from checks.base import Result, Status, worst

logger = logging.getLogger(__name__)

#: Notices that tell someone about a problem…
PROBLEM_NOTICES = frozenset({"problem", "change", "flapping_start"})
#: …notices that told someone first (an escalation can be the first word)…
TOLD = PROBLEM_NOTICES | {"escalation", "emergency"}
#: …and those that only make sense after one of them.
FOLLOW_UPS = frozenset({"recovery", "flapping_stop", "vanished", "reminder"})


class IncidentManager:
    def __init__(self, store: Store, outbox: Outbox, host: str,
                 maintenance: MaintenanceSchedule | None = None,
                 specs: Mapping[str, CheckSpec] | None = None) -> None:
        self.store = store
        self.outbox = outbox
        self.host = host
        self.maintenance = maintenance
        self.specs = specs
        #: called (inside the transaction) when an incident opens: starts its runbook
        self.on_opened: Callable[[CheckSpec, Incident, datetime], None] | None = None

    def apply(self, spec: CheckSpec, result: Result, step: Step) -> bool:
        """Record what ``step`` means for incidents; True if a notice was queued."""
        incident = self.store.incidents.open_for(dedup_key(spec.name, result.target))
        if step.flapping_changed == "start":
            return self._flapping_started(spec, result, step, incident)
        if step.flapping_changed == "stop":
            return self._flapping_stopped(spec, result, step, incident)
        if step.transition is None:
            return False
        if step.state.flapping:
            self._quiet_event(incident, step.transition, result)
            return False
        return self._transition(spec, result, step.transition, incident)

    def close_vanished(self, spec: CheckSpec, target: str, at: datetime) -> bool:
        """The check no longer reports ``target``: close its incident, if any."""
        incident = self.store.incidents.open_for(dedup_key(spec.name, target))
        if incident is None:
            return False
        message = "the check no longer reports this target"
        event = self.store.incidents.add_event(incident.id, at, "closed", message=message)
        self.store.incidents.resolve(incident.id, at)
        self._notify(spec, incident, "vanished", Status.OK, incident.status, message, at,
                     event, outage=(at - incident.opened_at).total_seconds())
        return True

    def resolve_by_runbook(self, incident: Incident, at: datetime, outcome: str,
                           run_id: int) -> None:
        """A runbook verified the recovery: the incident is resolved now, and the check
        starts again from a confirmed OK (a new failure is confirmed afresh)."""
        with self.store.db.tx():
            self.store.incidents.add_event(incident.id, at, "recovered", status=Status.OK,
                                           message=outcome, actor=f"runbook run #{run_id}")
            event = self.store.incidents.add_event(incident.id, at, "closed",
                                                   message="recovery verified by the runbook")
            self.store.incidents.resolve(incident.id, at)
            self.store.checks.settle(incident.check, incident.target, at)
            if not self._suppressed(incident, "recovery", at):
                fields = self._fields(incident, "recovery", Status.OK, incident.status,
                                      outcome, at,
                                      outage=(at - incident.opened_at).total_seconds())
                self.outbox.enqueue(fields, self._routes(incident), event_id=event)
        logger.info("incident #%d resolved by runbook run #%d", incident.id, run_id)

    def _routes(self, incident: Incident) -> list[str]:
        spec = self.specs.get(incident.check) if self.specs else None
        if spec is not None:
            return list(spec.notify)
        return [n for n, s in self.outbox.channels.items() if s.enabled]

    def close_orphan(self, incident: Incident, at: datetime, reason: str) -> None:
        """Close an incident whose check is gone, telling every enabled channel."""
        with self.store.db.tx():
            if not self.store.incidents.resolve(incident.id, at):
                return  # another agent closed it first (agents start together)
            event = self.store.incidents.add_event(incident.id, at, "closed", message=reason)
            if not self._suppressed(incident, "vanished", at):
                fields = self._fields(incident, "vanished", Status.OK, incident.status, reason,
                                      at, outage=(at - incident.opened_at).total_seconds())
                channels = [n for n, spec in self.outbox.channels.items() if spec.enabled]
                self.outbox.enqueue(fields, channels, event_id=event)
        logger.info("incident #%d closed: %s", incident.id, reason)

    def _transition(self, spec: CheckSpec, result: Result, t: Transition,
                    incident: Incident | None) -> bool:
        if t.kind == "recovery":
            if incident is None:
                return False
            return self._recovered(spec, result, incident, t.since, t.confirmed_at, "recovery")
        if incident is None:
            return self._open(spec, result, t)
        event = self.store.incidents.add_event(
            incident.id, t.confirmed_at, "status_changed", status=t.new, message=result.message,
            data={"from": t.old.name, "to": t.new.name})
        self.store.incidents.update(incident.id, status=t.new, message=result.message)
        self._notify(spec, incident, "change", t.new, t.old, result.message, t.confirmed_at, event)
        return True

    def _open(self, spec: CheckSpec, result: Result, t: Transition) -> bool:
        incidents = self.store.incidents
        incident_id = incidents.create(spec.name, result.target, t.new, spec.severity,
                                       result.message, t.since)
        incidents.add_event(incident_id, t.since, "detected", status=t.new,
                            message="first failed result")
        event = incidents.add_event(incident_id, t.confirmed_at, "confirmed", status=t.new,
                                    message=result.message,
                                    data={"attempts": spec.max_attempts,
                                          "severity": spec.severity})
        incident = incidents.get(incident_id)
        assert incident is not None
        logger.warning("incident #%d opened: %s %s %s — %s", incident_id, spec.name,
                       result.target, t.new.name, result.message)
        self._notify(spec, incident, "problem", t.new, t.old, result.message, t.confirmed_at,
                     event)
        if self.on_opened is not None:
            self.on_opened(spec, incident, t.confirmed_at)
        return True

    def _recovered(self, spec: CheckSpec, result: Result, incident: Incident,
                   since: datetime, at: datetime, kind: str) -> bool:
        incidents = self.store.incidents
        incidents.add_event(incident.id, since, "recovered", status=Status.OK,
                            message=result.message)
        event = incidents.add_event(incident.id, at, "closed", message="recovery confirmed")
        incidents.resolve(incident.id, at)
        outage = (since - incident.opened_at).total_seconds()
        logger.info("incident #%d recovered after %.0f s: %s %s", incident.id, outage,
                       spec.name, result.target)
        self._notify(spec, incident, kind, Status.OK, incident.status, result.message, at,
                     event, outage=outage)
        return True

    def _flapping_started(self, spec: CheckSpec, result: Result, step: Step,
                          incident: Incident | None) -> bool:
        incidents = self.store.incidents
        status = result.status if result.status.is_problem else _worst_recent(step)
        if incident is None:
            incident_id = incidents.create(spec.name, result.target, status, spec.severity,
                                           result.message, result.at or step.state.hard_since,
                                           flapping=True)
            incident = incidents.get(incident_id)
            assert incident is not None
        else:
            incidents.update(incident.id, flapping=True)
        if step.transition is not None:
            self._quiet_event(incident, step.transition, result)
        at = result.at or step.state.hard_since
        event = incidents.add_event(incident.id, at, "flapping_started", status=status,
                                    message=f"{step.flap_percent:.0f}% of recent results "
                                            "changed status",
                                    data={"percent": round(step.flap_percent, 1),
                                          "severity": spec.severity})
        self._notify(spec, incident, "flapping_start", status, incident.status, result.message,
                     at, event, flap_percent=step.flap_percent)
        return True

    def _flapping_stopped(self, spec: CheckSpec, result: Result, step: Step,
                          incident: Incident | None) -> bool:
        if incident is None:
            return False
        incidents = self.store.incidents
        at = result.at or step.state.hard_since
        recovering = not step.state.hard_status.is_problem
        if step.transition is not None and not recovering:
            self._quiet_event(incident, step.transition, result)
        incidents.add_event(incident.id, at, "flapping_stopped", status=step.state.hard_status,
                            data={"percent": round(step.flap_percent, 1)})
        incidents.update(incident.id, flapping=False)
        if recovering:
            # OK since hard_since — but never before the incident itself opened.
            since = max(step.state.hard_since, incident.opened_at)
            return self._recovered(spec, result, incident, since, at, "flapping_stop")
        incidents.update(incident.id, status=step.state.hard_status, message=result.message)
        event = incidents.add_event(incident.id, at, "status_changed",
                                    status=step.state.hard_status, message=result.message)
        self._notify(spec, incident, "flapping_stop", step.state.hard_status, incident.status,
                     result.message, at, event)
        return True

    def _quiet_event(self, incident: Incident | None, t: Transition, result: Result) -> None:
        """A transition while flapping: on the timeline, not notified."""
        if incident is None:
            return
        kind = {"problem": "status_changed", "change": "status_changed",
                "recovery": "recovered"}[t.kind]
        self.store.incidents.add_event(incident.id, t.confirmed_at, kind, status=t.new,
                                       message=result.message,
                                       data={"notified": False, "reason": "flapping"})
        self.store.incidents.update(incident.id, status=t.new if t.new.is_problem else None)

    def _notify(self, spec: CheckSpec, incident: Incident, kind: str, status: Status,
                previous: Status, message: str, at: datetime, event_id: int,
                **extra: Any) -> None:
        if self._suppressed(incident, kind, at):
            return
        fields = self._fields(incident, kind, status, previous, message, at,
                              attempts=spec.max_attempts, **extra)
        self.outbox.enqueue(fields, spec.notify, event_id=event_id)

    def notice(self, incident: Incident, kind: str, channels: list[str], message: str,
               at: datetime, event_id: int, status: Status | None = None,
               **extra: Any) -> bool:
        """Queue a policy notice (escalation, reminder…) unless suppressed."""
        if self._suppressed(incident, kind, at):
            return False
        fields = self._fields(incident, kind, incident.status if status is None else status,
                              incident.status,
                              message, at, **extra)
        return bool(self.outbox.enqueue(fields, channels, event_id=event_id))

    def _suppressed(self, incident: Incident, kind: str, at: datetime) -> bool:
        """Quiet during a maintenance window; and never a follow-up (recovery, change)
        to someone who was never told of the problem. Both go on the timeline."""
        window = None
        if self.maintenance is not None:
            window = self.maintenance.active(incident.check, incident.target, at)
        if window is not None:  # held: released when the window ends (agent.policy.watch)
            self.store.incidents.add_event(
                incident.id, at, "notice_held", message=f"{kind} notice held: maintenance "
                                                        f"window {window.name}",
                data={"kind": kind, "window": window.name})
            return True
        if kind in FOLLOW_UPS and not self.was_notified(incident.id):
            self.store.incidents.add_event(
                incident.id, at, "notice_suppressed",
                message=f"{kind} notice not sent: the problem itself was never notified",
                data={"kind": kind})
            return True
        return False

    def was_notified(self, incident_id: int) -> bool:
        """Was anyone ever told of this incident's problem?"""
        return any(n.kind in TOLD for n in self.store.notifications.for_incident(incident_id))

    def _fields(self, incident: Incident, kind: str, status: Status, previous: Status,
                message: str, at: datetime, **extra: Any) -> dict[str, Any]:
        """What a notice about ``incident`` says (its templates' variables)."""
        return {
            "kind": kind, "incident_id": incident.id, "dedup_key": incident.dedup_key,
            "host": self.host, "check": incident.check, "target": incident.target,
            "status": status.name, "previous_status": previous.name,
            "severity": incident.severity, "message": message,
            "detected_at": incident.opened_at, "at": at, "attempts": extra.get("attempts"),
            "outage_seconds": extra.get("outage"), "flap_percent": extra.get("flap_percent"),
        }


def _worst_recent(step: Step) -> Status:
    problems = [Status(int(c)) for c in step.state.history if c != "0"]
    return worst(problems) if problems else Status.UNKNOWN
