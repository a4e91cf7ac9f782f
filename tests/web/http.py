"""Plain-HTTP helpers: log in as a role, read a form's CSRF token."""

from __future__ import annotations

import re

import requests

TIMEOUT = 10.0
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def logged_in(base: str, token: str) -> requests.Session:
    """A session that logged in through the login form (cookie set by the server)."""
    session = requests.Session()
    form = session.get(f"{base}/login", timeout=TIMEOUT)
    assert form.status_code == 200
    done = session.post(f"{base}/login", data={"csrf": csrf_of(form.text), "token": token},
                        timeout=TIMEOUT, allow_redirects=False)
    assert done.status_code == 303, done.text
    return session
