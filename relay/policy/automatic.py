"""Automatic mail: delivery reports, auto-replies and list mail, and the gate for every notice.

Pure (no I/O). RFC 3834 §2: an automatic responder must not answer mail whose envelope sender is
null, whose `Auto-Submitted` is anything but `no`, that comes from a list (RFC 2369 `List-*`), or
that says `Precedence: bulk | list | junk`; answering such mail loops two responders into each
other. Microsoft's `X-Auto-Response-Suppress` asks the same of Exchange.

A delivery status notification (RFC 3464) is recognised by what it is, not by who claims to send
it: the null reverse-path (RFC 5321 §4.5.5: "MUST" for non-delivery notifications) together with
a `multipart/report` body (RFC 6522) of report-type `delivery-status`, `disposition-notification`
(RFC 8098 read receipts) or a `message/delivery-status` part; or, for the older bounces that
predate RFC 3464 (qmail, Exim, Sendmail's plain-text ones), the null reverse-path and a `From` of
`MAILER-DAEMON` or `postmaster` (RFC 5321 §4.5.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from relay.message import Submission
from relay.policy.verdicts import Notice

# Notices that answer the message's own sender (RFC 3834 "responses"); others (an alert to the
# security office, a request to a moderator) go to addresses the institution configured.
RESPONSE_KINDS = frozenset({"bounce", "hold", "moderation", "auto-reply", "moderation-approved",
                            "moderation-rejected"})
REPORT_TYPES = frozenset({"delivery-status", "disposition-notification", "delivery-status-notification"})
_PRECEDENCE = frozenset({"bulk", "list", "junk", "auto_reply"})
_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post", "list-help", "list-owner", "list-subscribe")
_SYSTEM_LOCAL = re.compile(
    r"^(mailer-daemon|postmaster|listserv|majordomo|no-?reply|do-?not-?reply|owner-.+|.+-(request|owner|bounces?))$")
# The subjects auto-responders write when they set none of the headers above (Outlook rules that
# "reply using a template", old vacation programs, web forms): a response's tag at the very start,
# never after "RE:" (a person answering an auto-reply writes "RE: Respuesta automática: ...").
_AUTO_SUBJECT = re.compile(
    r"^\s*(respuesta\s+autom[aá]tica|automatic\s+reply|auto[- ]?reply|autoreply|auto[- ]?respuesta|"
    r"resposta\s+autom[aá]tica|r[eé]ponse\s+automatique|fuera\s+de\s+(la\s+)?oficina|out\s+of\s+(the\s+)?office"
    r"|respuesta\s+de\s+ausencia|mensaje\s+de\s+ausencia|ausente|vacation\s+reply)\s*[:\-\]]", re.I)
_PARAM = re.compile(r"""report-type\s*=\s*"?([A-Za-z0-9._-]+)""", re.I)


def _first_word(value: str | None) -> str:
    if not value:
        return ""
    word = re.split(r"[\s;(]", value.strip(), maxsplit=1)[0]
    return word.strip().strip('"').casefold()


def is_system_address(address: str | None) -> bool:
    """The null sender, or a mailbox no person reads replies in (MAILER-DAEMON, postmaster,
    owner-*, *-request, no-reply; RFC 3834 §2 and RFC 2142 §4)."""
    if not address:
        return True
    local = address.rpartition("@")[0] if "@" in address else address
    return bool(_SYSTEM_LOCAL.match(local.strip().strip('"').casefold()))


def report_type(submission: Submission) -> str | None:
    """`delivery-status` etc. for a `multipart/report` message (RFC 6522), else None."""
    ctype = submission.message.header("Content-Type") or ""
    if _first_word(ctype) != "multipart/report":
        return None
    match = _PARAM.search(ctype)
    return match.group(1).casefold() if match else ""


def is_delivery_report(submission: Submission) -> bool:
    """A DSN or MDN: null envelope sender (or MAILER-DAEMON@/postmaster@, as some MTAs send) plus a
    report body, or plus a MAILER-DAEMON/postmaster From (pre-RFC 3464 bounces). See the module
    docstring."""
    sender = submission.envelope.mail_from
    if sender and sender.rpartition("@")[0].casefold() not in ("mailer-daemon", "postmaster"):
        return False  # RFC 5321 4.5.5: <>; some MTAs use MAILER-DAEMON@ or postmaster@ instead
    kind = report_type(submission)
    if kind is not None and (kind in REPORT_TYPES or not kind):
        return True
    senders = [a.local.casefold() for a in submission.message.from_]
    return any(s in ("mailer-daemon", "postmaster") for s in senders)


def automatic_reason(submission: Submission) -> str | None:
    """Why RFC 3834 says this message must never be answered automatically, or None (a person)."""
    message = submission.message
    if not submission.envelope.mail_from:
        return "null envelope sender"
    auto = _first_word(message.header("Auto-Submitted"))
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    if report_type(submission) is not None:
        return "multipart/report"
    suppress = _first_word(message.header("X-Auto-Response-Suppress"))
    if suppress and suppress != "none":
        return f"X-Auto-Response-Suppress: {suppress}"
    precedence = _first_word(message.header("Precedence"))
    if precedence in _PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in _LIST_HEADERS:
        if message.header(name) is not None:
            return name.title()
    for name in ("X-Autoreply", "X-Autorespond", "X-Autogenerated"):  # older responders' marks
        if message.header(name) is not None:
            return name
    if "vacation" in (message.header("X-Mailer") or "").casefold():  # Unix vacation(1)
        return "X-Mailer: vacation"
    if is_system_address(submission.envelope.mail_from):
        return "system sender"
    if _AUTO_SUBJECT.match(message.subject or ""):
        return "auto-reply subject"  # answered by no notice; judged by the rules as any mail
    return None


def auto_replied(submission: Submission) -> bool:
    """Marked as generated by a program (RFC 3834 §5 `Auto-Submitted` other than `no`, or
    Exchange's `X-Auto-Response-Suppress`): an out-of-office reply, a notification."""
    auto = _first_word(submission.message.header("Auto-Submitted"))
    suppress = _first_word(submission.message.header("X-Auto-Response-Suppress"))
    return (bool(auto) and auto != "no") or (bool(suppress) and suppress != "none")


def is_automatic(submission: Submission) -> bool:
    return automatic_reason(submission) is not None


def may_respond(submission: Submission, to: str | None) -> bool:
    """The notice gate for a response to the message's sender: never to automatic mail, never to
    a null or system address."""
    return bool(to) and not is_system_address(to) and not is_automatic(submission)


def gate(notices: Iterable[Notice], submission: Submission) -> tuple[Notice, ...]:
    """The notices that may go out about `submission`: responses to its sender only when
    `may_respond`; notices to configured addresses (alerts, moderators) always."""
    return tuple(n for n in notices if n.kind not in RESPONSE_KINDS or may_respond(submission, n.to))


def grace_key(notice: Notice) -> str:
    """What an auto-reply is counted under for the grace period: who is answered, and by which rule."""
    return f"auto-reply:{notice.to.casefold()}:{','.join(notice.rule_ids)}"
