"""The policy loop: runs every half minute over the incidents that need it.

- Notices held back by a maintenance window are released when it ends: an
  incident still open is notified then (Mackerel and Zabbix famously forget
  it), and one that recovered inside the window sends its recovery — if the
  problem had been notified before the window began.
- Escalation steps that came due are taken, counted from the moment the problem
  was actually told (not from a confirmation that maintenance kept quiet). If
  several came due at once — after a window or a restart — only the current
  ones are sent. Outside business hours the emergency contact comes first.
- Each deadline of each clock that becomes at risk or breached is written on
  the timeline once; at risk, operators (or the escalation chain) are told.
  Recently closed incidents are watched too: their report clocks still run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from agent.config import CheckSpec, Config
from agent.incidents import IncidentManager
from agent.policy.contract import Contract
from agent.policy.escalation import Step, chain_for, channels_of, due, plan
from agent.store import Store
from agent.store.incidents import Event, Incident
from checks.base import Clock, Status

logger = logging.getLogger(__name__)

#: Closed incidents are watched this long (their report clocks).
CLOSED_WATCH = timedelta(days=14)


class PolicyWatch:
    def __init__(self, config: Config, contract: Contract, store: Store,
                 incidents: IncidentManager, specs: Mapping[str, CheckSpec],
                 clock: Clock) -> None:
        self.config = config
        self.contract = contract
        self.store = store
        self.incidents = incidents
        self.specs = specs
        self.clock = clock

    def tick(self) -> None:
        """One pass; one incident's trouble never stops the others."""
        now = self.clock.now()
        for incident in self._candidates(now):
            try:
                self._one(incident, now)
            except Exception:
                logger.exception("policy pass over incident #%d failed", incident.id)

    def _candidates(self, now: datetime) -> list[Incident]:
        found = {i.id: i for i in self.store.incidents.find(open_only=True, limit=100_000)}
        for incident in self.store.incidents.overlapping(now - CLOSED_WATCH, now):
            found.setdefault(incident.id, incident)
        return sorted(found.values(), key=lambda i: i.id)

    def _one(self, incident: Incident, now: datetime) -> None:
        spec = self.specs.get(incident.check)
        if spec is None or self.contract.maintenance.active(incident.check, incident.target,
                                                            now):
            return
        events = self.store.incidents.events(incident.id)
        with self.store.db.tx():
            if self._release_held(incident, spec, events, now):
                events = self.store.incidents.events(incident.id)
            if incident.is_open:
                self._escalate(incident, spec, events, now)
                self._forward_acknowledgement(incident, spec, events, now)
            self._watch_clocks(incident, spec, events, now)

    def _forward_acknowledgement(self, incident: Incident, spec: CheckSpec,
                                 events: Sequence[Event], now: datetime) -> None:
        """A person acknowledged (CLI, API or web page): channels that track the alert's
        state (PagerDuty) are told once, so they stop paging as well."""
        acked = next((e for e in events if e.kind == "acknowledged"), None)
        if acked is None or any(e.kind == "ack_forwarded" for e in events):
            return
        tracking = [n.name for n in self.config.enabled_notifiers
                    if n.name in spec.notify and n.cls.forwards_acknowledgement]
        if not tracking:
            return
        event = self.store.incidents.add_event(
            incident.id, now, "ack_forwarded", message=f"acknowledgement by {acked.actor} "
            f"forwarded to {', '.join(tracking)}", data={"channels": tracking})
        self.incidents.notice(incident, "acknowledged", tracking,
                              f"acknowledged by {acked.actor}: {acked.message}".rstrip(": "),
                              now, event)

    # -- after maintenance ---------------------------------------------------------

    def _release_held(self, incident: Incident, spec: CheckSpec, events: Sequence[Event],
                      now: datetime) -> bool:
        """Send what a window held back; True if it did anything."""
        released = max((e.id for e in events if e.kind == "notice_released"), default=0)
        held = [e for e in events if e.kind == "notice_held" and e.id > released]
        if not held:
            return False
        window = str(held[-1].data.get("window", "maintenance"))
        told = self.incidents.was_notified(incident.id)
        event = self.store.incidents.add_event(
            incident.id, now, "notice_released", message=f"maintenance window {window} over",
            data={"held": [e.data.get("kind") for e in held]})
        if incident.is_open and not told:
            message = f"{incident.message} (began during maintenance window {window}; still " \
                      "open after it)"
            self.incidents.notice(incident, "problem", list(spec.notify), message, now, event,
                                  attempts=spec.max_attempts)
        elif incident.is_open and any(e.data.get("kind") == "change" for e in held):
            self.incidents.notice(incident, "change", list(spec.notify), incident.message, now,
                                  event)
        elif not incident.is_open and told:
            recovered = next((e.at for e in reversed(events) if e.kind == "recovered"), now)
            self.incidents.notice(incident, "recovery", list(spec.notify),
                                  f"recovered during maintenance window {window}", now, event,
                                  outage=(recovered - incident.opened_at).total_seconds(),
                                  status=Status.OK)
        logger.info("incident #%d: notices held by maintenance window %s released",
                    incident.id, window)
        return True

    # -- escalation ------------------------------------------------------------------

    def _escalate(self, incident: Incident, spec: CheckSpec, events: Sequence[Event],
                  now: datetime) -> None:
        root = self.config.root
        chain = chain_for(root.escalation, incident.severity)
        if chain is None or any(e.kind == "acknowledged" for e in events):
            return
        anchor = self._anchor(incident, events)
        steps = list(plan(chain, anchor, self._emergency(anchor, now)))
        done = {str(e.data.get("step")) for e in events if e.kind == "escalated"}
        ready = due(steps, done, now)
        if not ready:
            return
        open_now = self.contract.calendar.is_open(now)
        latest = ready[-1].at
        for step in ready:
            self._take(incident, spec, step, send=step.at == latest or step.level < 0,
                       open_now=open_now, now=now)

    def _anchor(self, incident: Incident, events: Sequence[Event]) -> datetime:
        """When the problem was told: its release after a window, else confirmation."""
        released = [e.at for e in events if e.kind == "notice_released"]
        confirmed = next((e.at for e in events if e.kind == "confirmed"), incident.opened_at)
        return released[0] if released else confirmed

    def _emergency(self, anchor: datetime, now: datetime) -> list[tuple[datetime, str]]:
        """The emergency contacts, called when business hours are (or become) closed."""
        contacts = [c.name for c in self.config.root.contacts if c.emergency]
        if not contacts:
            return []
        calendar = self.contract.calendar
        if not calendar.is_open(anchor):
            return [(anchor, name) for name in contacts]
        closing = next(end for start, end in calendar.spans_from(anchor))
        return [(closing, name) for name in contacts] if closing <= now else []

    def _take(self, incident: Incident, spec: CheckSpec, step: Step, *, send: bool,
              open_now: bool, now: datetime) -> None:
        root = self.config.root
        channels = channels_of(root.contacts, step.contacts, open_now) if send else []
        if send and not channels:
            return  # only business-hours contacts: their turn comes when the office opens
        if step.level == 0 and step.repeat == 0:  # they already had the problem notice
            channels = [c for c in channels if c not in spec.notify]
        event = self.store.incidents.add_event(
            incident.id, now, "escalated", actor="kanshi",
            message=f"{step.kind}: {', '.join(step.contacts)}" +
                    ("" if send else " (skipped: overtaken)"),
            data={"step": step.key, "level": step.level, "repeat": step.repeat,
                  "contacts": list(step.contacts), "sent": send})
        if channels:
            self.incidents.notice(incident, step.kind, channels, incident.message, now, event)

    # -- clocks -------------------------------------------------------------------------

    def _watch_clocks(self, incident: Incident, spec: CheckSpec, events: Sequence[Event],
                      now: datetime) -> None:
        seen = {(e.kind, e.data.get("clock"), e.data.get("deadline")) for e in events}
        zone = self.contract.calendar.zone
        for result in self.contract.clocks(incident, events, now):
            for deadline in result.deadlines:
                state = deadline.state
                key = (f"clock_{state}", result.name, deadline.label)
                if state not in ("at_risk", "breached") or key in seen:
                    continue
                due_at = deadline.due.astimezone(zone)
                event = self.store.incidents.add_event(
                    incident.id, now, key[0],
                    message=f"{result.name} {deadline.label} {state.replace('_', ' ')} "
                            f"(due {due_at:%Y-%m-%d %H:%M %Z})",
                    data={"clock": result.name, "deadline": deadline.label,
                          "due": deadline.due.isoformat()})
                logger.warning("incident #%d: %s %s is %s", incident.id, result.name,
                               deadline.label, state)
                if state == "at_risk":
                    self._tell_operators(incident, f"{result.name} {deadline.label}", now,
                                         event)

    def _tell_operators(self, incident: Incident, what: str, now: datetime,
                        event: int) -> None:
        channels = [n.name for n in self.config.enabled_notifiers if n.audience == "operators"]
        if not channels:
            chain = chain_for(self.config.root.escalation, incident.severity)
            names = [c for level in chain.levels for c in level.contacts] if chain else []
            channels = channels_of(self.config.root.contacts, names, open_now=True)
        if channels:
            self.incidents.notice(incident, "at_risk", channels, f"deadline {what} is at risk:"
                                  f" {incident.message}", now, event)
