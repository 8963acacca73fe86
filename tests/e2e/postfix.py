"""A private Postfix instance from Debian's packages: own config and queue, loopback ports only.

Three deployments of the relay, as docs/postfix.md describes them:
- "content_filter" (after queue): Postfix queues, hands each message to the relay, the relay
  delivers to Postfix's reinjection listener;
- "proxy" (before queue, smtpd_proxy_filter): Postfix's smtpd passes the live session to the relay,
  so the relay's replies reach the client itself;
- "milter" (smtpd_milters): Postfix stays the only SMTP server and asks the relay's milter
  listener at each step; held copies and notices come back through the reinjection listener.
The reinjection listener then relays everything to `relayhost` (a sink the test owns). Test
clients may use XCLIENT (LOGIN=, ADDR=) to play an authenticated user from any address.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from tests.e2e.harness import free_port, wait_port

SERVICES = """\
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

REINJECT = """\
127.0.0.1:{reinject_port} inet n - n - - smtpd
  -o content_filter=
  -o smtpd_proxy_filter=
  -o smtpd_milters=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_authorized_xclient_hosts=
"""

MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {relay_domains}
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_sasl_authenticated_header = yes
smtpd_sasl_auth_enable = yes
smtp_send_xforward_command = yes
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtp_tls_security_level = none
smtpd_tls_security_level = none
minimal_backoff_time = {backoff}s
maximal_backoff_time = {backoff}s
queue_run_delay = {backoff}s
bounce_queue_lifetime = 0
"""


class Postfix:
    def __init__(self, relay_port: int, sink_port: int, relay_domains: str,
                 mode: Literal["content_filter", "proxy", "milter"] = "content_filter", backoff: int = 1,
                 milter_port: int | None = None, milter_timeout: int = 30) -> None:
        # Postfix daemons run as the postfix user, who cannot enter pytest's private (0700) tmp folders.
        self.mode = mode
        self.root = Path(tempfile.mkdtemp(prefix="relay-postfix-"))
        self.root.chmod(0o755)
        self.etc = self.root / "etc"
        for sub in ("etc", "data", "spool"):
            (self.root / sub).mkdir()
        self.smtpd_port, self.reinject_port = free_port(), free_port()
        values = dict(root=self.root, reinject_port=self.reinject_port, relay_domains=relay_domains,
                      sink_port=sink_port, backoff=backoff)
        main = MAIN.format(**values)
        front = f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd\n"
        if mode == "content_filter":
            main += f"content_filter = smtp:[127.0.0.1]:{relay_port}\n"
        elif mode == "milter":
            main += (f"smtpd_milters = inet:127.0.0.1:{milter_port or relay_port}\n"
                     "milter_default_action = tempfail\nmilter_protocol = 6\n"
                     f"milter_command_timeout = {milter_timeout}s\nmilter_content_timeout = {milter_timeout}s\n"
                     "milter_connect_timeout = 5s\n")
        else:
            front += f"  -o smtpd_proxy_filter=127.0.0.1:{relay_port}\n  -o smtpd_proxy_timeout=60s\n"
        (self.etc / "main.cf").write_text(main)
        (self.etc / "master.cf").write_text(front + REINJECT.format(**values) + SERVICES)

    def run(self, *args: str, command: str = "postfix") -> subprocess.CompletedProcess[str]:
        return subprocess.run([f"/usr/sbin/{command}", "-c", str(self.etc), *args], capture_output=True, text=True,
                              timeout=60)

    def start(self) -> Postfix:
        subprocess.run(["chown", "-R", "postfix", str(self.root / "data")], check=True)
        done = self.run("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr}{self.log()}")
        wait_port(self.smtpd_port)
        return self

    def stop(self) -> None:
        self.run("stop")
        time.sleep(0.3)
        shutil.rmtree(self.root, ignore_errors=True)

    def queue(self) -> list[dict[str, Any]]:
        """Postfix's queue as `postqueue -j` reports it (queue_name, recipients with delay_reason)."""
        done = self.run("-j", command="postqueue")
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def wait_queue(self, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            queue = self.queue()
            if predicate(queue) or time.monotonic() > deadline:
                return queue
            time.sleep(0.1)

    def purge(self) -> None:
        self.run("-d", "ALL", command="postsuper")

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""
