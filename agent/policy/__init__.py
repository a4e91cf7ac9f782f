"""Incident policy: business calendar, SLO/SLA clocks, escalation, maintenance windows."""
