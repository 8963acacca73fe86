"""One disposition path: what happens to a decided message is written here, once.

A front-end hands the `Disposer` a submitted message (envelope, bytes, session facts) and gets
back one typed `Disposition`; it only translates that into its protocol (relay.frontends.replies).
The Disposer decides (the policy engine), logs and audits the decision, rewrites the message
(own headers out, hidden addresses, banner or subject tag, trace headers), stores held copies
durably before anything is answered, delivers (when the relay itself sends the message on: the
SMTP front-end) or says which recipients the MTA must leave out (the milter), sends the split
copies, and queues the notices. Released holds (the scheduler) and moderators' actions (the admin
pages) go through the same object, so a refusal by the next hop is told with the same notice
whether it happens at DATA time or when a held copy is released.

Replies are typed: a `Reject` only carries a 5xx, a `Tempfail` only a 4xx (checked when built,
enhanced status class included), so no path can answer 250 for a refusal or 5xx for a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from relay import holds, hosted, logs, moderation, notices, rewrite
from relay.addresses import AddressError
from relay.auth import Credentials
from relay.checks import DnsChecks, DnsFailure
from relay.clock import Clock
from relay.config import RelayConfig
from relay.directory import FileDirectory, address_key
from relay.message import DnsFacts, Envelope, Submission, parse_message
from relay.metrics import Metrics
from relay.policy import automatic
from relay.policy.engine import envelope_notices, envelope_refusing, evaluate, refusal_reply
from relay.policy.pack import Pack
from relay.policy.verdicts import Decision, Finding, Notice, SmtpReply, Verdict
from relay.store import AuditEntry, Hold, NewHold, OutboxNotice, SocialAccount, Store, StoreError, TraceEvent
from relay.upstream import Reply, Transaction, Upstream
from relay.web import links

_AUTH_SENDER = re.compile(rb"\(Authenticated sender: ([^)\s]+)\)")
_STATUS = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}(?: |$)")
INLINE_DECIDE = 64 * 1024  # smaller messages are decided on the event loop, larger in a worker thread

HeaderEdit = tuple[str, int, bytes | None]  # name, 1-based occurrence (0: append), value (None: delete)


# -- what a message comes to ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Refusal:
    code: int
    text: str  # the enhanced status code (RFC 3463) and the words, one line

    CLASS = 0

    def __post_init__(self) -> None:
        if self.code // 100 != self.CLASS:
            raise ValueError(f"{type(self).__name__} needs a {self.CLASS}xx code, not {self.code}")
        status = _STATUS.match(self.text)
        if status and int(status.group(1)) != self.CLASS:
            raise ValueError(f"{type(self).__name__} {self.code} with status {self.text.split()[0]}")
        if "\r" in self.text or "\n" in self.text:
            raise ValueError("a reply is one line")

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class Reject(_Refusal):
    """A permanent refusal: 5xx only."""

    CLASS = 5


@dataclass(frozen=True)
class Tempfail(_Refusal):
    """A temporary refusal, the client retries: 4xx only."""

    CLASS = 4


Refusal = Reject | Tempfail


@dataclass(frozen=True)
class Accept:
    """The message goes on. Through the SMTP front-end it has been delivered upstream already;
    through the milter the MTA delivers it with these header edits, without the `removed`
    recipients (held here, their copy fsynced) and, when a warning part was put in front, with
    `body` (what follows the blank line) in place of its own."""

    queue_id: str
    header_edits: tuple[HeaderEdit, ...] = ()
    removed: tuple[str, ...] = ()
    body: bytes | None = None
    held: int = 0  # recipients held here
    hold_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Held:
    """Every recipient is held here (the copies are fsynced); nothing goes on now."""

    queue_id: str
    held: int
    hold_ids: tuple[str, ...]


@dataclass(frozen=True)
class Discard:
    """Every recipient was taken care of another way (one copy per recipient went out): the
    message as submitted goes no further."""

    queue_id: str
    reason: str = "split"


Disposition = Accept | Held | Discard | Reject | Tempfail

BAD_ADDRESS = Reject(550, "5.1.7 Bad address syntax")
"""A mailbox in the envelope our parser cannot read, found at end of data. 550, not 501: RFC 5321
§4.3.2 lists 550/554 among the replies to the end of DATA and 501 (a syntax error in a command's
arguments) only for commands with arguments; DATA has none, and a milter's end-of-message reply
is the same reply. 5.1.7 (RFC 3463: bad sender's mailbox address syntax) names the problem."""
NO_TRANSACTION = Reject(503, "5.5.1 Bad sequence of commands")
STORE_UNAVAILABLE = Tempfail(451, "4.3.0 The hold store is unavailable; try again later")
UPSTREAM_FAILURE = Tempfail(451, "4.4.1 Upstream failure")


def refusal(line: str) -> Refusal:
    """A 4xx/5xx reply line as its type; anything else is a fault of ours: 451."""
    code, _, text = line.partition(" ")
    if code.isdigit() and code[0] in "45":
        status = _STATUS.match(text)
        if status and status.group(1) != code[0]:
            text = text[len(status.group(0)):]  # a status of the wrong class is dropped, not believed
        return (Reject if code[0] == "5" else Tempfail)(int(code), text)
    return UPSTREAM_FAILURE


def from_reply(reply: Reply | SmtpReply) -> Refusal:
    return refusal(str(reply))


# -- what a front-end hands over ------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """What a reload replaces in one step: a decision reads this once, so it never mixes the pack
    of one generation with the directory of another."""

    pack: Pack
    directory: FileDirectory
    credentials: Credentials | None
    tls_context: ssl.SSLContext | None
    generation: int = 1


@dataclass(frozen=True)
class Submitted:
    """A message at end of data, with the facts of its session."""

    queue_id: str
    mail_from: str
    rcpts: tuple[str, ...]
    content: bytes
    login: str | None
    client_ip: str
    helo: str
    tls: bool = False
    trusted_hop: bool = False  # a Postfix in front of us: its Received header names the login
    hosted: str | None = None  # the trust.hosted service this client was verified as (relay/hosted.py)


@dataclass(frozen=True)
class WeDeliver:
    """The relay sends the message on itself, in this upstream transaction (the SMTP front-end,
    which relayed MAIL and every RCPT as they came)."""

    txn: Transaction


@dataclass(frozen=True)
class MtaDelivers:
    """The MTA keeps the message and delivers it (the milter); `replace_body`: it lets us."""

    replace_body: bool = True


@dataclass(frozen=True)
class Released:
    """What the next hop said to a released held copy, per recipient."""

    accepted: tuple[str, ...]
    later: tuple[tuple[str, Reply], ...]  # temporary refusals: tried again
    refused: tuple[tuple[str, Reply], ...]  # permanent refusals: the sender is told
    data: Reply | None


def login_from_trace(content: bytes) -> str | None:
    """The SASL login a trusted Postfix recorded (smtpd_sasl_authenticated_header = yes) in the
    topmost Received header, the one it wrote itself; deeper ones could be forged by the client."""
    fields, _ = rewrite.split_head(content)
    first = next((f for f in fields if f[:9].lower() == b"received:"), None)
    match = _AUTH_SENDER.search(first) if first else None
    return match.group(1).decode("utf-8", "replace") if match else None


def clean_token(value: str, limit: int = 255) -> str:
    """A client-supplied token safe to write into a header (CVE-2026-1299: no header injection)."""
    return re.sub(r"[^A-Za-z0-9.:\[\]_-]", "", value)[:limit] or "unknown"


def audit_why(finding: Finding) -> tuple[str, ...]:
    """The audit trail's fourth item for a finding: why it fired. A text rule's terms and scores;
    otherwise the facts the rule read (`detail`: an SPF result and its exp= text, a login), one line."""
    if finding.why is not None:
        return (finding.why.line(),)
    if finding.detail:
        return (notices.one_line("; ".join(f"{k}={v}" for k, v in finding.detail))[:500],)
    return ()


def _clean_ids(text: str) -> str:
    return re.sub(r"[^a-z0-9(), -]", "", text)[:900]


class Disposer:
    """Decides and disposes of every message, whichever front-end or release brought it."""

    def __init__(self, config: RelayConfig, rules: Rules, clock: Clock, store: Store, upstream: Upstream, *,
                 metrics: Metrics | None = None, dns: DnsChecks | None = None, link_key: bytes | None = None,
                 log: Any = None, loop_key: bytes | None = None) -> None:
        self.config, self.rules, self.clock, self.store, self.upstream = config, rules, clock, store, upstream
        self.metrics = metrics or Metrics()
        self.dns = dns
        self.link_key = link_key
        self.loop_key = loop_key  # trust.loop_guard's HMAC key; None: nothing stamped, no stamp believed
        self.log = log or logs.get("relay").bind(pack=rules.pack.pack)
        self.wake: Callable[[], None] = lambda: None  # the scheduler's: a hold or a notice to send
        self._active = 0  # sessions open, all front-ends
        self.tasks: set[asyncio.Task[Any]] = set()
        self.audit_buffer: list[AuditEntry] = []
        self.trace_buffer: list[TraceEvent] = []  # stored with the audit entries (relay trace)
        self.unrecorded_holds: dict[str, Any] = {}  # the scheduler's: outcomes the store refused (/readyz)
        self.audit_added = 0  # entries ever buffered
        self.audit_stored = 0  # of those, how many are committed (in order)
        self.audit_lock = asyncio.Lock()  # one commit at a time; the others wait and share the next

    @property
    def active(self) -> int:
        return self._active

    @active.setter
    def active(self, count: int) -> None:  # relay_smtp_sessions (a gauge file under workers: N)
        self._active = count
        self.metrics.sessions.set(count)

    @property
    def pack(self) -> Pack:
        return self.rules.pack

    @property
    def directory(self) -> FileDirectory:
        return self.rules.directory

    @property
    def zone(self) -> ZoneInfo:
        """The institution's zone: times shown to people."""
        try:
            return ZoneInfo(self.directory.timezone)
        except (KeyError, ValueError):
            return ZoneInfo("UTC")

    @property
    def notice_from(self) -> str:
        return f"postmaster@{sorted(self.directory.domains)[0]}"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- RCPT time ------------------------------------------------------------------------------

    async def rcpt(self, mail_from: str, rcpts: list[str], rcpt: str, login: str | None, client_ip: str,
                   trusted_hop: bool = False, queue_id: str = "", notify: bool = True) -> Refusal | None:
        """A refusal for this recipient when an envelope-only rule refuses it, else None; a refusal
        is logged and goes to the audit trail like any decision, and (with `notify`: the front-end's
        first refusal in a transaction) our own sender gets a notice."""
        if trusted_hop:
            # The trusted Postfix in front applied its relay restrictions, and the sender's login
            # only arrives with the message (its Received header): everything is decided at DATA.
            return None
        try:
            envelope = Envelope.build(mail_from, rcpts, login, client_ip)
        except AddressError:
            return Reject(501, "5.1.3 Bad recipient address syntax")  # RCPT has arguments: 501
        rules = self.rules
        if self.dns is not None:
            try:
                domains = await self.dns.recipient_domains(envelope, rules.directory, only=rcpt)
            except DnsFailure as failure:
                self.log.warning("dns_failed", rcpt=rcpt, what=failure.what)
                return refusal(failure.reply)
            envelope = replace(envelope, facts=DnsFacts(mail_domains=domains))
        finding = envelope_refusing(envelope, rcpt, rules.pack, rules.directory, self.clock.now())
        if finding is None:
            return None
        reply = from_reply(refusal_reply(finding))
        queue_id = queue_id or secrets.token_hex(6).upper()
        self.log.info("rcpt_refused", queue_id=queue_id, rcpt=rcpt, reply=str(reply), login=envelope.auth,
                      client_ip=client_ip, audit=[{"rule": finding.rule_id, "cites": finding.cites,
                                                   "action": finding.action.value}])
        self.add_audit(AuditEntry(
            self.clock.now(), queue_id, "reject", str(reply), envelope.mail_from, 1, envelope.auth, client_ip,
            ((finding.rule_id, finding.cites, finding.action.value),), rcpt_to=(rcpt,)))
        if notify:
            found = envelope_notices(envelope, finding, rcpt, rules.pack, rules.directory, self.clock.now())
            if found:
                self.spawn(self.notify(found, self.log.bind(queue_id=queue_id)))
        await self.commit_audit()
        return reply

    # -- end of data ----------------------------------------------------------------------------

    async def dispose(self, m: Submitted, via: WeDeliver | MtaDelivers) -> Disposition:
        """What to answer for a message, once its decision is in the audit trail (committed and
        fsynced before the front-end says anything: the trail is the institution's evidence)."""
        disposition = await self._dispose(m, via)
        await self.commit_audit()
        return disposition

    async def _dispose(self, m: Submitted, via: WeDeliver | MtaDelivers) -> Disposition:
        """The one path from a submitted message to its disposition."""
        ours = via.txn if isinstance(via, WeDeliver) else None
        log = self.log.bind(queue_id=m.queue_id) if ours else self.log.bind(queue_id=m.queue_id, frontend="milter")
        guard = self.config.trust.loop_guard
        if guard and self.loop_key and m.hosted:
            check = hosted.check_stamp(rewrite.split_head(m.content)[0], self.loop_key, guard.header,
                                       self.clock.now().timestamp(), guard.max_age, message_id(m.content))
            if check.valid:
                return await self.loop_pass(m, ours, check, log)
            if check.why != "no stamp":
                log.warning("loop_guard_invalid", why=check.why, stamp_queue_id=check.queue_id or None)
        login = m.login if m.login is not None or not m.trusted_hop else login_from_trace(m.content)
        try:
            envelope = Envelope.build(m.mail_from, list(m.rcpts), login, m.client_ip, m.helo)
        except AddressError:
            return await _aborted(ours, BAD_ADDRESS)
        if limited := await self.rate_refusal(m.queue_id, envelope, log):
            return await _aborted(ours, limited)
        try:
            envelope = await self.with_facts(m.queue_id, envelope, m.content, log)
        except DnsFailure as failure:
            return await _aborted(ours, refusal(failure.reply))
        decision, subject = await self.decide_logged(m.queue_id, envelope, m.content, log)
        if decision.verdict in (Verdict.REJECT, Verdict.TEMPFAIL):
            await self.notify(decision.notices, log)
            return await _aborted(ours, from_reply(decision.reply))
        before, rest = rewrite.split_head(m.content)
        fields = rewrite.drop_own_headers(before)
        if guard:  # a stamp that did not pass above counts for nothing: out (ours is added on delivery)
            fields = hosted.without_stamp(fields, guard.header)
        change = decision.rewrite
        if change and change.hide:
            fields = rewrite.hide_addresses(fields, change.hide)
        body = None
        if change and change.banner and (ours or (isinstance(via, MtaDelivers) and via.replace_body)):
            fields, rest = rewrite.add_banner(fields, rest, change.banner, change.subject_tag)
            body = rest[2:]  # after the blank line
        elif change and change.subject_tag:  # no banner, or an MTA that cannot replace bodies: the tag only
            fields = rewrite.tag_subject(fields, change.subject_tag)
        trace = self.trace_headers(m.queue_id, m.helo, m.client_ip, login, m.tls, decision)
        edits = () if ours else self.milter_edits(before, fields, trace)
        if decision.verdict in holds.HELD:
            return await self.hold(m, ours, decision, login, rewrite.join(trace + fields, rest), subject, edits,
                                   body, log)
        if change and change.split:
            if ours:
                await ours.abort()
            reply = await self.deliver_split(m.mail_from, list(m.rcpts), trace, fields, rest, log, login, subject,
                                             m.queue_id)
            log.info("upstream_reply", code=reply.code, text=reply.text[:200], upstream=self.upstream.describe())
            self.trace_reply(m.queue_id, reply, len(m.rcpts))
            if not reply.ok:
                return from_reply(reply)
            await self.notify(decision.notices, log)
            return Discard(m.queue_id)  # every copy went out separately
        if ours:
            reply = await ours.data(self.stamp(rewrite.join(trace + fields, rest), m.queue_id))
            log.info("upstream_reply", code=reply.code, text=reply.text[:200], upstream=self.upstream.describe())
            self.trace_reply(m.queue_id, reply, len(m.rcpts))
            if not reply.ok:
                return from_reply(reply)
            await self.notify(decision.notices, log)
            return Accept(m.queue_id)
        await self.notify(decision.notices, log)
        self.trace(m.queue_id, "accepted", f"{len(m.rcpts)} recipient(s) handed back to the MTA (milter)")
        return Accept(m.queue_id, header_edits=edits, body=body)

    def stamp(self, content: bytes, queue_id: str) -> bytes:
        """What the relay delivers, with its loop-guard stamp (trust.loop_guard; else unchanged).
        Every delivery passes here: at DATA time, split copies, released holds, notices."""
        guard = self.config.trust.loop_guard
        if guard is None or self.loop_key is None:
            return content
        qid = re.sub(r"[^A-Za-z0-9]", "", queue_id)[:40] or "0"
        return hosted.stamped(content, self.loop_key, guard.header, qid, int(self.clock.now().timestamp()),
                              message_id(content), secrets.token_hex(4))

    async def loop_pass(self, m: Submitted, ours: Transaction | None, check: hosted.StampCheck,
                        log: Any) -> Disposition:
        """A message this relay delivered, back from the trusted hosted hop with its valid stamp
        (the routing rule's exception missing or not yet applied): passed on once, byte for byte —
        its policy was applied the first time; no rules, no second stamp, no notices. A second
        arrival of the same stamp is a loop: refused."""
        assert self.config.trust.loop_guard is not None
        guard = self.config.trust.loop_guard
        now = self.clock.now()
        what = f"{guard.header} q={check.queue_id} t={check.stamped_at} n={check.nonce}"
        try:
            first = await asyncio.to_thread(self.store.take_once, check.key, now, guard.max_age + hosted.FUTURE_SKEW)
        except StoreError as error:
            log.error("loop_guard_store_failed", error=str(error)[:200])
            return await _aborted(ours, STORE_UNAVAILABLE)
        log.info("loop_guard", stamp_queue_id=check.queue_id, stamped_at=check.stamped_at, first=first,
                 service=m.hosted, recipients=len(m.rcpts))
        entry = partial_audit(now, m, message_id(m.content))
        if not first:
            loop = Reject(554, f"5.4.6 Routing loop detected: {what} seen before")
            self.add_audit(replace(entry, verdict="reject", reply=str(loop),
                                   rules=(("loop-guard", what, "reject"),)))
            return await _aborted(ours, loop)
        self.add_audit(replace(entry, verdict="deliver", reply="250 2.0.0 passed through once (loop guard)",
                               rules=(("loop-guard", what, "pass"),)))
        await self.commit_audit()
        if not ours:
            self.trace(m.queue_id, "accepted", f"{len(m.rcpts)} recipient(s) handed back to the MTA (loop guard)")
            return Accept(m.queue_id)
        reply = await ours.data(m.content)
        log.info("upstream_reply", code=reply.code, text=reply.text[:200], upstream=self.upstream.describe())
        self.trace_reply(m.queue_id, reply, len(m.rcpts))
        if not reply.ok:  # not passed: the client's retry may pass it
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.store.give_back, check.key)
            return from_reply(reply)
        return Accept(m.queue_id)

    async def hold(self, m: Submitted, ours: Transaction | None, decision: Decision, login: str | None,
                   content: bytes, subject: str, edits: tuple[HeaderEdit, ...], body: bytes | None,
                   log: Any) -> Disposition:
        """Store the held copies durably (fsync) first; then the other recipients go on: delivered
        now by us (a failure removes the stored copies and the client retries the whole message)
        or left to the MTA."""
        if ours:
            await ours.abort()  # the upstream transaction named every recipient; start afresh
        planned = holds.plan(decision, m.queue_id, m.mail_from, content, subject, decision.notice_to)
        try:
            ids = await asyncio.to_thread(self.store.add_holds, planned, self.clock.now())
        except StoreError as error:
            log.error("hold_store_failed", error=str(error)[:200])
            return STORE_UNAVAILABLE
        now_rcpts = holds.deliver_now(decision)
        if ours and now_rcpts:
            reply = await self.deliver_to(m.mail_from, now_rcpts, self.stamp(content, m.queue_id))
            log.info("upstream_reply", code=reply.code, text=reply.text[:200], upstream=self.upstream.describe(),
                     recipients=len(now_rcpts))
            self.trace_reply(m.queue_id, reply, len(now_rcpts))
            if not reply.ok:
                try:
                    await asyncio.to_thread(self.store.remove, ids)
                except StoreError as error:  # the copies stay held; the retry may hold them twice
                    log.error("hold_undo_failed", error=str(error)[:200], holds=ids)
                return from_reply(reply)
        held_keys = {address_key(r) for h in planned for r in h.recipients}
        log.info("held", holds=ids, reasons=[h.reason for h in planned],
                 deliver_at=[h.deliver_at.isoformat() if h.deliver_at else None for h in planned],
                 held_recipients=len(held_keys), delivered_now=len(now_rcpts))
        await self.notify(self.with_links(decision.notices, planned, ids), log)
        self.wake()
        if not now_rcpts:
            return Held(m.queue_id, len(held_keys), tuple(ids))
        removed = () if ours else tuple(r for r in m.rcpts if address_key(r) in held_keys)
        if not ours:
            self.trace(m.queue_id, "accepted", f"{len(now_rcpts)} recipient(s) handed back to the MTA (milter)")
        return Accept(m.queue_id, header_edits=edits, removed=removed, body=body if not ours else None,
                      held=len(held_keys), hold_ids=tuple(ids))

    # -- steps ------------------------------------------------------------------------------------

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
                                      (("dns-unavailable", "dns.on_failure: tempfail", "tempfail"),),
                                      rcpt_to=tuple(envelope.rcpt_to)))
            raise

    async def rate_refusal(self, queue_id: str, envelope: Envelope, log: Any) -> Tempfail | None:
        """A 450 when one of our senders passes a configured sending rate (recipients per window,
        counted in the shared store), else None. Outside senders are not counted here."""
        sender = envelope.auth or (envelope.mail_from if self.directory.is_local(envelope.mail_from) else "")
        if not self.config.rate_limits or not sender:
            return None
        now = self.clock.now()
        # one counter per window length, all taken or none: a message refused by one limit does
        # not count against the others it passed
        limits = self.config.rate_limits
        takes = [(f"sender:{sender.casefold()}:{limit.window:g}",
                  datetime.fromtimestamp(now.timestamp() // limit.window * limit.window, UTC), limit.limit)
                 for limit in limits]
        try:
            refused = await asyncio.to_thread(self.store.rate_take_all, takes, len(envelope.rcpt_to))
        except StoreError as error:
            log.error("rate_store_failed", error=str(error)[:200])
            return None  # a counter we cannot read never stops mail
        if refused is None:
            return None
        limit = limits[refused]
        hours = limit.window / 3600
        reply = Tempfail(450, f"4.7.1 [rate-limit] Supera el limite de {limit.limit} destinatarios por "
                              f"{hours:g} hora(s) para {sender[:100]}; intente mas tarde (protege a la "
                              "entidad de listas de spam)")
        log.warning("rate_limited", sender=sender, window=limit.window, limit=limit.limit,
                    recipients=len(envelope.rcpt_to))
        self.add_audit(AuditEntry(now, queue_id, "tempfail", str(reply), envelope.mail_from,
                                  len(envelope.rcpt_to), envelope.auth, envelope.client_ip,
                                  (("rate-limit", f"rate_limits: {limit.limit} per {limit.window} s",
                                    "tempfail"),), rcpt_to=tuple(envelope.rcpt_to)))
        return reply

    def decide(self, envelope: Envelope, content: bytes) -> tuple[Decision, str]:
        """Parse and decide (run in a worker thread so a large message does not block the loop);
        the decision and the message's subject."""
        message = parse_message(content)
        rules = self.rules
        return evaluate(Submission(envelope, message), rules.pack, rules.directory, self.clock.now()), message.subject

    async def decide_logged(self, queue_id: str, envelope: Envelope, content: bytes,
                            log: Any) -> tuple[Decision, str]:
        """Decide (in a worker thread when large), then log the decision, buffer it for the audit
        trail and record social-network accounts."""
        if len(content) <= INLINE_DECIDE:
            decision, subject = self.decide(envelope, content)  # ~0.3 ms: cheaper than a thread hop
        else:
            decision, subject = await asyncio.to_thread(self.decide, envelope, content)
        log.info("decision", verdict=decision.verdict.value, reply=str(decision.reply),
                 hits=[f.rule_id for f in decision.findings], monitored=[f.rule_id for f in decision.monitored],
                 misses=list(decision.misses), recipients=len(envelope.rcpt_to), size=len(content),
                 login=envelope.auth, client_ip=envelope.client_ip, defects=len(decision.defects),
                 audit=[{"rule": f.rule_id, "cites": f.cites, "action": f.action.value} for f in decision.findings],
                 why={f.rule_id: f.why.line() for f in decision.findings + decision.monitored if f.why})
        self.audit(queue_id, envelope, decision, subject, message_id(content))
        await self.commit_audit()  # durable before the message goes anywhere (upstream, hold store)
        await self.record(decision, log)
        return decision, subject

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

    async def deliver_split(self, mail_from: str, rcpts: list[str], trace: list[bytes], fields: list[bytes],
                            rest: bytes, log: Any, login: str | None = None, subject: str = "",
                            queue_id: str = "") -> Reply:
        """One transaction per recipient, each copy showing only its own address.

        One reply answers for all recipients, so: a temporary failure of any copy makes the client
        retry the whole message (copies already delivered may then arrive twice: a duplicate beats
        a loss); a permanent failure of the first copy refuses the message; a permanent failure
        after other copies went out is answered 250 and told to the (staff) sender."""
        delivered: list[str] = []
        failed: list[tuple[str, Reply]] = []
        for rcpt in rcpts:
            txn = self.upstream.transaction()
            await txn.mail(mail_from)
            reply = await txn.rcpt(rcpt)
            if reply.ok:
                reply = await txn.data(self.stamp(rewrite.join(trace + rewrite.set_to(fields, rcpt), rest), queue_id))
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
        if failed and (to := self.local_sender(mail_from, login)):
            await self.notify((notices.undelivered(to, subject, failed),), log)
        return Reply(250, f"2.0.0 Ok: {len(delivered)} copies")

    @staticmethod
    def milter_edits(before: list[bytes], after: list[bytes], trace: list[bytes]) -> tuple[HeaderEdit, ...]:
        """Header edits for the MTA: forged X-Relay-* out, hidden addresses out, our X-Relay-* in
        (the MTA writes its own Received header, so ours is not added)."""
        ours = [t for t in trace if t[:8].lower() == b"x-relay-"]
        return tuple(rewrite.header_edits(before, after + ours))

    def trace_headers(self, queue_id: str, helo: str, client_ip: str, login: str | None, tls: bool,
                      decision: Decision) -> list[bytes]:
        protocol = "ESMTP" + ("S" if tls else "") + ("A" if login else "")
        now = format_datetime(self.clock.now())
        received = (f"Received: from {clean_token(helo)} ([{clean_token(client_ip, 64)}])\r\n"
                    f"\tby {clean_token(self.config.hostname)} (policy-relay) with {protocol} id {queue_id};"
                    f"\r\n\t{now}")
        hits = dict(decision.extra_headers).get("X-Relay-Rule-Hits", "none")
        return [received.encode(), f"X-Relay-Queue-ID: {queue_id}".encode(),
                f"X-Relay-Rule-Hits: {_clean_ids(hits)}".encode()]

    def local_sender(self, mail_from: str, login: str | None) -> str | None:
        """Our own sender, who may be told about the message (no backscatter to outsiders): the
        login — the person who tried — before an address they only claimed."""
        return next((a for a in (login or "", mail_from) if a and self.directory.is_local(a)), None)

    # -- notices ----------------------------------------------------------------------------------

    def moderation_link(self, hold_id: str, action: str, moderator: str) -> str:
        """A signed one-click link for a moderation notice (admin listener on)."""
        assert self.config.admin is not None and self.link_key is not None
        ttl = self.config.admin.link_ttl
        if action == "withdraw":  # the sender's link lasts as long as the message may wait
            ttl = max(ttl, self.pack.moderation.expire_after_days * 86400.0)
        expires = int(self.clock.now().timestamp() + ttl)
        token = links.sign(self.link_key, links.LinkClaim(hold_id, action, moderator, expires))
        return f"{self.config.admin.base_url()}/{'w' if action == 'withdraw' else 'm'}/{token}"

    def with_links(self, found: tuple[Notice, ...], planned: list[NewHold], ids: list[str]) -> tuple[Notice, ...]:
        return holds.with_hold_ids(found, planned, ids,
                                   self.moderation_link if self.link_key and self.config.admin else None)

    async def notify(self, found: tuple[Notice, ...], log: Any) -> None:
        """Queue notices in the durable outbox; the scheduler sends them through the upstream.
        Every notice passes here. The engine already dropped responses about automatic mail (the
        RFC 3834 gate, policy/automatic.py: `Decision.notices`, `Decision.notice_to`); here no
        response goes to a system address, and an auto-reply goes at most once per sender and rule
        per `auto_reply_grace_period`, recorded in the store (a restart does not reset it)."""
        found = tuple(n for n in found if n.kind not in automatic.RESPONSE_KINDS
                      or not automatic.is_system_address(n.to))
        grace = self.config.auto_reply_grace_period
        if grace and any(n.kind == "auto-reply" for n in found):
            kept = []
            for n in found:
                if n.kind == "auto-reply" and not await asyncio.to_thread(
                        self.store.take_once, automatic.grace_key(n), self.clock.now(), grace):
                    log.info("auto_reply_suppressed", to=n.to, rules=list(n.rule_ids), why="grace period")
                    continue
                kept.append(n)
            found = tuple(kept)
        if not found:
            return
        try:
            await asyncio.to_thread(self.store.add_notices,
                                    [(n.to, n.kind, n.subject, n.text, n.attach) for n in found], self.clock.now())
        except StoreError as error:
            log.error("notice_not_stored", error=str(error)[:200], count=len(found))
            return
        queue_id = _bound_queue_id(log)
        for n in found:
            self.trace(queue_id, "notice", f"{n.kind} to {n.to}: {n.subject}")
        self.wake()

    def queue_notice(self, notice: Notice, log: Any, queue_id: str = "") -> None:
        """`notify` for blocking callers (the scheduler's own notices, from its loop); a notice about
        a message (`queue_id`) is told in its trace."""
        try:
            now = self.clock.now()
            self.store.add_notices([(notice.to, notice.kind, notice.subject, notice.text)], now)
            if queue_id:
                self.store.add_audit([], trace=[TraceEvent(queue_id, now, "notice",
                                                           f"{notice.kind} to {notice.to}: {notice.subject}")])
        except StoreError as error:
            log.error("notice_not_stored", to=notice.to, error=str(error)[:200])
        self.wake()

    def notice_bytes(self, to: str, kind: str, subject: str, text: str, now: datetime,
                     original: bytes | None = None) -> bytes:
        return notices.notice_bytes(self.notice_from, sorted(self.directory.domains)[0], to, kind, subject, text,
                                    now, original)

    async def send_notice(self, notice: OutboxNotice, now: datetime) -> Reply:
        """One notice from the outbox through the upstream, from the null sender (a notice never
        bounces back: RFC 3834 §3.1.5)."""
        txn = self.upstream.transaction()
        await txn.mail("")
        reply = await txn.rcpt(notice.to)
        if reply.ok:
            original = await asyncio.to_thread(self.store.hold_content, notice.attach) if notice.attach else None
            reply = await txn.data(self.stamp(self.notice_bytes(notice.to, notice.kind, notice.subject, notice.text,
                                                                now, original), f"N{notice.id}"))
        else:
            await txn.abort()
        return reply

    # -- held copies and moderators ---------------------------------------------------------------

    async def release(self, hold: Hold, content: bytes, log: Any) -> Released:
        """A released (due or approved) held copy goes on through the upstream; recipients the
        next hop refuses for good are told to our sender with the same notice as at DATA time."""
        txn = self.upstream.transaction()
        await txn.mail(hold.mail_from)
        accepted: list[str] = []
        later: list[tuple[str, Reply]] = []
        refused: list[tuple[str, Reply]] = []
        for rcpt in hold.recipients:
            reply = await txn.rcpt(rcpt)
            if reply.ok:
                accepted.append(rcpt)
            elif reply.temporary:
                later.append((rcpt, reply))
            else:
                refused.append((rcpt, reply))
        data: Reply | None = None
        if accepted:
            data = await txn.data(self.stamp(content, hold.queue_id))  # stamped now: fresh for its max_age
            if not data.ok:
                target = later if data.temporary else refused
                target.extend((r, data) for r in accepted)
                accepted = []
        else:
            await txn.abort()
        if refused and hold.sender_notice_to:
            self.queue_notice(notices.undelivered(hold.sender_notice_to, hold.subject, refused), log, hold.queue_id)
        return Released(tuple(accepted), tuple(later), tuple(refused), data)

    async def moderate(self, hold_id: str, action: str, by: str, reason: str = "") -> Hold:
        """A moderator's action (approve, reject, release, delete) on a held copy; an approved or
        released copy is then delivered by the scheduler through `release`. KeyError/ValueError
        as relay.moderation.act."""
        hold = await asyncio.to_thread(moderation.act, self.store, hold_id, action, by, self.clock.now(), reason,
                                       self.zone, self.pack.notices)
        self.log.info("moderated", hold=hold.id, queue_id=hold.queue_id, action=action, by=by,
                      state=hold.state.value)
        self.wake()
        return hold

    # -- the audit trail --------------------------------------------------------------------------

    def audit(self, queue_id: str, envelope: Envelope, decision: Decision, subject: str = "",
              message_id: str = "") -> None:
        """Buffer the decision for the audit trail (flushed in batches by `flush_audit`)."""
        self.add_audit(AuditEntry(
            self.clock.now(), queue_id, decision.verdict.value, str(decision.reply), envelope.mail_from,
            len(envelope.rcpt_to), envelope.auth, envelope.client_ip,
            tuple((f.rule_id, f.cites, f.action.value, *audit_why(f)) for f in decision.findings),
            tuple(f.rule_id for f in decision.monitored), tuple(envelope.rcpt_to), subject, message_id,
            tuple((r.kind, r.data) for r in decision.records if r.kind in AUDITED_RECORDS)))

    def trace(self, queue_id: str, event: str, detail: str) -> None:
        """What happened after the decision (relay trace): stored with the next audit commit."""
        if queue_id:
            self.trace_buffer.append(TraceEvent(queue_id, self.clock.now(), event, detail))
            self.audit_added += 1

    def trace_reply(self, queue_id: str, reply: Reply, recipients: int) -> None:
        self.trace(queue_id, "delivered" if reply.ok else "upstream_refused",
                   f"{recipients} recipient(s): {reply.code} {reply.text[:300]}")

    def add_audit(self, entry: AuditEntry) -> None:
        """One decision: counted in the metrics and buffered for the audit trail, together."""
        self.metrics.decision(entry)
        self.audit_buffer.append(entry)
        self.audit_added += 1

    async def commit_audit(self) -> bool:
        """Group commit: return once every entry buffered so far is stored (one transaction, one
        fsync for all the sessions that wait together: while one commit runs, the entries of the
        others gather for the next). False when the store cannot write: the entries stay buffered
        (retried by `audit_loop`) and `audit_not_stored` is logged; the message's own outcome
        stands (it may already be delivered: answering 4xx now would only duplicate it)."""
        target = self.audit_added
        while self.audit_stored < target:
            async with self.audit_lock:
                if self.audit_stored >= target:
                    break
                if not await self.flush_audit():
                    return False
        return True

    async def flush_audit(self) -> bool:
        batch, self.audit_buffer = self.audit_buffer, []
        events, self.trace_buffer = self.trace_buffer, []
        upto = self.audit_added
        if not batch and not events:
            self.audit_stored = upto
            return True
        try:
            if events:
                await asyncio.to_thread(self.store.add_audit, batch, events)
            else:
                await asyncio.to_thread(self.store.add_audit, batch)
        except StoreError as error:
            self.log.error("audit_not_stored", error=str(error)[:200], count=len(batch))
            self.audit_buffer[:0] = batch[-10000:]  # try again later, bounded
            self.trace_buffer[:0] = events[-10000:]
            return False
        self.audit_stored = upto
        return True

    async def audit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            async with self.audit_lock:
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

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        await self.flush_audit()
        await self.upstream.close()
        self.store.close()


def partial_audit(at: datetime, m: Submitted, mid: str) -> AuditEntry:
    """The audit entry of a message decided without the rules (verdict and reply to fill in)."""
    return AuditEntry(at, m.queue_id, "", "", m.mail_from, len(m.rcpts), m.login, m.client_ip,
                      rcpt_to=tuple(m.rcpts), message_id=mid)


AUDITED_RECORDS = frozenset({"urgency", "exemption"})
"""The records a decision keeps in its audit entry (the compliance report reads them); social
accounts go to the inventory instead."""


def _bound_queue_id(log: Any) -> str:
    """The queue id a logger was bound with (the message a notice is about), or ''."""
    try:
        return str(structlog.get_context(log).get("queue_id") or "")
    except (AttributeError, TypeError):
        return ""


def message_id(content: bytes) -> str:
    """The Message-ID of a message (without <>), from its header only; '' when it has none."""
    fields, _ = rewrite.split_head(content[:256 * 1024])
    for field in fields:
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"message-id":
            return " ".join(value.decode("utf-8", "replace").split()).strip("<>")[:300]
    return ""


async def _aborted(txn: Transaction | None, reply: Refusal) -> Refusal:
    """A refusal before anything went on: the upstream transaction (if ours) is dropped."""
    if txn is not None:
        await txn.abort()
    return reply
