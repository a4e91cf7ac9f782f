"""Print notices on the agent's terminal (standard output)."""

from __future__ import annotations

import sys
from typing import ClassVar, Literal, TextIO

from notifiers.base import Alert, Notifier, NotifierConfig, NotifierError

_COLOURS = {"OK": "\033[32m", "WARNING": "\033[33m", "CRITICAL": "\033[31m",
            "UNKNOWN": "\033[35m"}
_RESET = "\033[0m"


class TerminalNotifier(Notifier):
    """One line per notice (two with ``detail: full``), coloured on a TTY."""

    type_name: ClassVar[str] = "terminal"

    class Config(NotifierConfig):
        detail: Literal["line", "full"] = "line"
        colour: Literal["auto", "always", "never"] = "auto"

    config: Config

    def __init__(self, name: str, config: NotifierConfig, stream: TextIO | None = None) -> None:
        super().__init__(name, config)
        self._stream = stream

    def send(self, alert: Alert) -> None:
        stream = self._stream or sys.stdout
        text = f"{alert.subject} — {alert.message}"
        if self.config.detail == "full":
            text = f"{text}\n{alert.body}"
        if self._coloured(stream):
            text = f"{_COLOURS.get(alert.status, '')}{text}{_RESET}"
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # closed or broken terminal
            raise NotifierError(f"cannot write to the terminal: {exc}") from exc

    def _coloured(self, stream: TextIO) -> bool:
        if self.config.colour != "auto":
            return self.config.colour == "always"
        return bool(getattr(stream, "isatty", lambda: False)())
