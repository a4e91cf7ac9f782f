"""Notification channels. ``REGISTRY`` maps a config ``type`` to ``module:Class``.

Modules are imported on first use (``requests`` is only loaded when a webhook
is configured).
"""

REGISTRY: dict[str, str] = {
    "terminal": "notifiers.terminal:TerminalNotifier",
    "file": "notifiers.file:FileNotifier",
    "email": "notifiers.email:EmailNotifier",
    "webhook": "notifiers.webhook:WebhookNotifier",
    "slack": "notifiers.slack:SlackNotifier",
    "sns": "notifiers.sns:SnsNotifier",
    "pagerduty": "notifiers.pagerduty:PagerDutyNotifier",
    "alertmanager": "notifiers.alertmanager:AlertmanagerNotifier",
}
