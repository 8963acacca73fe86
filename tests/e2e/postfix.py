"""A private Postfix instance from Debian's packages: own config and queue, loopback ports only."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

MASTER = """\
{smtpd_port} inet n - n - - smtpd
127.0.0.1:{reinject_port} inet n - n - - smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_relay_restrictions=permit_mynetworks,reject
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
content_filter = smtp:[127.0.0.1]:{relay_port}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_send_xforward_command = yes
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtp_tls_security_level = none
smtpd_tls_security_level = none
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
bounce_queue_lifetime = 0
"""


class Postfix:
    def __init__(self, root: Path, smtpd_port: int, reinject_port: int, relay_port: int, sink_port: int,
                 relay_domains: str) -> None:
        self.root = root
        self.etc = root / "etc"
        self.etc.mkdir(parents=True)
        (root / "data").mkdir()
        (root / "spool").mkdir()
        values = dict(root=root, smtpd_port=smtpd_port, reinject_port=reinject_port, relay_port=relay_port,
                      sink_port=sink_port, relay_domains=relay_domains)
        (self.etc / "main.cf").write_text(MAIN.format(**values))
        (self.etc / "master.cf").write_text(MASTER.format(**values))
        self.smtpd_port = smtpd_port

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/usr/sbin/postfix", "-c", str(self.etc), *args], capture_output=True, text=True,
                              timeout=60)

    def start(self) -> Postfix:
        subprocess.run(["chown", "-R", "postfix", str(self.root / "data")], check=True)
        done = self.run("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr}{self.log()}")
        return self

    def stop(self) -> None:
        self.run("stop")
        time.sleep(0.5)

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""
