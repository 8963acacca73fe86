"""The message model: decoding, visible vs hidden recipients, body text, attachments, defects."""

from __future__ import annotations

from relay.message import Envelope, fold, parse_message


def test_rfc2047_and_raw_utf8_headers_decode() -> None:
    m = parse_message(b"Subject: =?iso-8859-1?q?Notificaci=F3n?= de deuda\r\nFrom: a@x.co\r\n\r\nx")
    assert m.subject == "Notificación de deuda"
    raw = "Subject: código de confirmación\r\nFrom: a@x.co\r\n\r\nx".encode()
    assert parse_message(raw).subject == "código de confirmación"
    latin1 = "Subject: c\xf3digo\r\nFrom: a@x.co\r\n\r\nx".encode("latin-1")
    assert parse_message(latin1).subject == "código"


def test_visible_recipients_and_groups() -> None:
    m = parse_message(b"From: a@x.co\r\nTo: Lista: l1@x.co, l2@x.co;\r\nCc: c@x.co\r\nBcc: hidden@x.co\r\n\r\nx")
    assert m.visible == ("l1@x.co", "l2@x.co", "c@x.co")


def test_malformed_to_is_counted_leniently_and_reported() -> None:
    m = parse_message(b"From: a@x.co\r\nTo: a@x.co b@x.co, <c@x.co\r\n\r\nx")
    assert set(m.visible) >= {"a@x.co", "b@x.co"}
    assert any(d.startswith("To:") for d in m.defects)


def test_html_and_multipart_text_with_attachment_metadata() -> None:
    raw = (
        b"From: a@x.co\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><style>p{}</style><p>Estado de <b>salud</b> &amp; m\xc3\xa1s</p></html>\r\n"
        b"--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX--\r\n"
    )
    m = parse_message(raw)
    assert "Estado de salud & más" in " ".join(m.body_text.split())
    assert "p{}" not in m.body_text
    assert [(a.filename, a.content_type) for a in m.attachments] == [("r.pdf", "application/pdf")]


def test_body_is_bounded() -> None:
    m = parse_message(b"From: a@x.co\r\n\r\n" + b"palabra " * 100_000, max_body_chars=1000)
    assert len(m.body_text) <= 1000


def test_garbage_never_raises() -> None:
    for raw in (b"", b"\xff\xfe\x00", b"From:\r\n\r\n", b"Content-Type: multipart/mixed\r\n\r\n--", b":::\r\n"):
        m = parse_message(raw)
        assert m.from_error is not None


def test_fold() -> None:
    assert fold("NOTIFICACIÓN Médica Ñandú") == "notificacion medica nandu"


def test_envelope_normalises_and_dedupes() -> None:
    e = Envelope.build("<A@X.co>", ["<b@x.co>", "B@X.CO", "c@x.co"])
    assert e.mail_from == "A@x.co" and e.rcpt_to == ("b@x.co", "c@x.co")
