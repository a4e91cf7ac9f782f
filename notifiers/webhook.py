"""Generic webhook: the alert as JSON, POSTed once to a URL.

The body is ``{"version": 1, **alert.to_dict()}``; receivers should check
``version`` and de-duplicate on ``notification_id`` (a retried notice carries
the same one) or group on ``dedup_key``.
"""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from notifiers.base import Alert, NotifierConfig
from notifiers.http import HttpConfig, HttpNotifier

PAYLOAD_VERSION = 1
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 "token"


class WebhookConfig(HttpConfig):
    """``url`` and header values are secrets: many webhooks carry their token there."""

    url: SecretStr
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        # The message must not quote the URL: it is the secret.
        try:
            parts = urlsplit(url.get_secret_value())
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises on a non-numeric port
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("expected an http:// or https:// URL with a host")
        return url

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"expected a header name such as X-Token, got {name!r}")
            if any(c in value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"header {name}: the value may not contain line breaks")
        return headers

    @model_validator(mode="after")
    def _both_or_neither(self) -> WebhookConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("expected username and password together (basic auth)")
        return self


class WebhookNotifier(HttpNotifier):
    """POSTs each alert as JSON to ``url``."""

    type_name: ClassVar[str] = "webhook"
    Config: ClassVar[type[NotifierConfig]] = WebhookConfig
    config: WebhookConfig

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` with one POST (the outbox retries)."""
        cfg = self.config
        headers = {name: value.get_secret_value() for name, value in cfg.headers.items()}
        auth = None
        if cfg.username is not None and cfg.password is not None:
            auth = (cfg.username, cfg.password.get_secret_value())
        self.post(cfg.url.get_secret_value(), json=payload(alert), headers=headers, auth=auth)


def payload(alert: Alert) -> dict[str, object]:
    """The JSON document a webhook receives."""
    return {"version": PAYLOAD_VERSION, **alert.to_dict()}
