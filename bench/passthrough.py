#!/usr/bin/env python3
"""The yardstick of issue 6: a bare aiosmtpd -> aiosmtplib passthrough, no policy, no store.

    .venv/bin/python bench/passthrough.py --port 2525 --upstream 127.0.0.1:2526 [--uvloop] [--parse]
    .venv/bin/python bench/passthrough.py --port 2525 --sink      (a bare aiosmtpd sink)

Every message received is sent on with one aiosmtplib transaction (a new connection each, as
the simplest relay would) and the client hears the upstream's reply. `--parse` adds a full
`email.policy.default` parse of each message, the cost a naive policy relay pays. Started by
bench/smtp_load.py beside the relay; not part of the product.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import signal
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP


class Forward:
    def __init__(self, host: str, port: int, parse: bool, sink: bool) -> None:
        self.host, self.port, self.parse, self.sink = host, port, parse, sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content
        if self.sink:
            return "250 2.0.0 Ok"
        if self.parse:
            email.message_from_bytes(content, policy=email.policy.default).get("Subject")
        try:
            errors, _ = await aiosmtplib.send(content, sender=envelope.mail_from, recipients=envelope.rcpt_tos,
                                                  hostname=self.host, port=self.port, timeout=30)
        except aiosmtplib.SMTPException as error:
            return f"451 4.4.1 upstream: {error}"
        return "250 2.0.0 Ok" if not errors else "451 4.4.1 upstream refused a recipient"


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.upstream.rpartition(":")
    handler = Forward(host, int(port), args.parse, args.sink)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, enable_SMTPUTF8=True, data_size_limit=64 << 20),
                                      "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="127.0.0.1:0", help="HOST:PORT")
    parser.add_argument("--sink", action="store_true", help="a bare aiosmtpd sink: answer 250, send nothing on")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--parse", action="store_true", help="parse each message with email.policy.default")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
