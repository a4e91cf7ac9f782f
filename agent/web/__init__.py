"""The monitoring web page (NTT 監視情報閲覧): server-rendered Jinja2 pages over the agent.

Wire it into the HTTP API with ``ApiServer(agent, settings, extra=[add_web])``.
Jinja2 and FastAPI load only when the API is enabled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agent.service import Agent

STATIC = Path(__file__).resolve().parent / "static"


def add_web(app: FastAPI, agent: Agent) -> None:
    """The ``extra`` hook of :func:`agent.api.app.create_app`: pages under ``/web``."""
    from agent.web.pages import install

    install(app, agent)


__all__ = ["add_web"]
