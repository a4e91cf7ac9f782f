"""``/metrics``: a prometheus-client collector computing from the store at scrape time.

Nothing is counted in memory: every value is read from the store (the timeline is
the record), so a restarted agent reports the same numbers and the API, the web
page and Prometheus cannot disagree. The registry is the app's own, not the global one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.store.db import parse_ts, ts
from agent.store.runbooks import ACTIVE, FINAL
from checks.base import Status

if TYPE_CHECKING:
    from agent.api.settings import ApiSettings
    from agent.service import Agent
    from agent.store.incidents import Incident

logger = logging.getLogger(__name__)

#: Clocks are computed for open incidents and those resolved this recently (newest first,
#: at most CLOCK_INCIDENTS), so a scrape stays bounded however long the history is.
CLOCK_WINDOW = timedelta(days=31)
CLOCK_INCIDENTS = 500
#: Series of check values at most (10,000 targets × a few metrics each fit).
MAX_VALUE_SERIES = 200_000
CLOCK_STATES = ("running", "met", "at_risk", "breached", "not_started")


class StoreCollector(Collector):
    """Every kanshi metric, from one consistent look at the store."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def describe(self) -> list[Any]:
        return []   # nothing to check at registration; collect() reads the store

    def collect(self) -> Iterator[Any]:
        started = time.monotonic()
        yield from self._checks()
        yield from self._incidents()
        yield from self._notifications()
        yield from self._runbooks()
        yield from self._clocks()
        yield from self._agent()
        took = GaugeMetricFamily("kanshi_scrape_duration_seconds",
                                 "Time this scrape took to read the store")
        took.add_metric([], time.monotonic() - started)
        yield took

    # -- checks ----------------------------------------------------------------------

    def _checks(self) -> Iterator[Any]:
        status = GaugeMetricFamily("kanshi_check_status", "Latest status per check and "
                                   "target (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
                                   labels=["check", "target"])
        confirmed = GaugeMetricFamily("kanshi_check_confirmed_status", "Confirmed (hard) "
                                      "status per check and target", labels=["check", "target"])
        values = GaugeMetricFamily("kanshi_check_value", "Latest metric values of each check "
                                   "and target", labels=["check", "target", "metric"])
        targets = GaugeMetricFamily("kanshi_check_targets", "Targets per check by latest "
                                    "status", labels=["check", "status"])
        counted: dict[tuple[str, str], int] = {}
        series = 0
        with self.agent.store.db.read() as conn:
            rows = conn.execute("SELECT check_name, target, status, hard_status, metrics"
                                " FROM check_state").fetchall()
        for check, target, code, hard, metrics in rows:
            status.add_metric([check, target], code)
            confirmed.add_metric([check, target], hard)
            key = (check, Status(code).name)
            counted[key] = counted.get(key, 0) + 1
            for name, value in json.loads(metrics).items():
                if series < MAX_VALUE_SERIES and _number(value):
                    values.add_metric([check, target, name], float(value))
                    series += 1
        for (check, name), count in sorted(counted.items()):
            targets.add_metric([check, name], count)
        yield from (status, confirmed, values, targets)

    def _incidents(self) -> Iterator[Any]:
        family = GaugeMetricFamily("kanshi_incidents", "Incidents by severity and state "
                                   "(open = not acknowledged)", labels=["severity", "state"])
        with self.agent.store.db.read() as conn:
            rows = conn.execute(
                "SELECT severity, CASE WHEN resolved_at IS NOT NULL THEN 'resolved'"
                " WHEN EXISTS (SELECT 1 FROM incident_events e WHERE e.incident_id = i.id"
                " AND e.kind = 'acknowledged') THEN 'acknowledged' ELSE 'open' END AS state,"
                " COUNT(*) FROM incidents i GROUP BY 1, 2").fetchall()
        for severity, state, count in rows:
            family.add_metric([severity, state], count)
        yield family

    def _notifications(self) -> Iterator[Any]:
        ok = CounterMetricFamily("kanshi_notification_deliveries", "Successful delivery "
                                 "attempts per channel", labels=["channel"])
        failed = CounterMetricFamily("kanshi_notification_failures", "Failed delivery "
                                     "attempts per channel", labels=["channel"])
        queued = GaugeMetricFamily("kanshi_notifications", "Notices per channel and state "
                                   "(pending/sending are the outbox queue)",
                                   labels=["channel", "state"])
        with self.agent.store.db.read() as conn:
            attempts = conn.execute(
                "SELECT n.channel, a.ok, COUNT(*) FROM notification_attempts a JOIN"
                " notifications n ON n.id = a.notification_id GROUP BY 1, 2").fetchall()
            states = conn.execute("SELECT channel, state, COUNT(*) FROM notifications"
                                  " GROUP BY 1, 2").fetchall()
        totals: dict[tuple[str, int], int] = {(c, o): n for c, o, n in attempts}
        for channel in sorted({c for c, _ in totals} | set(self.agent.notifiers)):
            ok.add_metric([channel], totals.get((channel, 1), 0))
            failed.add_metric([channel], totals.get((channel, 0), 0))
        for channel, state, count in states:
            queued.add_metric([channel, state], count)
        yield from (ok, failed, queued)

    def _runbooks(self) -> Iterator[Any]:
        finished = CounterMetricFamily("kanshi_runbook_runs", "Finished runbook runs by "
                                       "outcome", labels=["runbook", "outcome", "dry_run"])
        active = GaugeMetricFamily("kanshi_runbook_runs_active", "Runs not finished, by "
                                   "state (scheduled ones included)", labels=["state"])
        with self.agent.store.db.read() as conn:
            rows = conn.execute("SELECT runbook, state, dry_run, COUNT(*) FROM runbook_runs"
                                " GROUP BY 1, 2, 3").fetchall()
        waiting: dict[str, int] = dict.fromkeys((*ACTIVE, "scheduled"), 0)
        for runbook, state, dry, count in rows:
            if state in FINAL:
                finished.add_metric([runbook, state, "true" if dry else "false"], count)
            elif state in waiting:
                waiting[state] += count
        for state, count in waiting.items():
            active.add_metric([state], count)
        yield from (finished, active)

    def _clocks(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "kanshi_clock_results", "Incident clocks by state (open incidents and those "
            f"resolved in the last {CLOCK_WINDOW.days} days)", labels=["clock", "state"])
        now = self.agent.clock.now()
        counts: dict[tuple[str, str], int] = {}
        for incident in self._clock_incidents(now):
            events = self.agent.store.incidents.events(incident.id)
            for clock in self.agent.contract.clocks(incident, events, now):
                key = (clock.name, clock.state)
                counts[key] = counts.get(key, 0) + 1
        for name in sorted({n for n, _ in counts}):
            for state in CLOCK_STATES:
                family.add_metric([name, state], counts.get((name, state), 0))
        yield family

    def _clock_incidents(self, now: Any) -> list[Incident]:
        from agent.store.incidents import _SELECT, _incident

        with self.agent.store.db.read() as conn:
            rows = conn.execute(f"{_SELECT} WHERE i.resolved_at IS NULL OR i.resolved_at >= ?"
                                f" ORDER BY i.id DESC LIMIT ?",
                                (ts(now - CLOCK_WINDOW), CLOCK_INCIDENTS)).fetchall()
        return [_incident(r) for r in rows]

    # -- the agent itself ---------------------------------------------------------------

    def _agent(self) -> Iterator[Any]:
        now = self.agent.clock.now()
        lag = GaugeMetricFamily("kanshi_check_lag_seconds", "How late each check's latest "
                                "run is: now - last run - interval (0 when on time)",
                                labels=["check"])
        interval = GaugeMetricFamily("kanshi_check_interval_seconds", "Configured interval",
                                     labels=["check"])
        with self.agent.store.db.read() as conn:
            last = dict(conn.execute("SELECT check_name, MAX(last_run_at) FROM check_state"
                                     " GROUP BY 1").fetchall())
            due = conn.execute("SELECT COUNT(*) FROM runbook_runs WHERE state = 'scheduled'"
                               " AND scheduled_for <= ?", (ts(now),)).fetchone()[0]
            depth = conn.execute("SELECT COUNT(*) FROM notifications WHERE state IN"
                                 " ('pending', 'sending')").fetchone()[0]
        for name, spec in sorted(self.agent.specs.items()):
            interval.add_metric([name], spec.interval)
            if name in last:
                late = (now - parse_ts(last[name])).total_seconds() - spec.interval
                lag.add_metric([name], max(0.0, late))
        outbox = GaugeMetricFamily("kanshi_outbox_queue_depth", "Notices waiting to be sent")
        outbox.add_metric([], depth)
        runbook_queue = GaugeMetricFamily("kanshi_runbook_queue_depth", "Scheduled runbook "
                                          "runs whose time has come, not yet taken")
        runbook_queue.add_metric([], due)
        yield from (lag, interval, outbox, runbook_queue, *self._run())

    def _run(self) -> Iterator[Any]:
        run = self.agent.store.runs.latest()
        info = GaugeMetricFamily("kanshi_agent_info", "The agent's name and version",
                                 labels=["agent", "version"])
        from agent import __version__

        info.add_metric([self.agent.config.root.agent.name, __version__], 1)
        yield info
        if run is not None:
            started = GaugeMetricFamily("kanshi_agent_start_time_seconds", "When this agent "
                                        "run started (Unix time)")
            started.add_metric([], run.started_at.timestamp())
            seen = GaugeMetricFamily("kanshi_agent_last_heartbeat_seconds", "The run's last "
                                     "heartbeat (Unix time)")
            seen.add_metric([], run.last_seen_at.timestamp())
            yield from (started, seen)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def registry_for(agent: Agent) -> CollectorRegistry:
    """A registry of its own (never the process-global one) holding the store collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(agent))
    return registry


def add_metrics(app: FastAPI, agent: Agent, settings: ApiSettings) -> None:
    """``GET /metrics`` (a viewer token is needed only with ``api.metrics_auth``)."""
    from agent.api.auth import require
    from agent.api.tokens import Role

    registry = registry_for(agent)
    dependencies = [Depends(require(Role.viewer))] if settings.metrics_auth else []

    @app.get("/metrics", tags=["metrics"], response_class=Response, dependencies=dependencies,
             responses={200: {"content": {"text/plain": {}}}})
    def metrics() -> Response:
        """Prometheus text exposition, computed from the store at scrape time."""
        return Response(generate_latest(registry),
                        media_type="text/plain; version=0.0.4; charset=utf-8")
