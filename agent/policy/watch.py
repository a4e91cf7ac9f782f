"""The policy loop: runs every half minute over open incidents.

- An incident that opened inside a maintenance window and is still open when
  the window ends is notified then (Mackerel and Zabbix famously forget it).
- Escalation steps that came due are taken (only the latest one if several
  came due at once — after a window or a restart nobody wants a burst).
- A clock that becomes at risk or breached is written on the timeline once; at
  risk, operators (or the next escalation level) are told.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from agent.config import CheckSpec, Config
from agent.incidents import IncidentManager
from agent.policy.contract import Contract
from agent.policy.escalation import chain_for, channels_of, due, plan
from agent.store import Store
from agent.store.incidents import Event, Incident
from checks.base import Clock

logger = logging.getLogger(__name__)


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
        """One pass over every open incident."""
        now = self.clock.now()
        for incident in self.store.incidents.find(open_only=True, limit=100_000):
            spec = self.specs.get(incident.check)
            if spec is None or self.contract.maintenance.active(incident.check,
                                                                incident.target, now):
                continue
            events = self.store.incidents.events(incident.id)
            with self.store.db.tx():
                self._late_problem_notice(incident, spec, now)
                self._escalate(incident, spec, events, now)
                self._watch_clocks(incident, spec, events, now)

    # -- after maintenance ---------------------------------------------------------

    def _late_problem_notice(self, incident: Incident, spec: CheckSpec, now: datetime) -> None:
        if incident.flapping or self.incidents.was_notified(incident.id):
            return
        message = f"{incident.message} (began during a maintenance window; still open after it)"
        event = self.store.incidents.add_event(incident.id, now, "maintenance_over",
                                               status=incident.status, message=message)
        self.incidents.notice(incident, "problem", list(spec.notify), message, now, event,
                              attempts=spec.max_attempts)
        logger.warning("incident #%d still open after its maintenance window: notified now",
                       incident.id)

    # -- escalation ------------------------------------------------------------------

    def _escalate(self, incident: Incident, spec: CheckSpec, events: Sequence[Event],
                  now: datetime) -> None:
        root = self.config.root
        chain = chain_for(root.escalation, incident.severity)
        if chain is None or any(e.kind == "acknowledged" for e in events):
            return
        confirmed = next((e.at for e in events if e.kind == "confirmed"), incident.opened_at)
        emergency = ([] if self.contract.calendar.is_open(confirmed)
                     else [c.name for c in root.contacts if c.emergency])
        done = {str(e.data.get("step")) for e in events if e.kind == "escalated"}
        steps = due(list(plan(chain, confirmed, emergency)), done, now)
        if not steps:
            return
        open_now = self.contract.calendar.is_open(now)
        latest = steps[-1].at
        for step in steps:
            send = step.at == latest  # catching up after a gap: only the current steps
            channels = channels_of(root.contacts, step.contacts, open_now) if send else []
            if step.level == 0 and step.repeat == 0:  # they already had the problem notice
                channels = [c for c in channels if c not in spec.notify]
            event = self.store.incidents.add_event(
                incident.id, now, "escalated", actor="kanshi",
                message=f"{step.kind}: {', '.join(step.contacts)}" + ("" if send else
                                                                       " (skipped: overtaken)"),
                data={"step": step.key, "level": step.level, "repeat": step.repeat,
                      "contacts": list(step.contacts), "sent": send})
            if channels:
                self.incidents.notice(incident, step.kind, channels, incident.message, now,
                                      event)

    # -- clocks -------------------------------------------------------------------------

    def _watch_clocks(self, incident: Incident, spec: CheckSpec, events: Sequence[Event],
                      now: datetime) -> None:
        seen = {(e.kind, e.data.get("clock")) for e in events}
        for result in self.contract.clocks(incident, events, now):
            for state in ("at_risk", "breached"):
                if result.state != state or (f"clock_{state}", result.name) in seen:
                    continue
                due_at = min(d.due for d in result.deadlines)
                event = self.store.incidents.add_event(
                    incident.id, now, f"clock_{state}",
                    message=f"{result.name} {state.replace('_', ' ')} (due {due_at:%H:%M})",
                    data={"clock": result.name, "due": due_at.isoformat()})
                logger.warning("incident #%d: clock %s is %s", incident.id, result.name, state)
                if state == "at_risk":
                    self._tell_operators(incident, spec, result.name, now, event)

    def _tell_operators(self, incident: Incident, spec: CheckSpec, clock_name: str,
                        now: datetime, event: int) -> None:
        channels = [n.name for n in self.config.enabled_notifiers if n.audience == "operators"]
        if not channels:
            chain = chain_for(self.config.root.escalation, incident.severity)
            names = [c for level in chain.levels for c in level.contacts] if chain else []
            channels = channels_of(self.config.root.contacts, names, open_now=True)
        if channels:
            self.incidents.notice(incident, "at_risk", channels, f"clock {clock_name} is at "
                                  f"risk: {incident.message}", now, event)
