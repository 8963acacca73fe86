"""The admin listener (aiohttp, in the relay's own event loop).

Pages in Spanish for moderators: sign in, held and waiting messages, one message (headers and a
text rendering; its HTML is never served), approve / refuse with a reason / release now, the
confirmation page behind the signed links of moderation notices, and the rule test page (the
engine of `relay check`). For machines: /metrics (Prometheus), /healthz, /readyz.

Every page that shows or changes mail needs a signed-in account; every POST carries the
session's CSRF token; responses forbid scripts, framing and referrers (links carry tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session, session_middleware
from aiohttp_session.nacl_storage import NaClCookieStorage
from markupsafe import Markup
from multidict import MultiDict

from relay import moderation, views, when
from relay.addresses import AddressError
from relay.apitokens import TokenFile
from relay.auth import hash_password, verify_password
from relay.frontends.guard import AuthFailures
from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from relay.store import Hold, StoreError, TraceQuery
from relay.web import links, queue

if TYPE_CHECKING:
    from relay.dispose import Disposer

SESSION_COOKIE = "relay_session"
MAX_SIGNED_OUT = 10_000  # signed-out sessions remembered until they would have expired anyway
MAX_CHECK_BYTES = 10 * 1024 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATE_NAMES = {"waiting": "en espera", "moderation": "espera moderación", "delivering": "entregándose",
               "delivered": "entregado", "rejected": "rechazado", "failed": "fallido", "deleted": "eliminado",
               "withdrawn": "retirado por el remitente", "expired": "vencido sin decisión"}
ERROR_TITLES = {400: "Solicitud no válida", 403: "Acceso denegado", 404: "No encontrado",
                405: "Método no permitido", 409: "Ya decidido", 413: "Demasiado grande",
                500: "Error interno", 503: "Servicio no disponible por ahora"}
REASON_NAMES = {"hold": "retenido por horario (derecho a la desconexión)", "moderate": "requiere aprobación"}
ACTION_NAMES = {"approve": "Aprobar", "reject": "Rechazar", "release": "Liberar ahora", "delete": "Eliminar"}
_DUMMY_HASH = hash_password("x", salt=b"0" * 16)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    login: str
    csrf: str
    expires: float  # wall-clock seconds (a sign-in outlives a restart of the relay)
    sid: str = ""


class AdminSite:
    """The admin web application bound to one running relay."""

    def __init__(self, relay: Disposer, key: bytes, token_file: Path | None = None,
                 signed_out_file: Path | None = None) -> None:
        self.relay = relay
        self.key = key
        # Sessions live in a cookie encrypted and authenticated (aiohttp-session, NaCl secretbox) with
        # a key derived from the relay's persistent secret: a sign-in outlives a restart or a reload.
        # Signing out is remembered (in `signed_out_file`, beside the secret) until the session would
        # have expired, so a kept copy of the cookie is refused, also after a restart.
        self.signed_out_file = signed_out_file
        self.signed_out: dict[str, float] = _read_signed_out(signed_out_file)
        # One cookie name per relay (from its own secret): two relays on one host, or a test relay
        # beside the real one, never read or overwrite each other's sign-ins (cookies ignore ports).
        self.cookie = f"{SESSION_COOKIE}_{hmac.new(key, b'session-cookie-name', 'sha256').hexdigest()[:10]}"
        self.failures = AuthFailures()  # failed sign-ins, keyed "login:…" and "client:…"
        self.templates = jinja2.Environment(loader=jinja2.PackageLoader("relay.web", "templates"),
                                            autoescape=True, undefined=jinja2.StrictUndefined)
        self.templates.filters["when"] = self._when
        self.templates.filters["when_iso"] = lambda text: self._when(datetime.fromisoformat(text) if text else None)
        self.templates.filters["trace_event"] = lambda event: queue.trace_event_es(event, REASON_NAMES)
        self.templates.filters["decided"] = lambda hold: moderation.decided_es(hold, self.relay.zone)
        self.ready = False
        admin = self.relay.config.admin
        self.ttl = admin.session_ttl if admin else 3600
        storage = NaClCookieStorage(hmac.new(key, b"admin-session-cookie-key", "sha256").digest(),
                                    cookie_name=self.cookie, max_age=int(self.ttl), path="/", httponly=True,
                                    samesite="Strict",
                                    secure=admin is not None and admin.base_url().startswith("https://"))
        self.web = web.Application(middlewares=[session_middleware(storage), self._signed_in, self._headers],
                                   client_max_size=MAX_CHECK_BYTES + 64 * 1024)
        self.web.add_routes([
            web.get("/healthz", self.healthz), web.get("/readyz", self.readyz), web.get("/metrics", self.metrics),
            web.get("/static/relay.css", self.css),
            web.get("/", self.index), web.get("/login", self.login_form), web.post("/login", self.login),
            web.post("/logout", self.logout),
            web.get("/holds", self.holds), web.get(r"/holds/{id:[A-Za-z0-9_-]{1,64}}", self.hold),
            web.post(r"/holds/{id:[A-Za-z0-9_-]{1,64}}/{action:approve|reject|release|delete}", self.act),
            web.get(r"/holds/{id:[A-Za-z0-9_-]{1,64}}/{action:approve|reject|release|delete}", self.act_form),
            web.post("/holds/bulk", self.bulk_form), web.post("/holds/bulk/confirm", self.bulk),
            web.get("/m/{token}", self.link_form), web.post("/m/{token}", self.link_act),
            web.get("/w/{token}", self.withdraw_form), web.post("/w/{token}", self.withdraw),
            web.get("/check", self.check_form), web.post("/check", self.check),
            web.get("/report", self.report),
            web.get("/trace", self.trace),
        ])
        from relay.web.api import Api

        self.api = Api(self, TokenFile(token_file))  # /api/v1: the JSON API, its own tokens

    # ------------------------------------------------------------------ plumbing
    @web.middleware
    async def _signed_in(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The request's sign-in, read once from its session cookie (machines' paths have none)."""
        if not request.path.startswith(MACHINE_PATHS) and self.cookie in request.cookies:
            request["relay.session"] = self._valid(await get_session(request))
        return await handler(request)

    def _valid(self, stored: Any) -> Session | None:
        """A session cookie's sign-in while it lasts, was not signed out, and its account still
        exists with the password it signed in with."""
        login, csrf, sid = stored.get("login"), stored.get("csrf"), stored.get("sid")
        if not (isinstance(login, str) and isinstance(csrf, str) and isinstance(sid, str)) or stored.created is None:
            return None
        expires = float(stored.created) + self.ttl
        admin = self.relay.config.admin
        account = next((a for a in admin.accounts if a.login == login), None) if admin else None
        if expires < time.time() or sid in self.signed_out or account is None \
                or not hmac.compare_digest(stored.get("pw", ""), self._password_mark(account.password_hash)):
            return None
        return Session(login, csrf, expires, sid)

    def _password_mark(self, password_hash: str) -> str:
        return hmac.new(self.key, f"session-password:{password_hash}".encode(), "sha256").hexdigest()[:32]

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = self._error_page(request, exc)
        except Exception as error:  # our fault: logged with its type, never shown to the browser
            self.relay.log.exception("admin_error", path=request.path, error=type(error).__name__)
            response = self._error_page(request, web.HTTPInternalServerError(
                text="Error interno del relay; consulte el registro (log)."))
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def _error_page(self, request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
        """A person's error (403, 404, 400, 503, 500...) as a page in the site's style with a way back;
        machines (/api, /healthz, /readyz, /metrics) and redirects keep their plain answers."""
        machine = request.path.startswith(MACHINE_PATHS)
        if exc.status < 400 or machine or exc.content_type != "text/plain":
            return exc
        title = ERROR_TITLES.get(exc.status, "No se pudo atender la solicitud")
        back = "/holds" if self.session(request) else "/login"
        try:
            response = self.notice(request, title, (exc.text or "").strip(), exc.status, back=back)
        except Exception:  # a broken template must not hide the original error
            return exc
        for name, value in exc.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers.setdefault(name, value)
        return response

    def _when(self, at: datetime | None) -> str:
        if at is None:
            return ""
        try:
            zone = ZoneInfo(self.relay.directory.timezone)
        except (KeyError, ValueError):
            zone = ZoneInfo("UTC")
        return when.local(at, zone)  # as `relay queue list` prints it: '2026-11-30 08:00 -05 (America/Bogota)'

    def page(self, name: str, request: web.Request, status: int = 200, **context: Any) -> web.Response:
        session = self.session(request)
        html = self.templates.get_template(name).render(
            session=session, csrf=session.csrf if session else "", institution=self.relay.directory.name,
            state_names=STATE_NAMES, reason_names=REASON_NAMES, action_names=ACTION_NAMES, **context)
        return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)

    def notice(self, request: web.Request, title: str, text: str, status: int = 200,
               back: str = "/holds") -> web.Response:
        return self.page("notice.html", request, status, title=title, text=text, back=back)

    def session(self, request: web.Request) -> Session | None:
        session: Session | None = request.get("relay.session")
        if session is not None and session.expires < time.time():
            return None
        return session

    def require(self, request: web.Request) -> Session:
        """The signed-in session, or a redirect to the sign-in page that comes back here."""
        session = self.session(request)
        if session is None:
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        return session

    def require_post(self, request: web.Request, form: Any) -> Session:
        """A signed-in session whose CSRF token the form carries (403 otherwise: no redirect, since
        a forged cross-site POST must not be turned into a sign-in)."""
        session = self.session(request)
        if session is None:
            raise web.HTTPForbidden(text="Inicie sesión primero (sign in first).")
        if not hmac.compare_digest(str(form.get("csrf", "")), session.csrf):
            raise web.HTTPForbidden(text="Formulario vencido o de otro sitio (CSRF); vuelva a cargar la página.")
        return session

    def same_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="Solicitud de otro sitio rechazada (cross-site request refused).")

    async def _store(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreError as error:
            self.relay.log.error("admin_store_failed", error=str(error)[:200])
            raise web.HTTPServiceUnavailable(text="El almacén de mensajes no responde; intente de nuevo.") from None

    # ------------------------------------------------------------------ machines
    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready: listening, the store can write (a transaction, and for SQLite 64 KiB written and
        fsynced beside the database: a full disk shows), no released hold waits to be recorded,
        and the upstream answers (connect, greeting, MAIL, then RSET)."""
        if not self.ready:
            return web.Response(status=503, text="starting\n")
        store = self.relay.store
        try:
            await asyncio.wait_for(asyncio.to_thread(_probe_store, store, self.relay.clock.now()), 5)
        except (StoreError, OSError, TimeoutError) as error:
            return web.Response(status=503, text=f"store cannot write: {type(error).__name__}\n")
        pending = self.relay.unrecorded_holds
        if pending:
            return web.Response(status=503, text=f"store cannot write: {len(pending)} hold outcome(s) unrecorded\n")
        try:
            reply = await asyncio.wait_for(_probe_upstream(self.relay.upstream), 10)
        except (OSError, TimeoutError) as error:
            return web.Response(status=503, text=f"upstream unreachable: {type(error).__name__}\n")
        if not reply.ok:
            return web.Response(status=503, text=f"upstream unreachable: {reply.code}\n")
        return web.Response(text="ready\n")

    async def metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.relay.metrics.render)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def css(self, request: web.Request) -> web.Response:
        text = self.templates.loader.get_source(self.templates, "relay.css")[0]  # type: ignore[union-attr]
        return web.Response(text=text, content_type="text/css")

    async def report(self, request: web.Request) -> web.Response:
        """The compliance report of a month (relay.report.report_for, as `relay report` and the API):
        tables and charts as inline SVG; the page allows exactly the charts' own <style> blocks."""
        from relay import report

        self.require(request)
        zone = self.relay.zone
        month = request.query.get("month", "").strip() or f"{self.relay.clock.now().astimezone(zone):%Y-%m}"
        office = request.query.get("office", "").strip() or None
        try:
            period = report.Period.month(month, zone)
        except report.ReportError:
            return self.page("report.html", request, 400, month=month, office=office or "", body="",
                             error=f"«{_printable(month, 20)}» no es un mes; escríbalo como AAAA-MM, "
                                   "por ejemplo 2026-11.")
        figures = await self._store(report.report_for, self.relay.store, self.relay.directory, period,
                                    report.pack_rules(self.relay.pack), office)
        body = report.report_body(figures)
        response = self.page("report.html", request, month=figures.period, office=office or "",
                             body=Markup(body), error="", offices=[o.office for o in figures.offices])
        csp = SECURITY_HEADERS["Content-Security-Policy"].replace(
            "style-src 'self'", "style-src 'self' " + " ".join(dict.fromkeys(report.style_hashes(body))))
        response.headers["Content-Security-Policy"] = csp
        return response

    # ------------------------------------------------------------------ sign in
    async def index(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/holds")

    async def login_form(self, request: web.Request) -> web.Response:
        return self.page("login.html", request, next=_local(request.query.get("next", "/holds")), error="")

    async def login(self, request: web.Request) -> web.Response:
        self.same_origin(request)
        form = await request.post()
        login = str(form.get("login", "")).strip()
        password = str(form.get("password", ""))
        next_path = _local(str(form.get("next", "/holds")))
        admin = self.relay.config.admin
        account = next((a for a in admin.accounts if a.login == login), None) if admin else None
        # Throttled per account and per client address, counted before the password is checked
        # (so parallel guesses cannot all slip under the limit); a success takes its count back.
        window = admin.failure_window if admin else 900
        keys = {f"login:{login.casefold()[:200]}": admin.max_failures_per_account if admin else 10,
                f"client:{request.remote or ''}": admin.max_failures_per_client if admin else 30}
        now = time.monotonic()
        if any(self.failures.count(key, window, now) >= limit for key, limit in keys.items()):
            self.relay.log.warning("admin_sign_in_blocked", login=_printable(login), client_ip=request.remote)
            return self.page("login.html", request, 429, next=next_path,
                             error="Demasiados intentos fallidos; espere unos minutos e intente de nuevo.")
        for key in keys:
            self.failures.add(key, window, now)
        ok = await asyncio.to_thread(verify_password, password, account.password_hash if account else _DUMMY_HASH)
        ok = ok and account is not None
        self.relay.log.info("admin_sign_in", login=_printable(login), success=ok, client_ip=request.remote)
        if not ok:
            await asyncio.sleep(1)  # slows password guessing
            return self.page("login.html", request, 401, next=next_path,
                             error="Usuario o contraseña incorrectos.")
        for key in keys:
            self.failures.undo(key, now)
        assert account is not None
        stored = await new_session(request)  # a new session id and CSRF token at each sign-in
        stored.update({"login": login, "csrf": secrets.token_urlsafe(32), "sid": secrets.token_urlsafe(16),
                       "pw": self._password_mark(account.password_hash)})
        raise web.HTTPSeeOther(next_path)

    async def logout(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = self.require_post(request, form)
        now = time.time()
        self.signed_out = {sid: until for sid, until in self.signed_out.items() if until > now}
        while len(self.signed_out) >= MAX_SIGNED_OUT:
            self.signed_out.pop(next(iter(self.signed_out)))
        self.signed_out[session.sid] = session.expires
        await asyncio.to_thread(_write_signed_out, self.signed_out_file, dict(self.signed_out))
        (await get_session(request)).invalidate()  # the browser's cookie is cleared
        raise web.HTTPSeeOther("/login")

    # ------------------------------------------------------------------ held mail
    async def holds(self, request: web.Request) -> web.Response:
        """The list: searched (text, sender, recipient, rule, reason, state, dates in the institution's
        zone), counted, and shown a page at a time; each open row can be ticked for a bulk action."""
        self.require(request)
        search = queue.Search.from_query(request.query)
        try:
            filters = search.filters(self.relay.zone)
        except queue.SearchError as error:
            return self.page("holds.html", request, 400, holds=[], search=search, pages=queue.Pages(0, 1, search.size),
                             error=_sentence(str(error)), page_sizes=queue.PAGE_SIZES, bulk=queue.BULK_ACTIONS,
                             **self._list_context())
        total: int = await self._store(self.relay.store.count_matching, filters)
        pages = queue.Pages(total, search.page, search.size)
        rows: list[Hold] = await self._store(self.relay.store.list_holds, filters) if total else []
        return self.page("holds.html", request, holds=rows, search=search, pages=pages, error="",
                         page_sizes=queue.PAGE_SIZES, bulk=queue.BULK_ACTIONS, **self._list_context())

    def _list_context(self) -> dict[str, Any]:
        return {"rule_ids": [r.id for r in self.relay.rules.pack.rules],
                "zone_name": getattr(self.relay.zone, "key", str(self.relay.zone))}

    async def _hold_or_404(self, request: web.Request, hold_id: str) -> Hold:
        hold: Hold | None = await self._store(self.relay.store.get_hold, hold_id)
        if hold is None:
            raise web.HTTPNotFound(text=f"No hay un mensaje retenido {hold_id}.")
        return hold

    async def hold(self, request: web.Request) -> web.Response:
        self.require(request)
        hold = await self._hold_or_404(request, request.match_info["id"])
        content: bytes = await self._store(self.relay.store.hold_content, hold.id) or b""
        events = await self._store(self.relay.store.hold_events, hold.id)
        message = await asyncio.to_thread(parse_message, content)
        events = [(e.at, queue.event_es(e.event, e.detail, REASON_NAMES)) for e in events]
        saved = await self._store(self._saved_why, hold.queue_id)
        return self.page("hold.html", request, hold=hold, message=message, events=events,
                         rules=list(zip(hold.rule_ids, hold.cites, strict=False)),
                         explanations=self._explanations(hold.rule_ids, message), saved_why=saved)

    def _explanations(self, rule_ids: tuple[str, ...], message: Any) -> dict[str, Any]:
        """Why the text rules among a hold's rules judge its text so with the pack now loaded."""
        from relay.policy.explain import explain_rules

        return explain_rules(self.relay.rules.pack, rule_ids, message)

    def _saved_why(self, queue_id: str) -> dict[str, str]:
        """Why each rule fired when the message was decided, as the audit trail keeps it (the pack
        may have changed since): rule id -> the audit's fourth item."""
        saved: dict[str, str] = {}
        for entry in self.relay.store.search_audit(TraceQuery(queue_id=queue_id, limit=20)):
            for item in entry.rules:
                if len(item) > 3 and item[3]:
                    saved.setdefault(item[0], item[3])
        return saved

    async def _act(self, request: web.Request, session: Session, hold_id: str, action: str, reason: str,
                   via: str = "") -> web.Response:
        by = f"{session.login} (web{via})"
        try:
            hold = await self.relay.moderate(hold_id, action, by, reason)  # logs it, wakes the scheduler
        except StoreError as error:
            self.relay.log.error("admin_store_failed", error=str(error)[:200])
            raise web.HTTPServiceUnavailable(text="El almacén de mensajes no responde; intente de nuevo.") from None
        except KeyError:
            raise web.HTTPNotFound(text=f"No hay un mensaje retenido {hold_id}.") from None
        except moderation.AlreadyDecided as error:
            return self.notice(request, "Ya decidido", _sentence(str(error)), 409, f"/holds/{hold_id}")
        except ValueError as error:
            return self.notice(request, "No se pudo", queue.state_error_es(str(error), STATE_NAMES), 409,
                               f"/holds/{hold_id}")
        done = {"approve": "Aprobado: se entregará en unos segundos.",
                "reject": "Rechazado: el remitente recibirá su motivo.",
                "release": "Liberado: se entregará en unos segundos.",
                "delete": "Eliminado: no se entregará."}[action]
        if action == "approve" and hold.next_attempt and hold.next_attempt > self.relay.clock.now():
            done = "Aprobado: se entregará cuando el destinatario esté en su jornada laboral (Ley 2088 de 2021)."
        return self.notice(request, done, f"Mensaje {hold.id} — «{hold.subject or '(sin asunto)'}» "
                                          f"— estado: {STATE_NAMES.get(hold.state.value, hold.state.value)}.")

    async def act(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = self.require_post(request, form)
        return await self._act(request, session, request.match_info["id"], request.match_info["action"],
                               str(form.get("reason", "")))

    async def act_form(self, request: web.Request) -> web.Response:
        """One message's approve / refuse / release / delete, asked again before it is done (the
        hold page's buttons lead here; the form here posts the action)."""
        self.require(request)
        hold = await self._hold_or_404(request, request.match_info["id"])
        return self._confirm_page(request, request.match_info["action"], [hold], f"/holds/{hold.id}",
                                  f"/holds/{hold.id}/{request.match_info['action']}")

    def _confirm_page(self, request: web.Request, action: str, holds: list[Hold], back: str, target: str,
                      status: int = 200, everything: bool = False) -> web.Response:
        verb, effect, allowed = queue.BULK_ACTIONS[action]
        rows = [(h, h.state in allowed) for h in holds]
        return self.page("act_confirm.html", request, status, action=action, verb=verb, effect=effect, rows=rows,
                         doable=sum(ok for _, ok in rows), back=_local(back), target=target, everything=everything)

    async def _selected(self, form: Any, everything: bool = False) -> tuple[str, list[Hold]]:
        """The action and the holds it is for: the ticked ids, or (`everything`, the list's «todos los
        que coinciden») every hold matching the list's search, on every page."""
        action = str(form.get("action", ""))
        if action not in queue.BULK_ACTIONS:
            raise web.HTTPBadRequest(text="Elija una acción: aprobar, rechazar, liberar ahora o eliminar.")
        if everything:
            search = queue.Search.from_query(MultiDict(parse_qsl(urlsplit(_local(str(form.get("back", "")))).query)))
            try:
                filters = search.filters(self.relay.zone)
            except queue.SearchError as error:
                raise web.HTTPBadRequest(text=_sentence(str(error))) from None
            total: int = await self._store(self.relay.store.count_matching, filters)
            if total > queue.MAX_ALL:
                raise web.HTTPBadRequest(text=f"La búsqueda abarca {total} mensajes; se pueden tratar hasta "
                                              f"{queue.MAX_ALL} a la vez: afine la búsqueda.")
            if not total:
                raise web.HTTPBadRequest(text="Ningún mensaje coincide con la búsqueda.")
            matching: list[Hold] = await self._store(self.relay.store.list_holds,
                                                     replace(filters, limit=queue.MAX_ALL, offset=0))
            return action, matching
        ids = list(dict.fromkeys(str(i) for i in form.getall("id", [])))
        if not ids:
            raise web.HTTPBadRequest(text="No marcó ningún mensaje: marque las casillas de los que quiere tratar.")
        if len(ids) > queue.MAX_ALL or not all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids):
            raise web.HTTPBadRequest(text=f"Se pueden tratar hasta {queue.MAX_ALL} mensajes a la vez.")
        found = [await self._store(self.relay.store.get_hold, i) for i in ids]
        return action, [h for h in found if h is not None]

    async def bulk_form(self, request: web.Request) -> web.Response:
        """The ticked rows of the list and the action chosen: a page saying what will be done to
        each (and which cannot be), to confirm. Nothing changes here."""
        form = await request.post()
        self.require_post(request, form)
        everything = form.get("todos") == "1"
        action, holds = await self._selected(form, everything)
        return self._confirm_page(request, action, holds, str(form.get("back", "/holds")), "/holds/bulk/confirm",
                                  everything=everything)

    async def bulk(self, request: web.Request) -> web.Response:
        """A confirmed bulk action: each message in turn, and a page with what happened to each."""
        form = await request.post()
        session = self.require_post(request, form)
        action, holds = await self._selected(form)
        reason = str(form.get("reason", "")).strip()
        if action == "reject" and not reason:
            return self._confirm_page(request, action, holds, str(form.get("back", "/holds")),
                                      "/holds/bulk/confirm", 400)
        results = []
        for hold in holds:
            try:
                done = await self.relay.moderate(hold.id, action, f"{session.login} (web, en lote)", reason)
            except StoreError as error:
                self.relay.log.error("admin_store_failed", error=str(error)[:200])
                results.append((hold, False, "el almacén de mensajes no responde; intente de nuevo"))
            except KeyError:
                results.append((hold, False, "ya no existe"))
            except moderation.AlreadyDecided as error:
                results.append((hold, False, str(error)))
            except ValueError as error:
                results.append((hold, False, queue.state_error_es(str(error), STATE_NAMES)))
            else:
                results.append((done, True, STATE_NAMES.get(done.state.value, done.state.value)))
        ok = sum(1 for _, good, _ in results if good)
        return self.page("bulk_done.html", request, 200 if ok else 409, results=results, ok=ok,
                         done_name=queue.DONE_NAMES[action], back=_local(str(form.get("back", "/holds"))))

    # ------------------------------------------------------------------ message trace
    async def trace(self, request: web.Request) -> web.Response:
        """Where is my mail: the trace searched (sender or login, recipient, Message-ID, queue id, dates
        in the institution's zone) by relay.views.search_traces (as `relay trace` and the API), a page
        at a time, each message's life as a timeline."""
        self.require(request)
        search = queue.TraceSearch.from_query(request.query)
        context: dict[str, Any] = {"search": search, "page_sizes": queue.PAGE_SIZES,
                                   "verdict_names": queue.VERDICT_NAMES,
                                   "zone_name": getattr(self.relay.zone, "key", str(self.relay.zone))}
        try:
            query = search.query(self.relay.zone)
        except queue.SearchError as error:
            return self.page("trace.html", request, 400, messages=[], pages=queue.Pages(0, 1, search.size),
                             error=_sentence(str(error)), **context)
        found = await self._store(views.search_traces, self.relay.store, query)
        return self.page("trace.html", request, messages=found["messages"],
                         pages=queue.Pages(found["total"], search.page, search.size), error="", **context)

    # ------------------------------------------------------------------ signed links
    def _claim(self, token: str) -> links.LinkClaim:
        try:
            return links.verify(self.key, token, self.relay.clock.now())
        except links.LinkError as error:
            self.relay.log.warning("admin_link_refused", reason=str(error))
            raise web.HTTPForbidden(text=f"Enlace rechazado: {error}.") from None

    def _bound(self, session: Session, claim: links.LinkClaim) -> None:
        """A notice link works only for the account of the moderator it was sent to: its login is
        that address, or lists it in `mailboxes`, or is an operator's with `any_link: true`. (Any
        signed-in account can still decide from the list of held messages: the link alone, which
        travels by mail and may be forwarded, is what is bound.)"""
        admin = self.relay.config.admin
        account = next((a for a in admin.accounts if a.login == session.login), None) if admin else None
        moderator = claim.moderator.casefold()
        if account is not None and (account.any_link or account.login.casefold() == moderator
                                    or moderator in {m.casefold() for m in account.mailboxes}):
            return
        self.relay.log.warning("admin_link_wrong_moderator", login=session.login, moderator=claim.moderator,
                               hold=claim.hold_id)
        raise web.HTTPForbidden(text=f"Este enlace se envió a {claim.moderator}; inicie sesión con esa cuenta "
                                     "o decida desde la lista de mensajes retenidos. (This link was sent to "
                                     "another moderator.)")

    async def link_form(self, request: web.Request) -> web.Response:
        claim = self._claim(request.match_info["token"])  # a bad link is refused before any sign-in
        self._bound(self.require(request), claim)
        hold = await self._hold_or_404(request, claim.hold_id)
        return self.page("confirm.html", request, hold=hold, claim=claim, token=request.match_info["token"],
                         expires=datetime.fromtimestamp(claim.expires, UTC),
                         rules=list(zip(hold.rule_ids, hold.cites, strict=False)), explanations={})

    async def link_act(self, request: web.Request) -> web.Response:
        form = await request.post()
        claim = self._claim(request.match_info["token"])
        session = self.require_post(request, form)
        self._bound(session, claim)
        return await self._act(request, session, claim.hold_id, claim.action, str(form.get("reason", "")),
                               f", enlace de {claim.moderator}")

    # ------------------------------------------------------------------ the sender's withdrawal
    def _withdraw_claim(self, token: str) -> links.LinkClaim:
        try:
            return links.verify(self.key, token, self.relay.clock.now(), links.WITHDRAW_ACTIONS)
        except links.LinkError as error:
            self.relay.log.warning("admin_link_refused", reason=str(error))
            raise web.HTTPForbidden(text=f"Enlace rechazado: {error}.") from None

    async def _sender_hold(self, claim: links.LinkClaim) -> Hold:
        """The held copy a withdrawal link names, if the link went to its sender (no sign-in: the
        signed link, sent to the sender's mailbox, is the sender's authority over their message)."""
        hold: Hold | None = await self._store(self.relay.store.get_hold, claim.hold_id)
        if hold is None or (hold.sender_notice_to or "").casefold() != claim.moderator.casefold():
            raise web.HTTPNotFound(text="Este enlace no corresponde a un mensaje retenido suyo.")
        return hold

    async def withdraw_form(self, request: web.Request) -> web.Response:
        """A confirmation page: opening the link (a mail scanner may) changes nothing."""
        token = request.match_info["token"]
        claim = self._withdraw_claim(token)
        hold = await self._sender_hold(claim)
        return self.page("withdraw.html", request, hold=hold, token=token,
                         expires=datetime.fromtimestamp(claim.expires, UTC))

    async def withdraw(self, request: web.Request) -> web.Response:
        self.same_origin(request)
        token = request.match_info["token"]
        claim = self._withdraw_claim(token)
        hold = await self._sender_hold(claim)
        try:
            hold = await self.relay.moderate(hold.id, "withdraw", f"{claim.moderator} (remitente, enlace)")
        except StoreError as error:
            self.relay.log.error("admin_store_failed", error=str(error)[:200])
            raise web.HTTPServiceUnavailable(text="El almacén de mensajes no responde; intente de nuevo.") from None
        except KeyError:
            raise web.HTTPNotFound(text="Este enlace no corresponde a un mensaje retenido suyo.") from None
        except ValueError as error:
            return self.notice(request, "No se pudo retirar", _sentence(str(error)), 409, f"/w/{token}")
        return self.notice(request, "Mensaje retirado: no se entregará.",
                           f"Mensaje {hold.id} — «{hold.subject or '(sin asunto)'}» — estado: "
                           f"{STATE_NAMES.get(hold.state.value, hold.state.value)}.", back=f"/w/{token}")

    # ------------------------------------------------------------------ rule test
    async def check_form(self, request: web.Request) -> web.Response:
        self.require(request)
        return self.page("check.html", request, result=None, error="", form={})

    async def check(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.require_post(request, form)
        fields = {k: str(form.get(k, "")) for k in ("mail_from", "rcpt", "auth", "client_ip", "at", "message")}
        upload = form.get("file")
        raw = upload.file.read(MAX_CHECK_BYTES) if isinstance(upload, web.FileField) else b""
        raw = raw or fields["message"].replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        rcpts = [r.strip() for r in fields["rcpt"].replace(",", "\n").splitlines() if r.strip()]
        error = ""
        result = None
        try:
            at = datetime.fromisoformat(fields["at"]) if fields["at"].strip() else self.relay.clock.now()
            if at.tzinfo is None:
                raise ValueError("la fecha necesita su zona horaria, p. ej. 2026-11-24T20:00:00-05:00")
            if not rcpts:
                raise ValueError("indique al menos un destinatario")
            if not raw.strip():
                raise ValueError("pegue o suba un mensaje")
            envelope = Envelope.build(fields["mail_from"].strip(), rcpts, fields["auth"].strip() or None,
                                      fields["client_ip"].strip() or None)
            rules = self.relay.rules
            decision = await asyncio.to_thread(
                lambda: evaluate(Submission(envelope, parse_message(raw)), rules.pack, rules.directory, at))
            result = decision.to_json()
        except AddressError as exc:
            error = f"Dirección no válida: {exc}"
        except ValueError as exc:
            error = f"Datos no válidos: {exc}"
        return self.page("check.html", request, 400 if error else 200, result=result, error=error, form=fields)


# The pages a sign-in may go back to, and nothing else: no scheme, no host, no control characters
# or spaces (browsers drop tabs and newlines from a URL, so "/\t/evil.test" is "//evil.test").
_NEXT_PATH = re.compile(r"/(?:holds(?:/[A-Za-z0-9_-]{1,64})?|check|report|trace|m/[A-Za-z0-9_.=-]{1,4096})")
_NEXT_QUERY = re.compile(r"[A-Za-z0-9_=&%.+-]{0,400}")


MACHINE_PATHS = ("/api/", "/healthz", "/readyz", "/metrics", "/static/")


def _read_signed_out(path: Path | None) -> dict[str, float]:
    """The signed-out sessions kept beside the secret (an unreadable file: none)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    now = time.time()
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float) and v > now} \
        if isinstance(data, dict) else {}


def _write_signed_out(path: Path | None, signed_out: dict[str, float]) -> None:
    """Written whole to a temporary file, fsynced and renamed over the old one."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(signed_out, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _probe_store(store: Any, now: datetime) -> None:
    """A write the store must commit (a rate counter nobody reads), and for a file store the disk
    space a hold needs (64 KiB written and fsynced next to the database, then removed)."""
    store.rate_take("readyz-probe", now.replace(minute=0, second=0, microsecond=0), 0, 1)
    path = getattr(store, "path", None)
    if path is not None:
        probe = Path(path).parent / ".readyz-probe"
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()


async def _probe_upstream(upstream: Any) -> Any:
    """An SMTP/LMTP upstream: a pooled connection (or a new one: connect, greeting, EHLO) answers
    NOOP. Other kinds (Maildir, MX by DNS) have no one next hop to ask: ready."""
    from relay.upstream import Reply, UpstreamError

    upstream = getattr(upstream, "inner", upstream)  # MeteredUpstream wraps the real one
    if not hasattr(upstream, "acquire"):
        return Reply(250, "2.0.0 no single next hop to probe")
    try:
        conn = await upstream.acquire()
    except UpstreamError as error:
        raise OSError(str(error)) from None
    try:
        reply = await conn.command("NOOP")
    except (UpstreamError, OSError, TimeoutError):
        await upstream.release(conn, reusable=False)
        raise OSError("the upstream dropped the connection") from None
    await upstream.release(conn, reusable=reply.ok)
    return reply


def _local(path: str) -> str:
    """Only a page of this admin site may follow a sign-in (no open redirect)."""
    where, _, query = path.partition("?")
    if _NEXT_PATH.fullmatch(where) and _NEXT_QUERY.fullmatch(query):
        return path
    return "/holds"


def _printable(text: str, limit: int = 200) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", "?", text)[:limit]


def _sentence(text: str) -> str:
    return (text[:1].upper() + text[1:] + ".") if text else text


async def start(site: AdminSite, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(site.web, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


async def listen(disposer: Disposer, link_key: bytes | None, admin: Any, log: Any, token_file: Path | None = None,
                 signed_out_file: Path | None = None) -> tuple[AdminSite, web.AppRunner] | None:
    """Open the admin listener a config's `admin` section names (None: no section, said in the log
    with what to do); OSError when its port cannot be opened."""
    if admin is None or link_key is None:
        log.warning("no_admin_account", advice="no admin section: no moderation pages; approve held "
                    "mail with `relay queue approve`, or add admin: with accounts (config.example.yaml)")
        return None
    if not admin.accounts:
        log.warning("no_admin_account", advice="nobody can sign in to the moderation pages; add "
                    "admin.accounts with a password_hash made by `relay passwd LOGIN`")
    host, port = admin.address()
    site = AdminSite(disposer, link_key, token_file, signed_out_file)
    runner = await start(site, host, port)
    log.info("admin_listening", listen=admin.listen, url=admin.base_url(), accounts=len(admin.accounts))
    if not is_loopback_host(host):
        log.warning("admin_not_loopback", listen=admin.listen, advice="put it behind a TLS proxy, or bind to 127.0.0.1")
    return site, runner


def is_loopback_host(host: str) -> bool:
    """Whether a listen host is loopback only (anything else should sit behind a proxy/firewall)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
