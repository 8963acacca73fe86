"""The JSON API in-process (aiohttp's test server on loopback): token authentication and scopes,
the OpenAPI document validates, and every documented route answers as the document says."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from relay import apitokens, report, views
from relay.clock import FixedClock
from relay.config import Admin, ApiToken, RelayConfig
from relay.dispose import Disposer, Rules
from relay.store import AuditEntry, NewHold, SqliteStore, TraceEvent
from relay.store.base import TraceQuery
from relay.web.api import openapi_text
from relay.web.server import AdminSite
from tests.helpers import directory, pack
from tests.test_scheduler import T0, FakeUpstream

READ, MODERATE = apitokens.new_token(), apitokens.new_token()
SPEC: dict[str, Any] = yaml.safe_load(openapi_text())


def test_the_openapi_document_validates() -> None:
    validate(SPEC)  # raises on any error (openapi-spec-validator)


def test_a_token_is_kept_only_as_its_hash() -> None:
    token = apitokens.new_token()
    digest = apitokens.token_hash(token)
    assert token not in digest and apitokens.valid_hash(digest)
    clients = [apitokens.ApiClient("a", digest, "moderate")]
    assert apitokens.find(clients, token) == clients[0]
    assert apitokens.find(clients, token + "x") is None
    assert apitokens.find(clients, "") is None
    assert apitokens.parse_file(f"# c\n\nb:{digest}\nc:{digest}:moderate\n") == [
        apitokens.ApiClient("b", digest), apitokens.ApiClient("c", digest, "moderate")]
    with pytest.raises(ValueError, match="line 1"):
        apitokens.parse_file("b:sha256$zz")


def hold(queue_id: str, reason: str = "moderate", subject: str = "Promoción") -> NewHold:
    return NewHold(queue_id, reason, "andres.mejia@c.gov.co", ("maria@c.gov.co", "luis@c.gov.co"),
                   f"Subject: {subject}\r\nFrom: andres.mejia@c.gov.co\r\n\r\nbody\r\n".encode(),
                   None if reason == "moderate" else T0, ("no-advertising",), ("Circular 004, num. 2",), subject,
                   "andres.mejia@c.gov.co", ("comunicaciones@c.gov.co",))


Run = Callable[[Callable[[TestClient[Any, Any], SqliteStore, Path], Awaitable[None]]], None]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"filed:{apitokens.token_hash(MODERATE)}:moderate\n")
    config = RelayConfig(policy="p", directory="d", admin=Admin(api_tokens=(
        ApiToken(name="reader", token_hash=apitokens.token_hash(READ)),), api_token_file=str(token_file)))
    store = SqliteStore(tmp_path / "s.sqlite3")
    rules = Rules(pack("barrancabermeja"), directory("barrancabermeja"), None, None)
    disposer = Disposer(config, rules, FixedClock(T0), store, FakeUpstream())  # type: ignore[arg-type]

    def go(body: Callable[[TestClient[Any, Any], SqliteStore, Path], Awaitable[None]]) -> None:
        async def main() -> None:
            site = AdminSite(disposer, b"k" * 32, token_file)
            site.ready = True
            async with TestClient(TestServer(site.web, host="127.0.0.1")) as client:
                await body(client, store, token_file)

        asyncio.run(main())
        store.close()

    return go


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def schema_of(path: str, method: str, status: int) -> dict[str, Any]:
    response = SPEC["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return dict(response["content"]["application/json"]["schema"])


def check(path: str, method: str, status: int, got_status: int, body: Any) -> None:
    """The answer is one the document lists for this route, and its body matches that schema."""
    assert got_status == status, body
    assert str(status) in SPEC["paths"][path][method]["responses"], f"{method} {path} {status} undocumented"
    OAS30Validator({**schema_of(path, method, status), "components": SPEC["components"]}).validate(body)


def test_no_token_no_answer_and_read_cannot_moderate(run: Run) -> None:
    async def body(c: TestClient[Any, Any], store: SqliteStore, _: Path) -> None:
        [held] = store.add_holds([hold("Q1")], T0)
        for headers in ({}, auth("rly_wrong"), {"Authorization": f"Basic {READ}"}):
            r = await c.get("/api/v1/holds", headers=headers)
            check("/holds", "get", 401, r.status, await r.json())
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await c.post(f"/api/v1/holds/{held}/approve", headers=auth(READ))
        check("/holds/{id}/{action}", "post", 403, r.status, await r.json())
        # a session cookie of the web pages is no API credential
        r = await c.get("/api/v1/holds", headers={"Cookie": "relay_session=x"})
        assert r.status == 401
    run(body)


def test_every_documented_route_answers_as_documented(run: Run) -> None:
    async def body(c: TestClient[Any, Any], store: SqliteStore, _: Path) -> None:
        moderated, timed, other = store.add_holds([hold("Q1"), hold("Q2", "hold"), hold("Q3")], T0)
        seen: set[tuple[str, str]] = set()

        async def call(method: str, template: str, url: str, status: int, token: str = READ,
                       **kwargs: Any) -> Any:
            headers = {**auth(token), **kwargs.pop("headers", {})}
            r = await c.request(method.upper(), "/api/v1" + url, headers=headers, **kwargs)
            data = await r.json() if r.content_type == "application/json" else await r.text()
            if r.content_type == "application/json":
                check(template, method, status, r.status, data)
            else:
                assert r.status == status
            seen.add((template, method))
            return data

        spec = await call("get", "/openapi.yaml", "/openapi.yaml", 200, token="")
        assert yaml.safe_load(spec) == SPEC
        health = await call("get", "/health", "/health", 200)
        assert health["holds_open"] == {"hold": 1, "moderate": 2} and "approve" in health["actions"]
        listed = await call("get", "/holds", "/holds", 200)
        assert {h["id"] for h in listed["holds"]} == {moderated, timed, other} and listed["count"] == 3
        assert [h["id"] for h in (await call("get", "/holds", "/holds?reason=hold", 200))["holds"]] == [timed]
        assert (await call("get", "/holds", "/holds?recipient=LUIS@c.gov.co&limit=2", 200))["count"] == 2
        await call("get", "/holds", "/holds?due_before=tomorrow", 400)
        await call("get", "/holds", "/holds?state=lost", 422)
        shown = await call("get", "/holds/{id}", f"/holds/{moderated}", 200)
        assert shown["headers"][0] == "Subject: Promoción" and shown["history"][0]["event"] == "held"
        assert shown == views.show_hold(store, moderated)  # the CLI's view, the same function
        await call("get", "/holds/{id}", "/holds/NOPE", 404)
        approved = await call("post", "/holds/{id}/{action}", f"/holds/{moderated}/approve", 200, MODERATE)
        assert approved["state"] == "waiting"
        await call("post", "/holds/{id}/{action}", f"/holds/{moderated}/approve", 409, MODERATE)
        await call("post", "/holds/{id}/{action}", f"/holds/{other}/reject", 422, MODERATE, json={})
        await call("post", "/holds/{id}/{action}", f"/holds/{other}/reject", 400, MODERATE, data=b"{",
                   headers={"Content-Type": "application/json"})
        rejected = await call("post", "/holds/{id}/{action}", f"/holds/{other}/reject", 200, MODERATE,
                              json={"reason": "Publicidad no autorizada"})
        assert rejected["state"] == "rejected" and rejected["last_error"] == "Publicidad no autorizada"
        history = views.show_hold(store, other)["history"]
        assert history[-1] == {"at": T0.isoformat(), "event": "rejected",
                               "detail": "by filed (api): Publicidad no autorizada"}
        await call("post", "/holds/{id}/{action}", f"/holds/{timed}/fly", 422, MODERATE)
        await call("post", "/holds/{id}/{action}", "/holds/NOPE/release", 404, MODERATE)
        released = await call("post", "/holds/{id}/{action}", f"/holds/{timed}/release", 200, MODERATE)
        assert released["next_attempt"] == T0.isoformat()
        # withdraw among the hold actions (issue 27): what the sender's signed link does
        [pending] = store.add_holds([hold("Q4")], T0)
        withdrawn = await call("post", "/holds/{id}/{action}", f"/holds/{pending}/withdraw", 200, MODERATE)
        assert withdrawn["state"] == "withdrawn" and withdrawn["decided_by"] == "filed (api)"
        # the trace: the same search as `relay trace --json` (views.search_traces), a page and a count
        store.add_audit([AuditEntry(T0 - timedelta(minutes=10 - n), f"Q{n}", "moderate", "250 2.0.0 held",
                                    "andres.mejia@c.gov.co", 2, "andres.mejia@c.gov.co", "127.0.0.1",
                                    (("no-advertising", "Circular 004, num. 2", "moderate"),),
                                    rcpt_to=("maria@c.gov.co", "luis@c.gov.co"), subject="Promoción",
                                    message_id=f"m{n}@c.gov.co") for n in (1, 2, 3, 4)],
                        trace=[TraceEvent("Q1", T0 + timedelta(minutes=5), "notice", "approved to andres")])
        traced = await call("get", "/trace", "/trace?queue_id=Q1", 200)
        assert traced == views.search_traces(store, TraceQuery(queue_id="Q1", limit=100))
        [life] = traced["messages"]
        events = [e["event"] for e in life["events"]]
        assert events[:3] == ["received", "decided", "hold held"] and "hold approved" in events, events
        assert events[-1] == "notice" and life["events"][1]["rules"][0]["cite"] == "Circular 004, num. 2"
        page = await call("get", "/trace", "/trace?recipient=LUIS@c.gov.co&limit=3&offset=1", 200)
        assert page["total"] == 4 and [m["queue_id"] for m in page["messages"]] == ["Q3", "Q2", "Q1"]
        day = await call("get", "/trace", "/trace?since=2026-11-30&until=2026-11-30&message_id=<m4@c.gov.co>", 200)
        assert [m["queue_id"] for m in day["messages"]] == ["Q4"]
        assert (await call("get", "/trace", "/trace?since=2026-12-01", 200))["total"] == 0
        await call("get", "/trace", "/trace?since=yesterday", 400)
        await call("get", "/trace", "/trace?offset=-1", 400)
        await call("get", "/trace", "/trace?since=2026-11-30T14:00:00%2B00:00&until=2026-11-30T13:00:00%2B00:00", 422)
        # the sender was told of the refusal, with the moderator's reason
        notices = store.due_notices(T0, 10)
        assert [n.to for n in notices][:2] == ["andres.mejia@c.gov.co"] * 2
        assert "Publicidad no autorizada" in notices[1].text
        figures = await call("get", "/report", "/report?month=2026-11", 200)
        assert figures["period"] == "2026-11" and figures["moderation"]["copies"] == {"hold": 1, "moderate": 2}
        assert figures == views.report(store, directory("barrancabermeja"), "2026-11", ZoneInfo("America/Bogota"),
                                       report.pack_rules(pack("barrancabermeja")))  # `relay report`'s function
        await call("get", "/report", "/report?month=2026-13", 400)
        await call("get", "/report", "/report", 400)
        documented = {(p, m) for p, item in SPEC["paths"].items() for m in item if m in ("get", "post")}
        assert documented <= seen, f"documented but not called: {documented - seen}"
    run(body)


def test_the_token_file_is_read_again_when_it_changes(run: Run) -> None:
    async def body(c: TestClient[Any, Any], store: SqliteStore, token_file: Path) -> None:
        assert (await c.get("/api/v1/health", headers=auth(MODERATE))).status == 200
        token_file.write_text("# revoked\n")
        assert (await c.get("/api/v1/health", headers=auth(MODERATE))).status == 401
        fresh = apitokens.new_token()
        token_file.write_text(f"new:{apitokens.token_hash(fresh)}\n")
        assert (await c.get("/api/v1/health", headers=auth(fresh))).status == 200
    run(body)


def test_a_token_has_256_random_bits() -> None:
    assert re.fullmatch(r"rly_[A-Za-z0-9_-]{43}", apitokens.new_token())
