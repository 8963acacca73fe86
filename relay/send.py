"""`relay send`: a small SMTP client for trying the relay without swaks (the README's "Try it").

It speaks plain SMTP with the standard library's smtplib, prints every command and every reply of
the server, and exits with the worst reply class it saw: 0 when the message was accepted for every
recipient, 4 after a temporary failure (4xx: try again later), 5 after a refusal (5xx, for one
recipient or all), 1 when it could not talk to the server at all. It never retries.
"""

from __future__ import annotations

import argparse
import smtplib
import ssl
import sys
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TextIO

EXIT_ACCEPTED, EXIT_NO_SERVER, EXIT_TEMPFAIL, EXIT_REFUSED = 0, 1, 4, 5


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 25
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: use HOST or HOST:PORT, e.g. 127.0.0.1:10025")
    return host.strip("[]") or "127.0.0.1", int(port)


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n") or "\n" in text or "\r" in text:
        raise argparse.ArgumentTypeError(f"{value!r}: write one header as 'Name: value'")
    return name.strip(), text.strip()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = sub.add_parser("send", help="send one test message over SMTP and print the server's replies")
    send.add_argument("--server", type=_address, default=("127.0.0.1", 10025),
                      help="HOST:PORT of the relay (default 127.0.0.1:10025)")
    send.add_argument("--from", dest="sender", required=True, help="envelope sender ('' for the null sender)")
    send.add_argument("--to", action="append", required=True, help="envelope recipient (repeat)")
    send.add_argument("--header", action="append", type=_header, default=[],
                      help="a header 'Name: value' (repeat); replaces the default From/To/Subject")
    body = send.add_mutually_exclusive_group()
    body.add_argument("--body", help="the body text (UTF-8)")
    body.add_argument("--file", help="a whole RFC 5322 message to send as it is (--header lines go on top)")
    send.add_argument("--auth-user", help="SMTP AUTH login (PLAIN or LOGIN, as the server offers)")
    send.add_argument("--auth-password", help="its password")
    send.add_argument("--starttls", action="store_true", help="STARTTLS before AUTH (certificate not checked)")
    send.add_argument("--helo", default="relay-send.localhost", help="the EHLO name")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply")
    send.set_defaults(func=cmd_send)


def build_message(args: argparse.Namespace) -> bytes:
    """The message bytes: --file as it is, or one made of the default headers, --header and --body."""
    headers: list[tuple[str, str]] = args.header
    if args.file:
        raw = Path(args.file).read_bytes()
        top = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8")
        return top + raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    msg = EmailMessage()
    given = {name.casefold() for name, _ in headers}
    defaults = [("From", args.sender or "MAILER-DAEMON"), ("To", ", ".join(args.to)),
                ("Subject", "Prueba de policy-relay"), ("Date", formatdate(localtime=True)),
                ("Message-ID", make_msgid(domain="relay-send.localhost"))]
    for name, value in defaults:
        if name.casefold() not in given:
            msg[name] = value
    for name, value in headers:
        msg[name] = value
    msg.set_content(args.body if args.body is not None else "Mensaje de prueba enviado con relay send.\n")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


class _Transcript:
    """Prints the conversation and remembers the worst reply class."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.worst = out, 2

    def said(self, command: str) -> None:
        print(f"-> {command}", file=self.out)

    def heard(self, code: int, text: bytes | str) -> int:
        lines = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).splitlines() or [""]
        for i, line in enumerate(lines):
            print(f"<- {code}{'-' if i < len(lines) - 1 else ' '}{line}", file=self.out)
        if code >= 400:
            self.worst = max(self.worst, code // 100)
        return code

    def exit_code(self) -> int:
        return {2: EXIT_ACCEPTED, 3: EXIT_ACCEPTED, 4: EXIT_TEMPFAIL}.get(self.worst, EXIT_REFUSED)


def cmd_send(args: argparse.Namespace) -> int:
    if bool(args.auth_user) != bool(args.auth_password):
        print("relay send: give both --auth-user and --auth-password", file=sys.stderr)
        return 2
    try:
        message = build_message(args)
    except OSError as error:
        print(f"relay send: cannot read {args.file}: {error.strerror or error}", file=sys.stderr)
        return 2
    host, port = args.server
    log = _Transcript(sys.stdout)
    client = smtplib.SMTP(timeout=args.timeout)
    try:
        if log.heard(*client.connect(host, port)) >= 400:
            return log.exit_code()
        return _converse(client, args, message, log)
    except OSError as error:  # refused, timed out, or the server hung up (smtplib errors are OSErrors)
        print(f"relay send: {host}:{port}: {error}", file=sys.stderr)
        return EXIT_NO_SERVER
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _converse(client: smtplib.SMTP, args: argparse.Namespace, message: bytes, log: _Transcript) -> int:
    log.said(f"EHLO {args.helo}")
    if log.heard(*client.ehlo(args.helo)) >= 400:
        return log.exit_code()
    if args.starttls:
        log.said("STARTTLS")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if log.heard(*client.starttls(context=context)) >= 400:
            return log.exit_code()
        log.said(f"EHLO {args.helo}")
        client.ehlo(args.helo)
    if args.auth_user:
        log.said(f"AUTH ({args.auth_user})")
        try:
            log.heard(*client.login(args.auth_user, args.auth_password))
        except smtplib.SMTPAuthenticationError as error:
            log.heard(error.smtp_code, error.smtp_error)
            return log.exit_code()
        except smtplib.SMTPNotSupportedError:
            print("relay send: the server offers no AUTH here (try --starttls)", file=sys.stderr)
            return EXIT_REFUSED
    log.said(f"MAIL FROM:<{args.sender}>")
    if log.heard(*client.mail(args.sender)) >= 400:
        return log.exit_code()
    accepted = 0
    for rcpt in args.to:
        log.said(f"RCPT TO:<{rcpt}>")
        if log.heard(*client.rcpt(rcpt)) < 400:
            accepted += 1
    if not accepted:
        return log.exit_code()
    log.said(f"DATA ({len(message)} bytes)")
    try:
        log.heard(*client.data(message))
    except smtplib.SMTPDataError as error:
        log.heard(error.smtp_code, error.smtp_error)
    return log.exit_code()
