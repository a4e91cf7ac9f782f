"""Who is asking, and whether a posted form really came from our own page.

The web page authenticates with the ``kanshi_token`` cookie, so every POST also
carries a CSRF token: an HMAC, under a key that lives only in this process, of
the session's token (or, on the login form, of a random pre-login cookie). A
cross-site page can neither read nor compute it. SameSite=Strict and an Origin
check are a second and third fence, not the first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request

from agent.api.auth import optional_principal, presented_token
from agent.api.tokens import Principal, Role

LOGIN_COOKIE = "kanshi_login"
CSRF_FIELD = "csrf"
MAX_FORM = 64 * 1024


class WebError(Exception):
    """A refusal shown as a page: ``key`` is a message key, ``detail`` plain text."""

    def __init__(self, status: int, key: str, detail: str = "") -> None:
        super().__init__(detail or key)
        self.status = status
        self.key = key
        self.detail = detail


class LoginNeeded(Exception):
    """No valid token: the page sends the browser to the login form."""


class Guard:
    """CSRF tokens and role checks for one web app (the key dies with the process)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)

    def _mac(self, purpose: str, secret: str) -> str:
        message = purpose.encode() + b"\0" + secret.encode("utf-8", "surrogatepass")
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def csrf(self, request: Request) -> str:
        """The CSRF token of this request's session ("" without one)."""
        token = presented_token(request)
        return self._mac("session", token) if token else ""

    def login_csrf(self, nonce: str) -> str:
        return self._mac("login", nonce)

    def reader(self, request: Request) -> Principal:
        """The principal of a page view; :class:`LoginNeeded` without one."""
        principal = optional_principal(request)
        if principal is None:
            raise LoginNeeded()
        return principal

    def reader_or_none(self, request: Request) -> Principal | None:
        try:
            return optional_principal(request)
        except Exception:  # an error page must not fail on a broken store
            return None

    def writer(self, request: Request, form: dict[str, str],
               role: Role = Role.operator) -> Principal:
        """The principal of a form post that passed the CSRF, origin and role checks."""
        principal = optional_principal(request)
        if principal is None:
            raise WebError(401, "login_failed")
        check_origin(request)
        expected = self.csrf(request)
        if not expected or not hmac.compare_digest(expected, form.get(CSRF_FIELD, "")):
            raise WebError(403, "forbidden", "the form's CSRF token is missing or wrong: "
                                             "reload the page and try again")
        if principal.role < role:
            raise WebError(403, "forbidden", f"{principal.role.name} may not do this "
                                             f"(needs the {role.name} role)")
        return principal


def check_origin(request: Request) -> None:
    """Refuse a post whose Origin header names another site (browsers send it)."""
    origin = request.headers.get("origin")
    if not origin:
        return
    allowed = {request.headers.get("host", "")}
    public = getattr(request.app.state.settings, "public_url", None)
    if public:
        allowed.add(urlsplit(public).netloc)
    if origin == "null" or urlsplit(origin).netloc not in allowed:
        raise WebError(403, "forbidden", "the form was posted from another site")


async def form_data(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as {name: first value}."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise WebError(413, "error", "the form is too large")
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True,
                          max_num_fields=200)
    except ValueError:
        raise WebError(413, "error", "the form has too many fields") from None
    return {key: values[0] for key, values in parsed.items()}
