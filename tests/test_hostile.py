"""Hostile and broken input: capped before parsing, refused when it cannot be read whole (fail
closed), ambiguous or duplicate From refused, and a property-based fuzz of parse + decide."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.message import MAX_MULTIPARTS, Envelope, Submission, parse_message
from relay.policy.engine import AMBIGUOUS_FROM_RULE, UNREADABLE_RULE, evaluate
from relay.policy.verdicts import Verdict
from tests.helpers import decide, directory, pack

OUTSIDER = "ana@example.org"
STAFF = "pmu@barrancabermeja.gov.co"


def nested(depth: int) -> str:
    body = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth))
    body += "Content-Type: text/plain\n\nfin\n" + "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    return f"From: {OUTSIDER}\nTo: {STAFF}\nSubject: anidado\nMIME-Version: 1.0\n" + body


BLOW_UPS = {
    "500-deep multipart": nested(500),
    "header section of 2 MiB": f"From: {OUTSIDER}\nX-Big: " + "a " * 30 + ("\n " + "a " * 40) * 26000 + "\n\nhola\n",
    "20,000 header fields": f"From: {OUTSIDER}\n" + "".join(f"X-H{i}: v\n" for i in range(20000)) + "\nhola\n",
}


@pytest.mark.parametrize("name", sorted(BLOW_UPS))
def test_parser_blow_ups_are_refused_not_delivered_unchecked(name: str) -> None:
    parsed = parse_message(BLOW_UPS[name].replace("\n", "\r\n").encode())
    assert parsed.incomplete
    decision = decide("barrancabermeja", BLOW_UPS[name], mail_from=OUTSIDER, rcpt=[STAFF])
    assert decision.verdict is Verdict.REJECT
    assert (decision.reply.code, decision.reply.status) == (554, "5.6.0")
    assert decision.recipients[0].rule_ids == (UNREADABLE_RULE,)


def test_moderate_nesting_and_many_parameters_are_still_read() -> None:
    params = "".join(f'; p{i}="v{i}"' for i in range(5000))
    text = f"From: {OUTSIDER}\nTo: {STAFF}\nSubject: hola\nContent-Type: text/plain{params}\n\nCordial saludo\n"
    assert parse_message(text.replace("\n", "\r\n").encode()).incomplete is None
    shallow = parse_message(nested(MAX_MULTIPARTS // 5).replace("\n", "\r\n").encode())
    assert shallow.incomplete is None and "fin" in shallow.body_text


def test_thousands_of_encoded_words_decode_only_a_bounded_prefix() -> None:
    subject = " ".join(["=?utf-8?q?caf=C3=A9?="] * 30000)  # 660 KB: under the header cap
    parsed = parse_message(f"From: {OUTSIDER}\r\nSubject: {subject}\r\n\r\nhola\r\n".encode())
    assert parsed.subject.startswith("cafécafé") and len(parsed.subject) < 20000


def test_unknown_charsets_are_read_leniently() -> None:
    parsed = parse_message(b"From: a@example.org\r\nSubject: =?x-unknown?q?hola?=\r\n"
                           b"Content-Type: text/plain; charset=x-klingon\r\n\r\nqapla\xff\r\n")
    assert parsed.incomplete is None and "qapla" in parsed.body_text


@pytest.mark.parametrize("from_lines", [
    "From: alice@barrancabermeja.gov.co <mallory@evil.test>",  # two addresses to Python's parser
    "From: ana@example.org\nFrom: alcalde@barrancabermeja.gov.co",
])
def test_ambiguous_or_duplicate_from_is_refused_even_inbound(from_lines: str) -> None:
    decision = decide("barrancabermeja", f"{from_lines}\nTo: {STAFF}\nSubject: hola\n\nhola\n",
                      mail_from=OUTSIDER, rcpt=[STAFF])
    assert decision.verdict is Verdict.REJECT
    assert decision.reply.code == 550 and decision.recipients[0].rule_ids[0] in (AMBIGUOUS_FROM_RULE,
                                                                                  "institutional-sender")


def test_a_plain_inbound_message_is_not_refused_by_these_checks() -> None:
    decision = decide("barrancabermeja", f"From: Ana <{OUTSIDER}>\nTo: {STAFF}\nSubject: hola\n\nhola\n",
                      mail_from=OUTSIDER, rcpt=[STAFF])
    assert decision.verdict is not Verdict.REJECT


# -- fuzz: any bytes, any header soup: a decision, never an exception -------------------------------

HEADER_NAMES = st.sampled_from(["From", "To", "Cc", "Subject", "Content-Type", "Content-Transfer-Encoding",
                                "MIME-Version", "Content-Disposition", "X-Anything"])
HEADER_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["multipart/mixed; boundary=x", "text/html; charset=x-unknown", "base64", "quoted-printable",
                     "=?utf-8?b?w6k=?=", "=?bogus?q?x?=", "a@b.co, <c@d.co>", "alice@x.co <m@evil.test>",
                     "attachment; filename*=utf-8''%E2%82%AC.pdf", '"unterminated', "(comment", "<>"]))
MESSAGES = st.builds(
    lambda headers, body, raw: (
        "".join(f"{n}: {v}\r\n" for n, v in headers).encode("utf-8", "surrogatepass") + b"\r\n" + body + raw),
    st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=12),
    st.binary(max_size=400),
    st.sampled_from([b"", b"--x\r\nContent-Type: text/plain\r\n\r\nhola\r\n--x--\r\n", b"\r\n.\r\n", b"\x00\xff"]),
)


# A bounded run in CI (300 examples); FUZZ_EXAMPLES=100000 for a longer hunt.
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(MESSAGES, st.binary(max_size=2000)))
def test_fuzz_parse_and_decide_never_raise(data: bytes) -> None:
    parsed = parse_message(data)
    for sender in (OUTSIDER, "laura.pinto@barrancabermeja.gov.co", ""):
        envelope = Envelope.build(sender, [STAFF, "funcionarios@barrancabermeja.gov.co"],
                                  sender or None, "10.0.0.5")
        decision = evaluate(Submission(envelope, parsed), pack("barrancabermeja"), directory("barrancabermeja"),
                            datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
        assert decision.verdict in Verdict
        assert 200 <= decision.reply.code < 600
        decision.to_json()  # the dry-run contract serialises whatever came in


# -- large messages: attachment contents are not parsed line by line, text always is -------------

def _b64_lines(raw: bytes) -> bytes:
    import base64

    return base64.encodebytes(raw).replace(b"\n", b"\r\n")


def test_a_large_attachment_is_skipped_but_its_name_and_the_text_are_read() -> None:
    from relay.message import ELIDE_OVER

    pdf = _b64_lines(os.urandom(ELIDE_OVER))
    data = (b"From: ana@example.org\r\nTo: pmu@barrancabermeja.gov.co\r\nSubject: anexo\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"Adjunto el informe.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=informe.pdf\r\n\r\n" + pdf + b"--b--\r\n")
    parsed = parse_message(data)
    assert parsed.incomplete is None and "Adjunto el informe." in parsed.body_text
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [("informe.pdf", "application/pdf")]


def test_text_hidden_after_a_fake_content_type_line_inside_base64_is_still_read() -> None:
    # A text part in base64 with a line that looks like a part header of an image, then a long run:
    # the cut would hide the text from the rules, so the message is parsed whole instead.
    hidden = ("Texto de relleno. " * 10 + "Le notificamos el embargo de su salario por la deuda. " * 8000).encode()
    body = _b64_lines(b"Hola!!") + b"--fake\r\nContent-Type: image/png\r\n\r\n" + _b64_lines(hidden)  # no padding
    data = (b"From: ana@example.org\r\nTo: pmu@barrancabermeja.gov.co\r\nSubject: aviso\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"--b--\r\n")
    assert len(data) > 256 * 1024
    assert "embargo de su salario" in parse_message(data).body_text
