"""The JSON API on the admin listener: `/api/v1/…`, for machines (a help-desk tool, a dashboard).

Its own authentication: `Authorization: Bearer rly_…` tokens (relay.apitokens), never the
moderators' session cookies (so no CSRF: a browser does not send a bearer token by itself).
Every view is the same function the CLI and the web pages use (relay.views); the document
describing it all is `relay/web/openapi.yaml`, served at /api/v1/openapi.yaml without a token.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from relay import __version__, apitokens, views
from relay.apitokens import ApiClient
from relay.store import StoreError
from relay.store.base import TraceQuery
from relay.web import queue


class AdminSite(Protocol):
    """What the API needs of the admin site (relay.web.server.AdminSite), without importing it."""

    web: web.Application
    relay: Any
    ready: bool

PREFIX = "/api/v1"
HOLD_ID = r"{id:[A-Za-z0-9_-]{1,64}}"


def error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text, "status": status}, status=status,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


def answer(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def openapi_text() -> str:
    return resources.files("relay.web").joinpath("openapi.yaml").read_text(encoding="utf-8")


class Api:
    """The /api/v1 routes of one AdminSite."""

    def __init__(self, site: AdminSite, token_file: apitokens.TokenFile) -> None:
        self.site = site
        self.token_file = token_file
        site.web.add_routes([
            web.get(f"{PREFIX}/openapi.yaml", self.openapi),
            web.get(f"{PREFIX}/health", self.health),
            web.get(f"{PREFIX}/holds", self.holds),
            web.get(f"{PREFIX}/holds/{HOLD_ID}", self.hold),
            web.post(f"{PREFIX}/holds/{HOLD_ID}/{{action:[a-z]{{1,20}}}}", self.act),
            web.get(f"{PREFIX}/report", self.report),
            web.get(f"{PREFIX}/trace", self.trace),
        ])

    @property
    def relay(self) -> Any:
        return self.site.relay

    # -- plumbing ------------------------------------------------------------------------------
    def clients(self) -> list[ApiClient]:
        admin = self.relay.config.admin
        configured = [ApiClient(t.name, t.token_hash, t.scope) for t in admin.api_tokens] if admin else []
        return configured + self.token_file.clients()

    def client(self, request: web.Request, moderate: bool = False) -> ApiClient:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        found = apitokens.find(self.clients(), token.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            self.relay.log.warning("api_token_refused", path=request.path, client_ip=request.remote)
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "a valid API token is needed: Authorization: Bearer rly_…", "status": 401}),
                content_type="application/json", headers={"WWW-Authenticate": 'Bearer realm="relay"'})
        if moderate and not found.can_moderate:
            raise web.HTTPForbidden(text=json.dumps({"error": f"token {found.name!r} has scope read; moderation "
                                                              "needs scope moderate", "status": 403}),
                                    content_type="application/json")
        return found

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A view in a worker thread; its exceptions as JSON errors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except views.NotFound as exc:
            raise web.HTTPNotFound(text=json.dumps({"error": f"not found: {exc}", "status": 404}),
                                   content_type="application/json") from None
        except views.BadRequest as exc:
            raise web.HTTPUnprocessableEntity(text=json.dumps({"error": str(exc), "status": 422}),
                                              content_type="application/json") from None
        except views.Conflict as exc:
            raise web.HTTPConflict(text=json.dumps({"error": str(exc), "status": 409}),
                                   content_type="application/json") from None
        except StoreError as exc:
            self.relay.log.error("api_store_failed", error=str(exc)[:200])
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": "the store does not answer; try again",
                                                              "status": 503}),
                                             content_type="application/json") from None

    @staticmethod
    def instant(request: web.Request, name: str) -> datetime | None:
        text = request.query.get(name, "").strip()
        if not text:
            return None
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"{name}: an ISO-8601 instant with its offset, e.g. "
                                                               "2026-11-24T20:00:00-05:00", "status": 400}),
                                     content_type="application/json")
        return at

    def instant_or_date(self, request: web.Request, name: str, end: bool = False) -> datetime | None:
        """An ISO-8601 instant with its offset, or a date (`2026-11-24`) in the institution's zone
        (as an end, the whole day included): the trace's since/until."""
        text = request.query.get(name, "").strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                return queue.local_instant(text, self.relay.zone, name, end)
            except queue.SearchError:
                pass
        return self.instant(request, name)

    @staticmethod
    def number(request: web.Request, name: str, default: int, low: int = 1, high: int = 10000) -> int:
        text = request.query.get(name, "")
        if not text:
            return default
        if not text.isdigit() or not low <= int(text) <= high:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"{name}: a whole number from {low} to {high}",
                                                      "status": 400}), content_type="application/json")
        return int(text)

    # -- routes --------------------------------------------------------------------------------
    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=openapi_text(), content_type="application/yaml", charset="utf-8")

    async def health(self, request: web.Request) -> web.Response:
        self.client(request)
        stats = await self.run(self.relay.store.hold_stats)
        return answer({"status": "ok" if self.site.ready else "starting", "version": __version__,
                       "generation": self.relay.rules.generation, "pack": self.relay.pack.pack,
                       "holds_open": {reason: stats.get(reason, (0, None))[0] for reason in ("hold", "moderate")},
                       "actions": list(views.actions())})

    async def holds(self, request: web.Request) -> web.Response:
        self.client(request)
        q = request.query
        query = views.HoldQuery(reason=q.get("reason") or None, recipient=q.get("recipient") or None,
                                sender=q.get("sender") or None, due_before=self.instant(request, "due_before"),
                                state=q.get("state") or None, all_states=q.get("all") in ("1", "true"),
                                limit=self.number(request, "limit", 1000))
        rows = await self.run(views.list_holds, self.relay.store, query)
        return answer({"holds": rows, "count": len(rows)})

    async def trace(self, request: web.Request) -> web.Response:
        """Where is my mail: relay.views.search_traces, as `relay trace --json` and the /trace page."""
        self.client(request)
        q = request.query
        query = TraceQuery(sender=q.get("sender") or None, recipient=q.get("recipient") or None,
                           message_id=q.get("message_id") or None, queue_id=q.get("queue_id") or None,
                           since=self.instant_or_date(request, "since"),
                           until=self.instant_or_date(request, "until", end=True),
                           limit=self.number(request, "limit", 100), offset=self.number(request, "offset", 0, 0, 10**9))
        return answer(await self.run(views.search_traces, self.relay.store, query))

    async def hold(self, request: web.Request) -> web.Response:
        self.client(request)
        return answer(await self.run(views.show_hold, self.relay.store, request.match_info["id"]))

    async def act(self, request: web.Request) -> web.Response:
        client = self.client(request, moderate=True)
        hold_id, action = request.match_info["id"], request.match_info["action"]
        body: Any = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return error(400, "the body must be JSON, e.g. {\"reason\": \"...\"}")
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            return error(400, "the body must be a JSON object with an optional string \"reason\"")
        reason = await self.run(views.check_action, action, body.get("reason", ""))
        try:
            hold = await self.relay.moderate(hold_id, action, f"{client.name} (api)", reason)
        except KeyError:
            return error(404, f"not found: {hold_id}")
        except ValueError as exc:
            return error(409, str(exc))
        except StoreError as exc:
            self.relay.log.error("api_store_failed", error=str(exc)[:200])
            return error(503, "the store does not answer; try again")
        return answer(views.hold_json(hold))

    async def report(self, request: web.Request) -> web.Response:
        """The compliance report's figures (relay.report, the same function as `relay report`)."""
        from relay.report import pack_rules

        self.client(request)
        month = request.query.get("month", "").strip()
        if not month:
            return error(400, "month: YYYY-MM is needed, e.g. /api/v1/report?month=2026-11")
        try:
            data = await self.run(views.report, self.relay.store, self.relay.directory, month, self.relay.zone,
                                  pack_rules(self.relay.pack), request.query.get("office") or None)
        except web.HTTPUnprocessableEntity as exc:  # a month like 2026-13: a malformed parameter
            return error(400, json.loads(exc.text or "{}").get("error", "month: YYYY-MM"))
        return answer(data)
