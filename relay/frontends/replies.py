"""A `Disposition` said in each front-end's protocol: SMTP reply lines, milter packets.

This is the only place a front-end turns what the disposer decided into bytes on its wire; the
decision itself (codes, texts, which recipients are held) is the disposer's, so the SMTP path and
the milter path answer the same message the same way.
"""

from __future__ import annotations

from relay.dispose import Accept, Discard, Disposition, Held, Refusal, Reject, Tempfail
from relay.frontends import milter_codec as mc


def smtp(outcome: Disposition | Refusal) -> str:
    """The reply line to DATA (or to RCPT, for a refusal)."""
    if isinstance(outcome, Reject | Tempfail):
        return str(outcome)
    if isinstance(outcome, Held) or (isinstance(outcome, Accept) and outcome.held):
        return f"250 2.0.0 Ok: queued as {outcome.queue_id}; {outcome.held} recipient(s) held by policy"
    return f"250 2.0.0 Ok: queued as {outcome.queue_id}"


def milter_refusal(outcome: Refusal) -> bytes:
    """SMFIR_REPLYCODE for a refusal (at RCPT or at end of message)."""
    return mc.reply_code(str(outcome))


def milter(outcome: Disposition, actions: int, protocol: int) -> list[bytes]:
    """The packets that end a message: a reply code, a discard, or the modifications (as far as
    the MTA allowed them: `actions`, `protocol` negotiated) followed by accept."""
    if isinstance(outcome, Reject | Tempfail):
        return [milter_refusal(outcome)]
    if isinstance(outcome, Held | Discard):
        return [mc.reply_discard()]
    assert isinstance(outcome, Accept)
    if outcome.removed and not actions & mc.F_DELRCPT:
        return [mc.reply_code("451 4.3.5 Milter may not delete recipients; enable it in the MTA")]
    out = [mc.mod_delete_rcpt(r) for r in outcome.removed]
    for name, index, value in outcome.header_edits:
        if value is not None and not protocol & mc.P_HDR_LEADSPC:
            value = value[1:] if value.startswith((b" ", b"\t")) else value
        value = (value or b"").replace(b"\r\n", b"\n")
        if index == 0 and actions & mc.F_ADDHDRS:
            out.append(mc.mod_add_header(name, value.decode("utf-8", "surrogateescape")))
        elif index and actions & mc.F_CHGHDRS:
            out.append(mc.mod_change_header(index, name, value))
    if outcome.body is not None:
        out += mc.mod_replace_body(outcome.body)
    return [*out, mc.reply_accept()]
