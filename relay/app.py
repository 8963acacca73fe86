"""Wiring for `relay serve`: config, directory, pack, clock, upstream, SMTP front-end, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import secrets
import signal
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from relay import holds, logs, rewrite, systemd, yamlconf
from relay.addresses import AddressError
from relay.auth import Credentials
from relay.checks import DnsChecks, DnsFailure
from relay.clock import Clock, FileClock, SystemClock, clock_from_env
from relay.config import RelayConfig, load_config
from relay.directory import FileDirectory, address_key, load_directory
from relay.frontends.milter import MilterSession
from relay.frontends.smtp import AuthResult, LoginPassword, RelaySMTP, _clean
from relay.identity import server_directory
from relay.message import DnsFacts, Envelope, Submission, parse_message
from relay.metrics import MeteredUpstream, Metrics, TimedStore
from relay.policy.automatic import grace_key
from relay.policy.engine import envelope_notices, envelope_refusing, evaluate, refusal_reply
from relay.policy.pack import Pack, load_pack
from relay.policy.verdicts import Decision, Notice, Verdict
from relay.scheduler import Scheduler, SchedulerSettings
from relay.store import AuditEntry, NewHold, SocialAccount, Store, StoreError, open_store
from relay.upstream import Reply, Transaction, Upstream, make_upstream
from relay.web import links
from relay.web.server import AdminSite
from relay.web.server import start as start_admin

_AUTH_SENDER = re.compile(rb"\(Authenticated sender: ([^)\s]+)\)")
STORE_UNAVAILABLE = "451 4.3.0 The hold store is unavailable; try again later"
INLINE_DECIDE = 64 * 1024  # smaller messages are decided on the event loop, larger in a worker thread


def login_from_trace(content: bytes) -> str | None:
    """The SASL login a trusted Postfix recorded (smtpd_sasl_authenticated_header = yes) in the
    topmost Received header, the one it wrote itself; deeper ones could be forged by the client."""
    fields, _ = rewrite.split_head(content)
    first = next((f for f in fields if f[:9].lower() == b"received:"), None)
    match = _AUTH_SENDER.search(first) if first else None
    return match.group(1).decode("utf-8", "replace") if match else None


@dataclass(frozen=True)
class Rules:
    """What a reload replaces in one step: a decision reads this once, so it never mixes the pack
    of one generation with the directory of another."""

    pack: Pack
    directory: FileDirectory
    credentials: Credentials | None
    tls_context: ssl.SSLContext | None
    generation: int = 1


def load_rules(config: RelayConfig, config_path: Path, generation: int = 1) -> Rules:
    """Read the pack, directory, credentials and certificate a config names (blocking)."""
    credentials = (Credentials.load(config.resolve(config_path, config.auth.credentials_file))
                   if config.auth else None)
    tls_context: ssl.SSLContext | None = None
    if config.tls:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(config.resolve(config_path, config.tls.cert),
                                    config.resolve(config_path, config.tls.key))
    return Rules(load_pack(config.resolve(config_path, config.policy)),
                 server_directory(load_directory(config.resolve(config_path, config.directory)), config),
                 credentials, tls_context, generation)


# Settings read only at start: a reload that changes them says so and keeps the running value.
RESTART_FIELDS = ("listen", "milter", "upstream", "upstream_options", "store", "store_options", "pid_file", "log",
                  "event_loop", "admin", "dns")


class RelayApp:
    def __init__(self, config: RelayConfig, config_path: Path, clock: Clock | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.base = config_path.resolve().parent
        self.rules = load_rules(config, config_path)
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.dns = DnsChecks(config.dns) if config.dns else None
        if self.dns is not None:
            self.metrics.watch_dns(self.dns.resolver)
        self.upstream: Upstream = MeteredUpstream(
            make_upstream(config.upstream, config.hostname, self.base, config.upstream_options,
                          self.dns.resolver if self.dns else None), self.metrics)
        self.active = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.log = logs.get("relay").bind(pack=self.pack.pack)
        self.notice_from = f"postmaster@{sorted(self.directory.domains)[0]}"
        self.store: Store = cast(Store, TimedStore(open_store(
            config.store, self.base, config.store_options.lease, config.store_options.pool_size), self.metrics))
        self.metrics.watch_store(self.store, self.clock)
        self.metrics.sessions.set_function(lambda: self.active)
        self.metrics.generation.set(1)
        sched = config.scheduler
        self.scheduler = Scheduler(self.store, self.upstream, self.clock, logs.get("relay.scheduler"),
                                   SchedulerSettings(sched.batch, sched.concurrency, sched.retry_base, sched.retry_max,
                                                     sched.alert_after_attempts, sched.alert_to, sched.max_sleep),
                                   self.notice_bytes)
        self.audit_buffer: list[AuditEntry] = []
        self.link_key = (links.load_key(config.resolve(config_path, config.admin.secret_file))
                         if config.admin else None)

    def moderation_link(self, hold_id: str, action: str, moderator: str) -> str:
        """A signed one-click link for a moderation notice (admin listener on)."""
        assert self.config.admin is not None and self.link_key is not None
        expires = int(self.clock.now().timestamp() + self.config.admin.link_ttl)
        token = links.sign(self.link_key, links.LinkClaim(hold_id, action, moderator, expires))
        return f"{self.config.admin.base_url()}/m/{token}"

    def with_links(self, notices: tuple[Notice, ...], planned: list[NewHold], ids: list[str]) -> tuple[Notice, ...]:
        return holds.with_hold_ids(notices, planned, ids, self.moderation_link if self.link_key else None)

    @property
    def pack(self) -> Pack:
        return self.rules.pack

    @property
    def directory(self) -> FileDirectory:
        return self.rules.directory

    @property
    def credentials(self) -> Credentials | None:
        return self.rules.credentials

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        return self.rules.tls_context

    async def reload(self) -> ReloadResult:
        """Re-read config, pack, directory, credentials and certificate; swap them in at once, or
        keep the running ones when any file is bad (the same errors as `relay validate`).
        Sessions in flight finish with the rules they started with; nothing is dropped."""
        generation = self.rules.generation + 1
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
            rules = await asyncio.to_thread(load_rules, config, self.config_path, generation)
        except yamlconf.ConfigError as error:
            return self._reload_refused(error.problems)
        except (OSError, ValueError) as error:
            filename = getattr(error, "filename", None)
            return self._reload_refused([f"{filename or 'a file the config names'}: "
                                         f"{getattr(error, 'strerror', None) or error}"])
        except ssl.SSLError as error:
            return self._reload_refused([f"tls: the certificate or key is unusable ({error.reason or error})"])
        kept = [name for name in RESTART_FIELDS if getattr(config, name) != getattr(self.config, name)]
        self.config = config.model_copy(update={name: getattr(self.config, name) for name in kept})
        self.rules = rules
        sched = config.scheduler
        self.scheduler.settings = SchedulerSettings(sched.batch, sched.concurrency, sched.retry_base, sched.retry_max,
                                                    sched.alert_after_attempts, sched.alert_to, sched.max_sleep)
        self.log = logs.get("relay").bind(pack=rules.pack.pack)
        self.log.info("reloaded", generation=generation, rules=len(rules.pack.rules),
                      addresses=len(rules.directory.entries), restart_needed=kept)
        self.metrics.reload(True)
        self.metrics.generation.set(generation)
        return ReloadResult(True, generation, rules.pack.pack, len(rules.pack.rules), [], kept)

    def _reload_refused(self, problems: list[str]) -> ReloadResult:
        self.log.error("reload_refused", problems=problems, generation=self.rules.generation,
                       advice="the running rules stay in force; fix the file and reload again")
        self.metrics.reload(False)
        return ReloadResult(False, self.rules.generation, self.pack.pack, len(self.pack.rules), problems, [])

    @classmethod
    def from_config(cls, path: str | Path, clock: Clock | None = None) -> RelayApp:
        return cls(load_config(path), Path(path), clock)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        ok = self.credentials.check(login, data.password.decode("utf-8", "replace"))
        self.log.info("auth", login=login if ok else None, success=ok, mechanism=mechanism)
        return AuthResult(success=ok, handled=False, auth_data=data)

    async def rcpt_refusal(self, mail_from: str, rcpts: list[str], rcpt: str, login: str | None, client_ip: str,
                           trusted_hop: bool = False, queue_id: str = "", notify: bool = True) -> str | None:
        """A 5xx for this recipient when an envelope-only rule refuses it, else None; a refusal is
        logged and goes to the audit trail like any decision, and (with `notify`: the front-end's
        first refusal in a transaction) our own sender gets a notice."""
        if trusted_hop:
            # The trusted Postfix in front applied its relay restrictions, and the sender's login
            # only arrives with the message (its Received header): everything is decided at DATA.
            return None
        try:
            envelope = Envelope.build(mail_from, rcpts, login, client_ip)
        except AddressError:
            return "501 5.1.3 Bad recipient address syntax"
        rules = self.rules
        if self.dns is not None:
            try:
                domains = await self.dns.recipient_domains(envelope, rules.directory, only=rcpt)
            except DnsFailure as failure:
                self.log.warning("dns_failed", rcpt=rcpt, what=failure.what)
                return failure.reply
            envelope = replace(envelope, facts=DnsFacts(mail_domains=domains))
        finding = envelope_refusing(envelope, rcpt, rules.pack, rules.directory, self.clock.now())
        if finding is None:
            return None
        reply = str(refusal_reply(finding))
        queue_id = queue_id or secrets.token_hex(6).upper()
        self.log.info("rcpt_refused", queue_id=queue_id, rcpt=rcpt, reply=reply, login=envelope.auth,
                      client_ip=client_ip, audit=[{"rule": finding.rule_id, "cites": finding.cites,
                                                   "action": finding.action.value}])
        self.add_audit(AuditEntry(
            self.clock.now(), queue_id, "reject", reply, envelope.mail_from, 1, envelope.auth, client_ip,
            ((finding.rule_id, finding.cites, finding.action.value),)))
        if notify:
            notices = envelope_notices(envelope, finding, rcpt, rules.pack, rules.directory, self.clock.now())
            if notices:
                self.spawn(self.notify(notices, self.log.bind(queue_id=queue_id)))
        return reply

    def decide(self, envelope: Envelope, content: bytes) -> tuple[Decision, str]:
        """Parse and decide (run in a worker thread so a large message does not block the loop);
        the decision and the message's subject."""
        message = parse_message(content)
        rules = self.rules
        return evaluate(Submission(envelope, message), rules.pack, rules.directory, self.clock.now()), message.subject

    async def process(self, txn: Transaction | None, mail_from: str, rcpts: list[str], content: bytes, *,
                      login: str | None, client_ip: str, helo: str, tls: bool, trusted_hop: bool = False) -> str:
        queue_id = secrets.token_hex(6).upper()
        log = self.log.bind(queue_id=queue_id)
        if txn is None:
            return "503 5.5.1 Bad sequence of commands"
        if login is None and trusted_hop:
            login = login_from_trace(content)
        try:
            envelope = Envelope.build(mail_from, rcpts, login, client_ip, helo)
        except AddressError:
            await txn.abort()
            return "501 5.1.7 Bad address syntax"
        if limited := await self.rate_refusal(queue_id, envelope, log):
            await txn.abort()
            return limited
        try:
            envelope = await self.with_facts(queue_id, envelope, content, log)
        except DnsFailure as failure:
            await txn.abort()
            return failure.reply
        decision, subject = await self.decide_logged(queue_id, envelope, content, log)
        if decision.verdict in (Verdict.REJECT, Verdict.TEMPFAIL):
            await txn.abort()
            await self.notify(decision.notices, log)
            return str(decision.reply)
        fields, rest = rewrite.split_head(content)
        fields = rewrite.drop_own_headers(fields)
        if decision.rewrite and decision.rewrite.hide:
            fields = rewrite.hide_addresses(fields, decision.rewrite.hide)
        if decision.rewrite and (decision.rewrite.banner or decision.rewrite.subject_tag):
            fields, rest = rewrite.add_banner(fields, rest, decision.rewrite.banner, decision.rewrite.subject_tag)
        trace = self.trace_headers(queue_id, helo, client_ip, login, tls, decision)
        if decision.verdict in holds.HELD:
            return await self.hold(txn, decision, queue_id, mail_from, login, rewrite.join(trace + fields, rest),
                                   subject, log)
        if decision.rewrite and decision.rewrite.split:
            await txn.abort()
            reply = await self.deliver_split(mail_from, rcpts, trace, fields, rest, log, login)
        else:
            reply = await txn.data(rewrite.join(trace + fields, rest))
        log.info("upstream_reply", code=reply.code, text=reply.text[:200], upstream=self.upstream.describe())
        if not reply.ok:
            return str(reply)
        await self.notify(decision.notices, log)
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def with_facts(self, queue_id: str, envelope: Envelope, content: bytes, log: Any) -> Envelope:
        """The envelope with its DNS facts (DNS checks on); DnsFailure when DNS did not answer and
        the config says 4xx — that refusal is logged and audited like a decision."""
        if self.dns is None:
            return envelope
        try:
            return await self.dns.with_facts(envelope, content, self.directory)
        except DnsFailure as failure:
            log.warning("dns_failed", what=failure.what)
            self.add_audit(AuditEntry(self.clock.now(), queue_id, "tempfail", failure.reply, envelope.mail_from,
                                      len(envelope.rcpt_to), envelope.auth, envelope.client_ip,
                                      (("dns-unavailable", "dns.on_failure: tempfail", "tempfail"),)))
            raise

    async def rate_refusal(self, queue_id: str, envelope: Envelope, log: Any) -> str | None:
        """A 450 when one of our senders passes a configured sending rate (recipients per window,
        counted in the shared store), else None. Outside senders are not counted here."""
        sender = envelope.auth or (envelope.mail_from if self.directory.is_local(envelope.mail_from) else "")
        if not self.config.rate_limits or not sender:
            return None
        now = self.clock.now()
        for limit in self.config.rate_limits:
            start = datetime.fromtimestamp(now.timestamp() // limit.window * limit.window, UTC)
            try:
                count = await asyncio.to_thread(self.store.rate_take, f"sender:{sender.casefold()}", start,
                                                len(envelope.rcpt_to), limit.limit)
            except StoreError as error:
                log.error("rate_store_failed", error=str(error)[:200])
                return None  # a counter we cannot read never stops mail
            if count is None:
                hours = limit.window / 3600
                reply = (f"450 4.7.1 [rate-limit] Supera el limite de {limit.limit} destinatarios por "
                         f"{hours:g} hora(s) para {sender[:100]}; intente mas tarde (protege a la entidad de "
                         "listas de spam)")
                log.warning("rate_limited", sender=sender, window=limit.window, limit=limit.limit,
                            recipients=len(envelope.rcpt_to))
                self.add_audit(AuditEntry(now, queue_id, "tempfail", reply, envelope.mail_from,
                                          len(envelope.rcpt_to), envelope.auth, envelope.client_ip,
                                          (("rate-limit", f"rate_limits: {limit.limit} per {limit.window} s",
                                            "tempfail"),)))
                return reply
        return None

    async def decide_logged(self, queue_id: str, envelope: Envelope, content: bytes,
                            log: Any) -> tuple[Decision, str]:
        """Decide (in a worker thread), then log the decision, buffer it for the audit trail and
        record social-network accounts: what every front-end does with every message."""
        if len(content) <= INLINE_DECIDE:
            decision, subject = self.decide(envelope, content)  # ~0.3 ms: cheaper than a thread hop
        else:
            decision, subject = await asyncio.to_thread(self.decide, envelope, content)
        log.info("decision", verdict=decision.verdict.value, reply=str(decision.reply),
                 hits=[f.rule_id for f in decision.findings], monitored=[f.rule_id for f in decision.monitored],
                 misses=list(decision.misses), recipients=len(envelope.rcpt_to), size=len(content),
                 login=envelope.auth, client_ip=envelope.client_ip, defects=len(decision.defects),
                 audit=[{"rule": f.rule_id, "cites": f.cites, "action": f.action.value} for f in decision.findings])
        self.audit(queue_id, envelope, decision)
        await self.record(decision, log)
        return decision, subject

    async def store_holds(self, decision: Decision, queue_id: str, mail_from: str, login: str | None,
                          content: bytes, subject: str, log: Any) -> tuple[list[NewHold], list[str]] | None:
        """Write the held copies durably (fsync); None when the store cannot (answer 451)."""
        planned = holds.plan(decision, queue_id, mail_from, content, subject, decision.notice_to)
        try:
            return planned, await asyncio.to_thread(self.store.add_holds, planned, self.clock.now())
        except StoreError as error:
            log.error("hold_store_failed", error=str(error)[:200])
            return None

    async def hold(self, txn: Transaction, decision: Decision, queue_id: str, mail_from: str, login: str | None,
                   content: bytes, subject: str, log: Any) -> str:
        """Store the held copies durably, deliver the rest now, then answer 250.

        Order: store (fsync) first, then deliver the deliver-now recipients; if that delivery
        fails, the stored copies are removed and the client retries the whole message."""
        await txn.abort()  # the upstream transaction named every recipient; start afresh
        stored = await self.store_holds(decision, queue_id, mail_from, login, content, subject, log)
        if stored is None:
            return STORE_UNAVAILABLE
        planned, ids = stored
        now_rcpts = holds.deliver_now(decision)
        if now_rcpts:
            reply = await self.deliver_to(mail_from, now_rcpts, content)
            log.info("upstream_reply", code=reply.code, text=reply.text[:200], upstream=self.upstream.describe(),
                     recipients=len(now_rcpts))
            if not reply.ok:
                try:
                    await asyncio.to_thread(self.store.remove, ids)
                except StoreError as error:  # the copies stay held; the retry may hold them twice
                    log.error("hold_undo_failed", error=str(error)[:200], holds=ids)
                return str(reply)
        log.info("held", holds=ids, reasons=[h.reason for h in planned],
                 deliver_at=[h.deliver_at.isoformat() if h.deliver_at else None for h in planned],
                 held_recipients=sum(len(h.recipients) for h in planned), delivered_now=len(now_rcpts))
        await self.notify(self.with_links(decision.notices, planned, ids), log)
        self.scheduler.wake()
        held = sum(len(h.recipients) for h in planned)
        return f"250 2.0.0 Ok: queued as {queue_id}; {held} recipient(s) held by policy"

    async def process_milter(self, queue_id: str, mail_from: str, rcpts: list[str], content: bytes, *,
                             login: str | None, client_ip: str, helo: str,
                             replace_body: bool = True) -> MilterOutcome:
        """The same decision, notices and holds as `process`, said the milter way: the MTA keeps
        the message and delivers it itself; we answer with a reply, or with header edits and the
        recipients to take out of its delivery (held ones, after their copy is fsynced here)."""
        log = self.log.bind(queue_id=queue_id, frontend="milter")
        try:
            envelope = Envelope.build(mail_from, rcpts, login, client_ip, helo)
        except AddressError:
            return MilterOutcome(reply="550 5.1.7 Bad address syntax")
        if limited := await self.rate_refusal(queue_id, envelope, log):
            return MilterOutcome(reply=limited)
        try:
            envelope = await self.with_facts(queue_id, envelope, content, log)
        except DnsFailure as failure:
            return MilterOutcome(reply=failure.reply)
        decision, subject = await self.decide_logged(queue_id, envelope, content, log)
        if decision.verdict in (Verdict.REJECT, Verdict.TEMPFAIL):
            await self.notify(decision.notices, log)
            return MilterOutcome(reply=str(decision.reply))
        before, rest = rewrite.split_head(content)
        fields = rewrite.drop_own_headers(before)
        if decision.rewrite and decision.rewrite.hide:
            fields = rewrite.hide_addresses(fields, decision.rewrite.hide)
        body = None
        if decision.rewrite and decision.rewrite.banner and replace_body:  # the warning part: a new body
            fields, rest = rewrite.add_banner(fields, rest, decision.rewrite.banner, decision.rewrite.subject_tag)
            body = rest[2:]  # after the blank line
        elif decision.rewrite and decision.rewrite.subject_tag:  # an MTA that cannot replace bodies: the tag only
            fields = rewrite.tag_subject(fields, decision.rewrite.subject_tag)
        trace = self.trace_headers(queue_id, helo, client_ip, login, False, decision)
        if decision.verdict in holds.HELD:
            stored = await self.store_holds(decision, queue_id, mail_from, login, rewrite.join(trace + fields, rest),
                                            subject, log)
            if stored is None:
                return MilterOutcome(reply=STORE_UNAVAILABLE)
            planned, ids = stored
            held = {address_key(r) for h in planned for r in h.recipients}
            log.info("held", holds=ids, reasons=[h.reason for h in planned],
                     deliver_at=[h.deliver_at.isoformat() if h.deliver_at else None for h in planned],
                     held_recipients=len(held), delivered_now=len(rcpts) - len(held))
            await self.notify(self.with_links(decision.notices, planned, ids), log)
            self.scheduler.wake()
            if not holds.deliver_now(decision):
                return MilterOutcome(discard=True)
            return MilterOutcome(delete_rcpts=tuple(r for r in rcpts if address_key(r) in held),
                                 header_edits=self.milter_edits(before, fields, trace), body=body)
        if decision.rewrite and decision.rewrite.split:
            reply = await self.deliver_split(mail_from, rcpts, trace, fields, rest, log, login)
            log.info("upstream_reply", code=reply.code, text=reply.text[:200], upstream=self.upstream.describe())
            if not reply.ok:
                return MilterOutcome(reply=str(reply) if reply.code >= 400 else "451 4.4.1 Upstream failure")
            await self.notify(decision.notices, log)
            return MilterOutcome(discard=True)  # every copy went out separately
        await self.notify(decision.notices, log)
        return MilterOutcome(header_edits=self.milter_edits(before, fields, trace), body=body)

    @staticmethod
    def milter_edits(before: list[bytes], after: list[bytes], trace: list[bytes]) -> tuple[HeaderEdit, ...]:
        """Header edits for the MTA: forged X-Relay-* out, hidden addresses out, our X-Relay-* in
        (the MTA writes its own Received header, so ours is not added)."""
        ours = [t for t in trace if t[:8].lower() == b"x-relay-"]
        return tuple(rewrite.header_edits(before, after + ours))

    async def deliver_to(self, mail_from: str, rcpts: list[str], content: bytes) -> Reply:
        """A fresh upstream transaction for some recipients; any refusal refuses the whole message."""
        txn = self.upstream.transaction()
        await txn.mail(mail_from)
        for rcpt in rcpts:
            reply = await txn.rcpt(rcpt)
            if not reply.ok:
                await txn.abort()
                return reply
        return await txn.data(content)

    def local_sender(self, mail_from: str, login: str | None) -> str | None:
        """Our own sender, who may be told about the message (no backscatter to outsiders): the
        login — the person who tried — before an address they only claimed."""
        return next((a for a in (login or "", mail_from) if a and self.directory.is_local(a)), None)

    async def notify(self, notices: tuple[Notice, ...], log: Any) -> None:
        """Queue notices in the durable outbox; the scheduler sends them through the upstream.
        An auto-reply goes at most once per sender and rule per `auto_reply_grace_period`."""
        grace = self.config.auto_reply_grace_period
        if grace and any(n.kind == "auto-reply" for n in notices):
            kept = []
            for n in notices:
                if n.kind == "auto-reply" and not await asyncio.to_thread(
                        self.store.take_once, grace_key(n), self.clock.now(), grace):
                    log.info("auto_reply_suppressed", to=n.to, rules=list(n.rule_ids), why="grace period")
                    continue
                kept.append(n)
            notices = tuple(kept)
        if not notices:
            return
        try:
            await asyncio.to_thread(self.store.add_notices, [(n.to, n.kind, n.subject, n.text) for n in notices],
                                    self.clock.now())
        except StoreError as error:
            log.error("notice_not_stored", error=str(error)[:200], count=len(notices))
            return
        self.scheduler.wake()

    def audit(self, queue_id: str, envelope: Envelope, decision: Decision) -> None:
        """Buffer the decision for the audit trail (flushed in batches by `flush_audit`)."""
        self.add_audit(AuditEntry(
            self.clock.now(), queue_id, decision.verdict.value, str(decision.reply), envelope.mail_from,
            len(envelope.rcpt_to), envelope.auth, envelope.client_ip,
            tuple((f.rule_id, f.cites, f.action.value) for f in decision.findings),
            tuple(f.rule_id for f in decision.monitored)))

    def add_audit(self, entry: AuditEntry) -> None:
        """One decision: counted in the metrics and buffered for the audit trail, together."""
        self.metrics.decision(entry)
        self.audit_buffer.append(entry)

    async def flush_audit(self) -> None:
        batch, self.audit_buffer = self.audit_buffer, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self.store.add_audit, batch)
        except StoreError as error:
            self.log.error("audit_not_stored", error=str(error)[:200], count=len(batch))
            self.audit_buffer[:0] = batch[-10000:]  # try again later, bounded

    async def audit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            await self.flush_audit()

    async def record(self, decision: Decision, log: Any) -> None:
        """Social-network accounts seen (Bogotá Circular 004 de 2024, num. 4) go to the inventory."""
        accounts = []
        for record in decision.records:
            if record.kind != "social-account":
                continue
            data = record.as_dict()
            seen = datetime.fromisoformat(data["seen_at"])
            accounts.append(SocialAccount(data["network"], data["account"], data["mailbox_type"], seen, seen,
                                          1, data.get("subject", "")))
        if accounts:
            try:
                await asyncio.to_thread(self.store.record_accounts, accounts)
            except StoreError as error:
                log.error("inventory_not_stored", error=str(error)[:200])

    async def deliver_split(self, mail_from: str, rcpts: list[str], trace: list[bytes], fields: list[bytes],
                            rest: bytes, log: Any, login: str | None = None) -> Reply:
        """One transaction per recipient, each copy showing only its own address.

        SMTP gives one DATA reply for all recipients, so: a temporary failure of any copy makes the
        client retry the whole message (copies already delivered may then arrive twice: a duplicate
        beats a loss); a permanent failure of the first copy refuses the message; a permanent
        failure after other copies went out is answered 250 and told to the (staff) sender."""
        delivered: list[str] = []
        failed: list[tuple[str, Reply]] = []
        for rcpt in rcpts:
            txn = self.upstream.transaction()
            await txn.mail(mail_from)
            reply = await txn.rcpt(rcpt)
            if reply.ok:
                reply = await txn.data(rewrite.join(trace + rewrite.set_to(fields, rcpt), rest))
            else:
                await txn.abort()
            if reply.ok:
                delivered.append(rcpt)
            elif reply.temporary or not delivered:
                if delivered:
                    log.warning("split_retry_duplicates", delivered=len(delivered), code=reply.code)
                return reply
            else:
                failed.append((rcpt, reply))
                log.error("split_copy_failed", rcpt=rcpt, code=reply.code, text=reply.text[:200])
        if failed:
            await self.notify_split_failures(mail_from, login, failed, log)
        return Reply(250, f"2.0.0 Ok: {len(delivered)} copies")

    async def notify_split_failures(self, mail_from: str, login: str | None, failed: list[tuple[str, Reply]],
                                    log: Any) -> None:
        """Tell our own sender which individual copies the next hop refused (never an outsider)."""
        to = self.local_sender(mail_from, login)
        if to is None:
            return
        lines = "\n".join(f"- {rcpt}: {reply}" for rcpt, reply in failed)
        text = ("Su mensaje se envió por separado a cada destinatario, pero el servidor de correo rechazó "
                f"estas copias:\n{lines}\n\n--- English ---\nYour message was sent to each recipient "
                f"separately, but the mail server refused these copies:\n{lines}")
        await self.notify((Notice(to, "bounce", "Copias no entregadas", text),), log)

    def trace_headers(self, queue_id: str, helo: str, client_ip: str, login: str | None, tls: bool,
                      decision: Decision) -> list[bytes]:
        protocol = "ESMTP" + ("S" if tls else "") + ("A" if login else "")
        now = format_datetime(self.clock.now())
        received = (f"Received: from {_clean(helo)} ([{_clean(client_ip, 64)}])\r\n"
                    f"\tby {_clean(self.config.hostname)} (policy-relay) with {protocol} id {queue_id};\r\n\t{now}")
        hits = dict(decision.extra_headers).get("X-Relay-Rule-Hits", "none")
        return [received.encode(), f"X-Relay-Queue-ID: {queue_id}".encode(),
                f"X-Relay-Rule-Hits: {_clean_ids(hits)}".encode()]

    def notice_bytes(self, to: str, kind: str, subject: str, text: str, now: datetime) -> bytes:
        message = EmailMessage()
        message["From"] = f"policy-relay <{self.notice_from}>"
        message["To"] = to
        message["Subject"] = " ".join(subject.split())[:200]
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid(domain=sorted(self.directory.domains)[0])
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no replies, no loops
        message["X-Relay-Notice"] = kind
        message.set_content(text)
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        await self.flush_audit()
        await self.upstream.close()
        self.store.close()


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    generation: int
    pack: str
    rules: int
    problems: list[str]
    restart_needed: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "generation": self.generation, "pack": self.pack, "rules": self.rules,
                "problems": self.problems, "restart_needed": self.restart_needed}


HeaderEdit = tuple[str, int, bytes | None]  # name, 1-based occurrence (0: append), value (None: delete)


@dataclass(frozen=True)
class MilterOutcome:
    """What the milter answers at end of message: a 4xx/5xx reply, or discard (every recipient
    is taken care of by us), or accept with header edits, recipients removed and, when a warning
    part was put in front, the new body (what follows the blank line)."""

    reply: str | None = None
    discard: bool = False
    delete_rcpts: tuple[str, ...] = ()
    header_edits: tuple[HeaderEdit, ...] = ()
    body: bytes | None = None


def _clean_ids(text: str) -> str:
    return re.sub(r"[^a-z0-9(), -]", "", text)[:900]


class ServeError(Exception):
    """The relay cannot start (a port in use, a missing certificate): said plainly, no traceback."""


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _listeners(app: RelayApp, config: RelayConfig) -> list[asyncio.Server]:
    """The SMTP listener and the milter listener, whichever the config names."""
    loop = asyncio.get_running_loop()
    servers = []
    if config.listen is not None:
        try:
            server = await loop.create_server(lambda: RelaySMTP(app), config.listen.host, config.listen.port)
        except OSError as error:
            raise ServeError(f"cannot listen on {config.listen.host}:{config.listen.port}: {error.strerror}") from None
        servers.append(server)
        app.log.info("listening", host=config.listen.host, ports=[s.getsockname()[1] for s in server.sockets],
                     upstream=app.upstream.describe())
    if config.milter is not None:
        kind, where, port = config.milter.address()

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await MilterSession(app, reader, writer).run()

        try:
            if kind == "unix":
                with contextlib.suppress(FileNotFoundError):
                    if Path(where).is_socket():
                        Path(where).unlink()  # a stale socket from a previous run
                server = await asyncio.start_unix_server(session, where)
                os.chmod(where, int(config.milter.socket_mode, 8))
            else:
                server = await asyncio.start_server(session, where, port)
        except OSError as error:
            raise ServeError(f"cannot listen on milter {config.milter.listen}: {error.strerror}") from None
        servers.append(server)
        app.log.info("milter_listening", listen=config.milter.listen, upstream=app.upstream.describe())
        if kind == "inet" and not _is_loopback_host(where):
            # whoever reaches this port is believed about the SASL login ({auth_authen}): only the MTA may
            app.log.warning("milter_not_loopback", listen=config.milter.listen,
                            advice="bind to 127.0.0.1 or a unix socket, or firewall it to the MTA only")
    return servers


def _write_status(path: Path, result: ReloadResult) -> None:
    """What `relay reload` waits for: the outcome of the latest reload, written atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.as_json(), ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def reload_status_path(config: RelayConfig, config_path: str | Path) -> Path:
    return config.resolve(config_path, config.pid_file).with_suffix(".reload.json")


async def serve(config_path: str | Path, ready: asyncio.Event | None = None) -> None:
    """Run the relay until SIGTERM or SIGINT; finish sessions in flight, then stop. SIGHUP reloads."""
    config = load_config(config_path)
    logs.configure(config.log.level, config.log.format)
    clock = clock_from_env()
    try:
        app = RelayApp(config, Path(config_path), clock)
    except OSError as error:
        raise ServeError(f"cannot read {error.filename or 'a file the config names'}: "
                         f"{error.strerror or error}") from None
    except ssl.SSLError as error:
        raise ServeError(f"tls: the certificate or key is unusable ({error.reason or error})") from None
    except (StoreError, ValueError) as error:
        raise ServeError(str(error)) from None
    if isinstance(clock, FileClock):
        app.log.warning("test_clock", path=str(clock.path), now=clock.now().isoformat())
    loop = asyncio.get_running_loop()
    servers = await _listeners(app, config)
    if not servers:
        raise ServeError("nothing to listen on: set listen (SMTP) or milter.listen")
    admin = await _admin_listener(app, config)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, app.scheduler.wake)  # `relay queue` changed something
    if hasattr(app.store, "listen"):  # a shared store: a hold added or approved anywhere wakes us
        try:
            app.store.listen(lambda: loop.call_soon_threadsafe(app.scheduler.wake))
        except StoreError as error:
            raise ServeError(str(error)) from None
    status_path = reload_status_path(config, config_path)
    reloading = asyncio.Lock()

    async def reload() -> None:
        async with reloading:  # signals in a burst reload one after another, the last one wins
            systemd.reloading()
            result = await app.reload()
            with contextlib.suppress(OSError):
                _write_status(status_path, result)
            systemd.ready(f"rules generation {result.generation}")

    loop.add_signal_handler(signal.SIGHUP, lambda: app.spawn(reload()))
    pid_file = config.resolve(config_path, config.pid_file)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    with contextlib.suppress(OSError):
        _write_status(status_path, ReloadResult(True, 1, app.pack.pack, len(app.pack.rules), [], []))
    # With the test clock, time may jump at any moment: the scheduler looks again every 0.1 s.
    poll = 0.1 if isinstance(clock, FileClock) else None
    scheduler = loop.create_task(app.scheduler.run(poll))
    auditor = loop.create_task(app.audit_loop(stop))
    if admin is not None:
        admin[0].ready = True
    systemd.ready("accepting mail")
    if ready is not None:
        ready.set()
    await stop.wait()
    systemd.stopping()
    app.log.info("stopping", active=app.active)
    for server in servers:
        server.close()
    for _ in range(100):
        if app.active == 0:
            break
        await asyncio.sleep(0.1)
    if admin is not None:
        await admin[1].cleanup()
    app.scheduler.stop()
    await asyncio.wait([scheduler, auditor], timeout=30)
    await app.close()
    with contextlib.suppress(OSError):
        pid_file.unlink()
    app.log.info("stopped")


async def _admin_listener(app: RelayApp, config: RelayConfig) -> tuple[AdminSite, web.AppRunner] | None:
    """The admin pages, /metrics and health checks, when the config has an `admin` section."""
    if config.admin is None or app.link_key is None:
        return None
    host, port = config.admin.address()
    site = AdminSite(app, app.link_key)
    try:
        runner = await start_admin(site, host, port)
    except OSError as error:
        raise ServeError(f"cannot listen on admin {config.admin.listen}: {error.strerror}") from None
    app.log.info("admin_listening", listen=config.admin.listen, url=config.admin.base_url(),
                 accounts=len(config.admin.accounts))
    if not _is_loopback_host(host):
        app.log.warning("admin_not_loopback", listen=config.admin.listen,
                        advice="put it behind a TLS proxy, or bind to 127.0.0.1")
    return site, runner
