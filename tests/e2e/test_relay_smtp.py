"""End to end: real relay process, real sink server, real SMTP clients (smtplib, swaks, raw sockets)."""

from __future__ import annotations

import json
import shutil
import smtplib
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from relay.clock import FileClock
from tests.e2e.harness import PASSWORD, RelayProcess, Sink

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"


def client(relay: RelayProcess, login: str | None = LAURA) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", relay.port, timeout=15)
    smtp.ehlo("client.test")
    if login:
        smtp.login(login, PASSWORD)
    return smtp


def message(frm: str, to: str, subject: str = "Informe", body: str = "Cordial saludo.") -> bytes:
    return f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def test_ordinary_mail_reaches_the_upstream_with_trace_headers(relay: RelayProcess, sink: Sink) -> None:
    with client(relay) as smtp:
        refused = smtp.sendmail(LAURA, ["jose@gmail.com"], message(LAURA, "jose@gmail.com"))
    assert refused == {}
    [got] = sink.wait_for(1)
    assert got.mail_from == LAURA and got.rcpts == ["jose@gmail.com"]
    assert b"X-Relay-Queue-ID: " in got.content and b"X-Relay-Rule-Hits: none" in got.content
    assert b"with ESMTPA id" in got.content  # authenticated submission in the trace


def test_envelope_violation_is_refused_at_rcpt_citing_the_circular(relay: RelayProcess, sink: Sink) -> None:
    # A funcionaria writing to a mass list: decidable from the envelope, so refused at RCPT time.
    with client(relay) as smtp:
        smtp.mail(LAURA)
        code, text = smtp.rcpt(f"funcionarios@{B}")
        assert code == 550
        assert b"005-20" in text and b"mass-mail-authorized-senders" in text
        assert smtp.rcpt(f"pmu@{B}")[0] == 250  # an ordinary recipient in the same transaction is fine
        assert smtp.data(message(LAURA, f"pmu@{B}"))[0] == 250
    got = sink.wait_for(2)  # the message, and the notice of the refusal to Laura (she is staff)
    [sent] = [m for m in got if b"X-Relay-Notice" not in m.content]
    assert sent.rcpts == [f"pmu@{B}"]
    [notice] = [m for m in got if b"X-Relay-Notice" in m.content]
    assert notice.rcpts == [LAURA] and notice.mail_from in ("", "<>")


def test_send_as_someone_else_is_refused_at_rcpt(relay: RelayProcess, sink: Sink) -> None:
    with client(relay) as smtp:
        smtp.mail(f"patriciah.fierro@{B}")
        code, text = smtp.rcpt("jose@gmail.com")
    assert code == 550 and b"send-as-self-or-delegate" in text
    assert sink.messages == []


def test_content_violation_is_a_5xx_at_data_with_a_notice_to_the_sender(relay: RelayProcess, sink: Sink) -> None:
    # The Secretaria may broadcast, but the list must go in BCC (005-20 num. 3a): only the
    # headers show the violation, so it is refused at the end of DATA.
    patricia = f"patriciah.fierro@{B}"
    with client(relay, login=patricia) as smtp, pytest.raises(smtplib.SMTPDataError) as info:
        smtp.sendmail(patricia, [f"funcionarios@{B}"], message(patricia, f"funcionarios@{B}"))
    assert info.value.smtp_code == 550
    text = info.value.smtp_error.decode()
    assert "005-20" in text and "mass-list-bcc-only" in text
    [notice] = sink.wait_for(1)
    # the only message the sink gets is the bounce notice to our own staff member
    assert notice.mail_from == "<>" and notice.rcpts == [patricia]  # aiosmtpd's "<>"
    assert b"Auto-Submitted: auto-generated" in notice.content
    time.sleep(0.3)
    assert len(sink.messages) == 1


def test_null_sender_is_relayed_as_null(relay: RelayProcess, sink: Sink) -> None:
    with client(relay, login=None) as smtp:
        smtp.sendmail("", [f"pmu@{B}"], message("MAILER-DAEMON@example.org", f"pmu@{B}", "Undelivered"))
    [got] = sink.wait_for(1)
    assert got.mail_from == "<>"


def test_forged_x_relay_headers_are_dropped(relay: RelayProcess, sink: Sink) -> None:
    forged = message(LAURA, "jose@gmail.com").replace(b"Subject:", b"X-Relay-Rule-Hits: approved\r\nSubject:")
    with client(relay) as smtp:
        smtp.sendmail(LAURA, ["jose@gmail.com"], forged)
    [got] = sink.wait_for(1)
    assert b"approved" not in got.content


def test_open_relay_is_refused_at_rcpt(relay: RelayProcess, sink: Sink) -> None:
    with client(relay, login=None) as smtp:
        smtp.mail("spam@example.net")
        code, text = smtp.rcpt("victim@example.org")
        assert code == 554 and b"open-relay-guard" in text
        # however the local part is written (RFC 5321 §4.1.2 quoted strings, a source route)
        for written in ('"victim one"@example.org', '"victim"@example.org'):
            code, text = smtp.rcpt(written)
            assert code == 554 and b"open-relay-guard" in text, written
        assert smtp.rcpt("@hop.example:victim@example.org")[0] in (553, 554)  # a source route: refused too
    assert sink.messages == []


def test_a_quoted_local_part_reaches_the_upstream_still_quoted(relay: RelayProcess, sink: Sink) -> None:
    with client(relay) as smtp:
        smtp.sendmail(f"laura.pinto@{B}", ['"Mesa de Ayuda"@example.org'],
                      f"From: laura.pinto@{B}\r\nTo: x@example.org\r\nSubject: Consulta\r\n\r\nHola.\r\n")
    sink.wait_for(1)
    assert sink.messages[0].rcpts == ['"Mesa de Ayuda"@example.org']


def test_upstream_recipient_refusal_reaches_the_client(relay: RelayProcess, sink: Sink) -> None:
    sink.handler.refuse.add("nadie@example.org")
    with client(relay) as smtp:
        refused = smtp.sendmail(LAURA, ["nadie@example.org", "jose@gmail.com"],
                                message(LAURA, "jose@gmail.com"))
    assert refused == {"nadie@example.org": (550, b"5.1.1 No such user here")}
    [got] = sink.wait_for(1)
    assert got.rcpts == ["jose@gmail.com"]


def test_upstream_down_means_451_and_nothing_lost(tmp_path: Path) -> None:
    sink = Sink()  # not started: the port is closed
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}").start()
    try:
        with client(relay) as smtp:
            smtp.mail(LAURA)
            code, _ = smtp.rcpt("jose@gmail.com")
            assert code == 451
        sink.start()  # the upstream comes back and the client retries
        with client(relay) as smtp:
            assert smtp.sendmail(LAURA, ["jose@gmail.com"], message(LAURA, "jose@gmail.com")) == {}
        assert len(sink.wait_for(1)) == 1
    finally:
        relay.stop()
        sink.stop()


def test_upstream_dying_after_rcpt_gives_451(tmp_path: Path) -> None:
    sink = Sink().start()
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}").start()
    try:
        with client(relay) as smtp:
            smtp.mail(LAURA)
            assert smtp.rcpt("jose@gmail.com")[0] == 250
            sink.stop()
            code, _ = smtp.data(message(LAURA, "jose@gmail.com"))
        assert code == 451
    finally:
        relay.stop()


def raw_session(port: int, payload: bytes, wait: float = 1.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.recv(1024)
        s.sendall(payload)
        time.sleep(wait)
        s.settimeout(2)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


# End-of-data variants of the kind public SMTP-smuggling scanners send: bare LF/CR around the dot, NUL.
@pytest.mark.parametrize("terminator", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\n.\r",
                                        b"\r\n.\r", b"\r.\r", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"])
def test_smuggling_never_splits_a_message(relay: RelayProcess, sink: Sink, terminator: bytes) -> None:
    smuggled = (b"MAIL FROM:<patriciah.fierro@barrancabermeja.gov.co>\r\nRCPT TO:<victim@example.org>\r\n"
                b"DATA\r\nFrom: patriciah.fierro@barrancabermeja.gov.co\r\n\r\nsmuggled\r\n.\r\n")
    payload = (b"EHLO smuggler.test\r\nMAIL FROM:<ana@example.org>\r\nRCPT TO:<pmu@barrancabermeja.gov.co>\r\n"
               b"DATA\r\nFrom: ana@example.org\r\nSubject: hola\r\n\r\nfirst" + terminator + smuggled + b"QUIT\r\n")
    replies = raw_session(relay.port, payload)
    if b"\x00" in terminator:  # refused whole: the smuggled part never becomes a message either
        assert replies.count(b"250 2.0.0 Ok: queued") == 0 and b"550 5.6.0" in replies, replies
        time.sleep(0.3)
        assert sink.messages == []
        return
    assert replies.count(b"250 2.0.0 Ok: queued") == 1, replies
    [got] = sink.wait_for(1)
    assert got.rcpts == ["pmu@barrancabermeja.gov.co"]
    assert b"smuggled" in got.content  # it stayed inside the first message
    assert b"\r\n" in got.content and b"\n" not in got.content.replace(b"\r\n", b"")  # only CRLF on the wire
    time.sleep(0.3)
    assert len(sink.messages) == 1


def test_dsn_parameters_are_accepted_and_not_mangled(relay: RelayProcess, sink: Sink) -> None:
    with client(relay) as smtp:
        assert smtp.has_extn("dsn")
        code, _ = smtp.mail(LAURA, ["RET=HDRS", "ENVID=Q1w2E3", "AUTH=<>"])
        assert code == 250
        code, _ = smtp.rcpt("jose@gmail.com", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Jose@Gmail.com"])
        assert code == 250
        code, _ = smtp.data(message(LAURA, "jose@gmail.com"))
        assert code == 250
    assert len(sink.wait_for(1)) == 1


def test_active_data_transfer_is_not_cut_by_the_idle_timeout(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", limits={"idle_timeout": 1}).start()
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            s.recv(1024)
            s.sendall(b"EHLO slow.test\r\nMAIL FROM:<ana@example.org>\r\nRCPT TO:<pmu@barrancabermeja.gov.co>\r\n"
                      b"DATA\r\n")
            time.sleep(0.3)
            s.recv(4096)
            s.sendall(b"From: ana@example.org\r\nSubject: lento\r\n\r\n")
            for i in range(8):  # 2.4 s of DATA, well past the 1 s idle timeout, never idle 1 s
                s.sendall(f"linea {i}\r\n".encode())
                time.sleep(0.3)
            s.sendall(b".\r\n")
            reply = s.recv(4096)
        assert reply.startswith(b"250 "), reply
        # and an idle client is still disconnected
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            s.recv(1024)
            time.sleep(2.0)
            s.settimeout(2)
            assert s.recv(1024).startswith(b"421 4.4.2 "), "the timeout is said before the close"
            assert s.recv(1024) == b""
    finally:
        relay.stop()


def test_too_many_recipients(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", limits={"max_recipients": 2}).start()
    try:
        with client(relay) as smtp:
            smtp.mail(LAURA)
            assert smtp.rcpt("a@example.org")[0] == 250
            assert smtp.rcpt("b@example.org")[0] == 250
            assert smtp.rcpt("c@example.org")[0] == 452
    finally:
        relay.stop()


def test_wrong_password_and_no_auth_for_outsiders(relay: RelayProcess) -> None:
    smtp = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
    smtp.ehlo("x")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp.login(LAURA, "wrong")
    smtp.close()


def test_friday_night_order_is_held_until_monday_0800(tmp_path: Path, sink: Sink) -> None:
    luis, maria = "luis.fernandez@cancilleria.gov.co", "maria.lopez@cancilleria.gov.co"
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="cancilleria")
    relay.use_test_clock(datetime.fromisoformat("2026-11-27T20:00:00-05:00"))  # Friday night in Bogotá
    relay.start()
    try:
        with client(relay, login=luis) as smtp:
            assert smtp.sendmail(luis, [maria], message(luis, maria, "Informe para el lunes")) == {}
        [notice] = sink.wait_for(1)  # the sender hears when it will arrive, once
        assert notice.rcpts == [luis] and b"X-Relay-Notice: hold" in notice.content
        assert b"2088" in notice.content and b"2191" in notice.content
        FileClock.write(relay.clock_path, datetime.fromisoformat("2026-11-30T07:59:00-05:00"))
        time.sleep(1.0)
        assert len(sink.messages) == 1  # not a minute early
        FileClock.write(relay.clock_path, datetime.fromisoformat("2026-11-30T08:00:00-05:00"))
        got = sink.wait_for(2)
        assert [m.rcpts for m in got[1:]] == [[maria]] and b"Informe para el lunes" in got[1].content
        time.sleep(0.5)
        assert len(sink.messages) == 2  # exactly once
    finally:
        relay.stop()


def test_hold_survives_a_restart_and_a_hold_due_while_down_goes_at_once(tmp_path: Path, sink: Sink) -> None:
    luis, maria = "luis.fernandez@cancilleria.gov.co", "maria.lopez@cancilleria.gov.co"
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="cancilleria")
    relay.use_test_clock(datetime.fromisoformat("2026-11-27T20:00:00-05:00"))
    relay.start()
    try:
        with client(relay, login=luis) as smtp:
            smtp.sendmail(luis, [maria], message(luis, maria, "Pendiente"))
        sink.wait_for(1)  # the hold notice
        relay.proc.kill()  # type: ignore[union-attr]  # kill -9: no goodbye
        relay.proc.wait()  # type: ignore[union-attr]
        FileClock.write(relay.clock_path, datetime.fromisoformat("2026-11-30T09:30:00-05:00"))  # due while down
        relay.start()
        got = sink.wait_for(2)
        assert [m.rcpts for m in got[1:]] == [[maria]]
    finally:
        relay.stop()


def test_every_log_line_of_a_message_carries_its_queue_id(relay: RelayProcess, sink: Sink) -> None:
    with client(relay) as smtp:
        smtp.sendmail(LAURA, ["jose@gmail.com"], message(LAURA, "jose@gmail.com", body="secreto-del-cuerpo"))
    sink.wait_for(1)
    time.sleep(0.2)
    lines = [json.loads(line) for line in relay.log().splitlines() if line.startswith("{")]
    decision = next(line for line in lines if line["event"] == "decision")
    assert len(decision["queue_id"]) == 12
    assert any(line["event"] == "upstream_reply" and line["queue_id"] == decision["queue_id"] for line in lines)
    assert "secreto-del-cuerpo" not in relay.log()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by ./dev test")
def test_swaks_submission(relay: RelayProcess, sink: Sink) -> None:
    done = subprocess.run(["swaks", "--server", f"127.0.0.1:{relay.port}", "--from", LAURA, "--to", "jose@gmail.com",
                           "--auth", "PLAIN", "--auth-user", LAURA, "--auth-password", PASSWORD,
                           "--header", "Subject: prueba swaks"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "250 2.0.0 Ok: queued as" in done.stdout
    assert len(sink.wait_for(1)) == 1


def test_size_connection_and_line_limits(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}",
                         limits={"max_message_size": 2048, "max_connections": 2, "max_line_length": 100}).start()
    try:
        with client(relay) as smtp:
            assert smtp.has_extn("size") and int(smtp.esmtp_features["size"]) == 2048
            code, text = smtp.mail(LAURA, ["SIZE=999999"])
            assert (code, text[:5]) == (552, b"5.3.4")  # RFC 1870: declared size over the limit
            smtp.rset()
            assert smtp.mail(LAURA)[0] == 250 and smtp.rcpt("jose@gmail.com")[0] == 250
            code, text = smtp.data(message(LAURA, "jose@gmail.com", body=("x" * 60 + "\r\n") * 60))
            assert (code, text[:5]) == (552, b"5.3.4")  # too big once received, size not declared
        # a line over the limit is refused, not truncated and passed on
        replies = raw_session(relay.port, b"EHLO t\r\nMAIL FROM:<ana@example.org>\r\n"
                              b"RCPT TO:<pmu@barrancabermeja.gov.co>\r\nDATA\r\nSubject: x\r\n\r\n"
                              + b"y" * 300 + b"\r\n.\r\nQUIT\r\n")
        assert b"500 5.5.2 Line too long" in replies, replies
        # connections over the limit get a 421 greeting
        first, second = (socket.create_connection(("127.0.0.1", relay.port)) for _ in range(2))
        with first, second:
            first.recv(1024)
            second.recv(1024)
            with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as third:
                assert third.recv(1024).startswith(b"421 4.7.0")
        assert sink.messages == []
    finally:
        relay.stop()


def transaction(body: bytes, sender: bytes = b"ana@example.org") -> bytes:
    return (b"MAIL FROM:<" + sender + b">\r\nRCPT TO:<pmu@barrancabermeja.gov.co>\r\nDATA\r\n"
            b"From: " + sender + b"\r\nSubject: hola\r\n\r\n" + body + b".\r\n")


def test_pipelined_transactions_in_one_write_are_each_read_whole(relay: RelayProcess, sink: Sink) -> None:
    # DATA is read in large chunks: the bytes after one end of data are the next commands, in order.
    payload = (b"EHLO pipe.test\r\n" + transaction(b"..leading dot\r\n..\r\nnot the end\r\nuno\r\n")
               + transaction(b"") + transaction(b"tres\r\n") + b"QUIT\r\n")
    replies = raw_session(relay.port, payload)
    assert replies.count(b"250 2.0.0 Ok: queued") == 3, replies
    assert replies.rstrip().endswith(b"221 Bye")
    got = sink.wait_for(3)
    first = got[0].content.split(b"\r\n\r\n", 1)[1]
    assert first == b".leading dot\r\n.\r\nnot the end\r\nuno\r\n"  # transparency dots removed, once
    assert got[1].content.endswith(b"Subject: hola\r\n\r\n")  # the empty body stays empty
    assert got[2].content.endswith(b"\r\n\r\ntres\r\n")


def test_end_of_data_split_across_reads_byte_by_byte(relay: RelayProcess, sink: Sink) -> None:
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.recv(1024)
        s.sendall(b"EHLO slow.test\r\nMAIL FROM:<ana@example.org>\r\nRCPT TO:<pmu@barrancabermeja.gov.co>\r\n")
        time.sleep(0.3)
        s.sendall(b"DATA\r\n")
        time.sleep(0.3)
        for byte in b"From: ana@example.org\r\n\r\nlento\r\n.x\r\n\r\n.\r\nQUIT\r\n":
            s.sendall(bytes([byte]))
            time.sleep(0.002)
        time.sleep(1)
        replies = s.recv(65536)
    assert replies.count(b"250 2.0.0 Ok: queued") == 1 and b"221" in replies, replies
    [got] = sink.wait_for(1)
    assert got.content.endswith(b"\r\n\r\nlento\r\nx\r\n\r\n")


def test_nul_is_refused_and_never_forwarded(relay: RelayProcess, sink: Sink) -> None:
    replies = raw_session(relay.port, b"EHLO t\r\n" + transaction(b"bad\x00byte\r\n") + transaction(b"ok\r\n"))
    assert b"550 5.6.0" in replies and replies.count(b"250 2.0.0 Ok: queued") == 1, replies
    [got] = sink.wait_for(1)
    assert b"\x00" not in got.content


def test_size_limit_is_exact(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", limits={"max_message_size": 4096}).start()
    try:
        head = b"From: ana@example.org\r\nSubject: hola\r\n\r\n"
        line = b"x" * 62 + b"\r\n"
        body = line * ((4096 - len(head)) // len(line))
        body += b"y" * (4096 - len(head) - len(body) - 2) + b"\r\n"  # exactly 4096 bytes with the headers
        assert len(head + body) == 4096
        fits = (b"MAIL FROM:<ana@example.org>\r\nRCPT TO:<pmu@barrancabermeja.gov.co>\r\nDATA\r\n"
                + head + body + b".\r\n")
        over = fits.replace(b"y\r\n.\r\n", b"yz\r\n.\r\n")
        replies = raw_session(relay.port, b"EHLO t\r\n" + fits + over + b"QUIT\r\n")
        assert replies.count(b"250 2.0.0 Ok: queued") == 1 and b"552 5.3.4" in replies, replies
        [got] = sink.wait_for(1)
        assert got.content.endswith(body)
    finally:
        relay.stop()


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_connections_the_client_closes_are_counted_down(tmp_path: Path, sink: Sink, event_loop: str) -> None:
    # A client that just closes (EOF, no QUIT) must free its slot, whichever event loop runs.
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", limits={"max_connections": 2})
    relay.config["event_loop"] = event_loop
    relay.start()
    try:
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
                assert s.recv(1024).startswith(b"220")
        time.sleep(0.3)
        first, second = (socket.create_connection(("127.0.0.1", relay.port), timeout=5) for _ in range(2))
        with first, second:
            assert first.recv(1024).startswith(b"220") and second.recv(1024).startswith(b"220")
        started = time.monotonic()
        relay.stop()
        assert time.monotonic() - started < 5  # nothing left "active" to wait for
        assert relay.events("stopping")[-1]["active"] == 0
    finally:
        relay.stop()


def test_hostile_messages_get_a_clear_refusal_and_the_relay_stays_up(relay: RelayProcess, sink: Sink) -> None:
    from tests.test_hostile import BLOW_UPS

    for name, text in BLOW_UPS.items():
        data = text.replace("\n", "\r\n").encode()
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=60) as smtp:
            smtp.ehlo("hostile.test")
            smtp.mail("ana@example.org")
            assert smtp.rcpt("pmu@barrancabermeja.gov.co")[0] == 250
            code, text_ = smtp.data(data)
        assert (code, text_[:5]) == (554, b"5.6.0"), (name, code, text_)
    ambiguous = b"From: alcalde@barrancabermeja.gov.co <mallory@evil.test>\r\nSubject: pago\r\n\r\nurgente\r\n"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
        smtp.ehlo("hostile.test")
        smtp.mail("ana@example.org")
        smtp.rcpt("pmu@barrancabermeja.gov.co")
        code, text_ = smtp.data(ambiguous)
    assert code == 550 and b"ambiguous" in text_, (code, text_)
    with client(relay) as smtp:  # and ordinary mail still goes through
        assert smtp.sendmail(LAURA, ["jose@gmail.com"], message(LAURA, "jose@gmail.com")) == {}
    assert [m.rcpts for m in sink.wait_for(1)] == [["jose@gmail.com"]]
