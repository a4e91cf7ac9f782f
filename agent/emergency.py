"""Last-resort notices when the store cannot be written at all.

With the state directory full and the reserve already spent, an incident can be
neither recorded nor queued. Problems are then sent straight to every channel —
once per (check, target) per hour, without retries — saying that they could not
be recorded. Better an unrecorded alert than a silent full disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime

from agent.config import CheckSpec, NotifierSpec
from checks.base import Result
from notifiers.base import Alert, Notifier
from notifiers.render import render

logger = logging.getLogger(__name__)

REPEAT_AFTER = 3600.0


class EmergencyNotices:
    def __init__(self, notifiers: Mapping[str, Notifier], specs: Mapping[str, NotifierSpec],
                 host: str) -> None:
        self.notifiers = notifiers
        self.specs = specs
        self.host = host
        self._last: dict[tuple[str, str], float] = {}

    def send(self, check: CheckSpec, results: list[Result], at: datetime) -> int:
        """Send each problem in ``results`` directly; return how many notices went out."""
        sent = 0
        for result in results:
            if not result.status.is_problem or not self._due(check.name, result.target):
                continue
            for name in check.notify:
                notifier, spec = self.notifiers.get(name), self.specs.get(name)
                if notifier is None or spec is None:
                    continue
                try:
                    notifier.send(self._alert(check, result, at, spec.locale))
                    sent += 1
                except Exception as exc:
                    logger.error("emergency notice via %s failed too: %s", name, exc)
        return sent

    def _due(self, check: str, target: str) -> bool:
        now = time.monotonic()
        last = self._last.get((check, target))
        if last is not None and now - last < REPEAT_AFTER:
            return False
        self._last[(check, target)] = now
        return True

    def _alert(self, check: CheckSpec, result: Result, at: datetime, locale: str) -> Alert:
        fields = {"kind": "unrecorded", "incident_id": 0, "dedup_key": check.name,
                  "host": self.host, "check": check.name, "target": result.target,
                  "status": result.status.name, "previous_status": "", "severity": check.severity,
                  "message": result.message, "detected_at": at.isoformat(),
                  "at": at.isoformat(), "outage_seconds": None, "locale": locale,
                  "detected_local": f"{at:%Y-%m-%d %H:%M:%S} UTC",
                  "at_local": f"{at:%Y-%m-%d %H:%M:%S} UTC", "attempts": 1}
        subject, body = render(fields, locale)
        return Alert.from_dict({**fields, "notification_id": 0, "subject": subject,
                                "body": body})
