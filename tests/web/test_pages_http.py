"""The web page over plain HTTP: login, escaping, CSRF, roles, form errors."""

from __future__ import annotations

import re

import requests

from agent.store.runbooks import FINAL
from tests.support.wait import wait_for
from tests.web.conftest import Site
from tests.web.http import TIMEOUT, csrf_of, logged_in


def test_pages_need_a_login(site: Site) -> None:
    answer = requests.get(f"{site.url}/", timeout=TIMEOUT, allow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/web/login")


def test_a_wrong_token_is_refused_at_login(site: Site) -> None:
    session = requests.Session()
    form = session.get(f"{site.url}/login", timeout=TIMEOUT)
    answer = session.post(f"{site.url}/login", data={"csrf": csrf_of(form.text),
                                                      "token": "kanshi_nope"}, timeout=TIMEOUT)
    assert answer.status_code == 401
    assert "unknown or revoked" in answer.text


def test_the_login_cookie_is_httponly_and_samesite_strict(site: Site) -> None:
    session = requests.Session()
    form = session.get(f"{site.url}/login", timeout=TIMEOUT)
    answer = session.post(f"{site.url}/login", data={"csrf": csrf_of(form.text),
                                                      "token": site.tokens["viewer"]},
                          timeout=TIMEOUT, allow_redirects=False)
    cookie = answer.headers["set-cookie"]
    assert "kanshi_token=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie


def test_a_login_without_the_form_token_is_refused(site: Site) -> None:
    answer = requests.post(f"{site.url}/login", data={"token": site.tokens["admin"]},
                           timeout=TIMEOUT, allow_redirects=False)
    assert answer.status_code == 403
    assert "kanshi_token" not in answer.headers.get("set-cookie", "")


def test_the_main_pages_load(site: Site) -> None:
    session = logged_in(site.url, site.tokens["viewer"])
    incident = site.agent.store.incidents.find(open_only=True)[0]
    for path in ("/", "/checks/cpu", "/checks/web?target=api&period=7d",
                 f"/incidents/{incident.id}", "/runbooks", "/runbooks/hello"):
        answer = session.get(f"{site.url}{path}", timeout=TIMEOUT)
        assert answer.status_code == 200, path
        assert "Content-Security-Policy" in answer.headers


def test_graphs_are_inline_svg_with_a_bounded_number_of_points(site: Site) -> None:
    session = logged_in(site.url, site.tokens["viewer"])
    page = session.get(f"{site.url}/checks/cpu?period=30d", timeout=TIMEOUT).text
    assert "<svg" in page and "CPU" in page
    for line in re.findall(r'<polyline class="line [^"]*" points="([^"]*)"', page):
        assert len(line.split()) <= 240


def test_user_text_is_escaped(site: Site) -> None:
    session = logged_in(site.url, site.tokens["viewer"])
    page = session.get(f"{site.url}/", timeout=TIMEOUT).text
    assert "<b>shop</b>" not in page
    assert "&lt;b&gt;shop&lt;/b&gt;" in page


def test_the_language_follows_lang_then_the_cookie(site: Site) -> None:
    session = logged_in(site.url, site.tokens["viewer"])
    assert "概要" in session.get(f"{site.url}/?lang=ja", timeout=TIMEOUT).text
    assert "概要" in session.get(f"{site.url}/", timeout=TIMEOUT).text
    assert "Overview" in session.get(f"{site.url}/?lang=en", timeout=TIMEOUT).text
    fresh = logged_in(site.url, site.tokens["viewer"])
    page = fresh.get(f"{site.url}/", headers={"Accept-Language": "ja,en;q=0.5"},
                     timeout=TIMEOUT).text
    assert "対応中のインシデント" in page


def test_a_viewer_is_offered_no_ack_or_run_button(site: Site) -> None:
    session = logged_in(site.url, site.tokens["viewer"])
    incident = site.agent.store.incidents.find(open_only=True)[0]
    page = session.get(f"{site.url}/incidents/{incident.id}", timeout=TIMEOUT).text
    assert 'id="ack"' not in page and "/ack" not in page
    form = session.get(f"{site.url}/runbooks/hello", timeout=TIMEOUT).text
    assert 'id="dry-run"' not in form


def test_a_viewer_posting_anyway_is_refused(site: Site) -> None:
    session = logged_in(site.url, site.tokens["viewer"])
    incident = site.agent.store.incidents.find(open_only=True)[0]
    token = csrf_of(session.get(f"{site.url}/", timeout=TIMEOUT).text)  # the logout form's
    for path, data in ((f"/incidents/{incident.id}/ack", {"comment": "mine"}),
                       (f"/incidents/{incident.id}/severity", {"to": "C", "reason": "x"}),
                       ("/runbooks/hello", {"target": "h", "greeting": "hi"})):
        answer = session.post(f"{site.url}{path}", data={"csrf": token, **data},
                              timeout=TIMEOUT, allow_redirects=False)
        assert answer.status_code == 403, path
    assert site.agent.store.incidents.get(incident.id).acknowledged_by is None  # type: ignore[union-attr]
    assert site.agent.store.runbooks.recent(10) == []


def test_a_post_without_the_csrf_token_is_refused(site: Site) -> None:
    session = logged_in(site.url, site.tokens["operator"])
    incident = site.agent.store.incidents.find(open_only=True)[0]
    for data in ({"comment": "x"}, {"comment": "x", "csrf": "0" * 64}):
        answer = session.post(f"{site.url}/incidents/{incident.id}/ack", data=data,
                              timeout=TIMEOUT, allow_redirects=False)
        assert answer.status_code == 403
    assert site.agent.store.incidents.get(incident.id).acknowledged_by is None  # type: ignore[union-attr]


def test_a_post_from_another_origin_is_refused(site: Site) -> None:
    session = logged_in(site.url, site.tokens["operator"])
    incident = site.agent.store.incidents.find(open_only=True)[0]
    page = session.get(f"{site.url}/incidents/{incident.id}", timeout=TIMEOUT).text
    answer = session.post(f"{site.url}/incidents/{incident.id}/ack",
                          data={"csrf": csrf_of(page), "comment": "x"},
                          headers={"Origin": "http://evil.example"}, timeout=TIMEOUT,
                          allow_redirects=False)
    assert answer.status_code == 403


def test_an_operator_acknowledges_and_changes_severity(site: Site) -> None:
    session = logged_in(site.url, site.tokens["operator"])
    incident = site.agent.store.incidents.find(open_only=True)[0]
    page = session.get(f"{site.url}/incidents/{incident.id}", timeout=TIMEOUT).text
    token = csrf_of(page)
    done = session.post(f"{site.url}/incidents/{incident.id}/ack",
                        data={"csrf": token, "comment": "<i>on it</i>"}, timeout=TIMEOUT)
    assert done.status_code == 200
    assert "acknowledged by operator-bob" in done.text.lower() or "operator-bob" in done.text
    assert "&lt;i&gt;on it&lt;/i&gt;" in done.text
    missing = session.post(f"{site.url}/incidents/{incident.id}/severity",
                           data={"csrf": token, "to": "C", "reason": ""}, timeout=TIMEOUT)
    assert missing.status_code == 422
    changed = session.post(f"{site.url}/incidents/{incident.id}/severity",
                           data={"csrf": token, "to": "C", "reason": "minor"}, timeout=TIMEOUT)
    assert changed.status_code == 200
    assert site.agent.store.incidents.get(incident.id).severity == "C"  # type: ignore[union-attr]
    actions = [e.action for e in site.agent.store.audit.recent(10)]
    assert "incident.acknowledge" in actions and "incident.severity" in actions


def test_bad_parameters_come_back_as_form_errors(site: Site) -> None:
    session = logged_in(site.url, site.tokens["operator"])
    token = csrf_of(session.get(f"{site.url}/runbooks/hello", timeout=TIMEOUT).text)
    answer = session.post(f"{site.url}/runbooks/hello",
                          data={"csrf": token, "target": "", "mood": "furious",
                                "times": "many", "greeting": ""}, timeout=TIMEOUT)
    assert answer.status_code == 422
    for field in ("target", "mood", "times", "greeting"):
        assert f'id="error-{field}"' in answer.text, field
    assert site.agent.store.runbooks.recent(10) == []


def test_an_unknown_runbook_or_run_is_a_404_page(site: Site) -> None:
    session = logged_in(site.url, site.tokens["operator"])
    assert session.get(f"{site.url}/runbooks/nope", timeout=TIMEOUT).status_code == 404
    assert session.get(f"{site.url}/runs/999", timeout=TIMEOUT).status_code == 404
    assert session.get(f"{site.url}/incidents/999", timeout=TIMEOUT).status_code == 404


def test_a_dry_run_then_a_confirmed_run(site: Site) -> None:
    session = logged_in(site.url, site.tokens["operator"])
    token = csrf_of(session.get(f"{site.url}/runbooks/hello", timeout=TIMEOUT).text)
    planned = session.post(f"{site.url}/runbooks/hello",
                           data={"csrf": token, "target": "localhost", "greeting": "hi",
                                 "mood": "loud", "times": "2"},
                           timeout=TIMEOUT, allow_redirects=False)
    assert planned.status_code == 303
    dry_id = int(planned.headers["location"].rsplit("/", 1)[1])
    wait_for(lambda: site.agent.store.runbooks.get(dry_id).state in FINAL,  # type: ignore[union-attr]
             what="the dry run to finish")
    assert site.agent.store.runbooks.get(dry_id).state == "planned"  # type: ignore[union-attr]
    page = session.get(f"{site.url}/runs/{dry_id}", timeout=TIMEOUT).text
    assert 'id="confirm-run"' in page and 'data-step="say"' in page
    ran = session.post(f"{site.url}/runs/{dry_id}/confirm", data={"csrf": csrf_of(page)},
                       timeout=TIMEOUT, allow_redirects=False)
    assert ran.status_code == 303
    run_id = int(ran.headers["location"].rsplit("/", 1)[1])
    wait_for(lambda: site.agent.store.runbooks.get(run_id).state in FINAL,  # type: ignore[union-attr]
             what="the run to finish")
    run = site.agent.store.runbooks.get(run_id)
    assert run is not None and run.state == "succeeded", run
    assert not run.dry_run and run.requested_by == "operator-bob"
    assert "hi (loud)" in session.get(f"{site.url}/runs/{run_id}", timeout=TIMEOUT).text


def test_a_secret_parameter_is_never_shown(site: Site) -> None:
    session = logged_in(site.url, site.tokens["operator"])
    token = csrf_of(session.get(f"{site.url}/runbooks/secretive", timeout=TIMEOUT).text)
    bad = session.post(f"{site.url}/runbooks/secretive",
                       data={"csrf": token, "target": "", "password": "hunter2-secret"},
                       timeout=TIMEOUT)
    assert bad.status_code == 422 and "hunter2-secret" not in bad.text
    planned = session.post(f"{site.url}/runbooks/secretive",
                           data={"csrf": token, "target": "h", "password": "hunter2-secret"},
                           timeout=TIMEOUT, allow_redirects=False)
    run_id = int(planned.headers["location"].rsplit("/", 1)[1])
    page = session.get(f"{site.url}/runs/{run_id}", timeout=TIMEOUT).text
    ran = session.post(f"{site.url}/runs/{run_id}/confirm", data={"csrf": csrf_of(page)},
                       timeout=TIMEOUT, allow_redirects=False) if "confirm-run" in page else None
    wait_for(lambda: site.agent.store.runbooks.get(run_id).state in FINAL,  # type: ignore[union-attr]
             what="the dry run")
    if ran is None:
        page = session.get(f"{site.url}/runs/{run_id}", timeout=TIMEOUT).text
        ran = session.post(f"{site.url}/runs/{run_id}/confirm", data={"csrf": csrf_of(page)},
                           timeout=TIMEOUT, allow_redirects=False)
    real_id = int(ran.headers["location"].rsplit("/", 1)[1])
    wait_for(lambda: site.agent.store.runbooks.get(real_id).state in FINAL,  # type: ignore[union-attr]
             what="the run")
    for shown in (f"/runs/{run_id}", f"/runs/{real_id}", "/runbooks"):
        assert "hunter2-secret" not in session.get(f"{site.url}{shown}", timeout=TIMEOUT).text
    assert "pw=********" in session.get(f"{site.url}/runs/{real_id}", timeout=TIMEOUT).text
