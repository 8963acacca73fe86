"""A real DNS server for tests and benchmarks: Debian's dnsmasq on a loopback port, serving a test
zone and answering NXDOMAIN for every other name (no upstream, no network). `./dev test` installs
the `dnsmasq-base` package. Also a "black hole" nameserver that never answers (timeouts)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.dkim.sign import key_record
from tests.e2e.harness import free_port

DNSMASQ = "/usr/sbin/dnsmasq"

# The test world. 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24 are documentation ranges.
ZONE: dict[str, list[str]] = {
    "txt": [
        # Barrancabermeja: its own servers, and a bulk-mail provider it authorises (include)
        'barrancabermeja.gov.co,"v=spf1 ip4:192.0.2.0/24 include:_spf.boletines.example -all"',
        '_spf.boletines.example,"v=spf1 ip4:203.0.113.0/24 -all"',
        '_dmarc.barrancabermeja.gov.co,"v=DMARC1; p=reject; rua=mailto:dmarc@barrancabermeja.gov.co"',
        # Pasto: SPF with a soft fail, no DMARC
        'pasto.gov.co,"v=spf1 rr=e:f mx ~all"',  # rr=: RFC 6652's failure-report request, a modifier with ':'
        # Bogotá and Cancillería: SPF and a quarantine policy
        'alcaldiabogota.gov.co,"v=spf1 ip4:192.0.2.128/25 -all"',
        '_dmarc.alcaldiabogota.gov.co,"v=DMARC1; p=quarantine"',
        # Cancillería explains its SPF fail (exp=, RFC 7208 §6.2)
        'cancilleria.gov.co,"v=spf1 a:correo.cancilleria.gov.co -all exp=explica._spf.cancilleria.gov.co"',
        'explica._spf.cancilleria.gov.co,"%{i} no es un servidor de correo de %{d}"',
        '_dmarc.cancilleria.gov.co,"v=DMARC1; p=reject"',
        # Bogotá's Secretaría General: the /24 around its own address, and its MX (CIDR on the bare a)
        'secretariageneral.gov.co,"v=spf1 a/24 mx -all"',
        '_dmarc.secretariageneral.gov.co,"v=DMARC1; p=none; rua=mailto:dmarc@secretariageneral.gov.co"',
        # gmail's own SPF, for a webmail sender
        'gmail.com,"v=spf1 ip4:198.51.100.0/24 ~all"',
        # SPF macros (RFC 7208 §7): a per-sender allow list in DNS, and a record with a bad macro
        'macros.example,"v=spf1 exists:%{ir}.%{l1r+-}.permitidos.%{d} -all"',
        'malo.example,"v=spf1 a:%{x}.malo.example -all"',
        # a mailing service whose SPF covers its own bounce domain only: it proves our From by DKIM
        'envios.example,"v=spf1 ip4:198.51.100.90 -all"',
        # DKIM keys (tests/dkim): two of ours, and a stranger's own domain
        f"relay2026._domainkey.barrancabermeja.gov.co,{key_record()}",
        f"relay2026._domainkey.pasto.gov.co,{key_record()}",
        f"relay2026._domainkey.evil.example,{key_record()}",
        # a mailing-list service that seals what it forwards (ARC, RFC 8617) with the same test key
        f"relay2026._domainkey.listas.example,{key_record()}",
        # RFC 8463 Appendix A.2's Ed25519 key, for the same message's other signature
        'brisbane._domainkey.football.example.com,"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="',
        # RFC 8463 Appendix A.2's RSA key: the corpus's rfc-8463.eml is signed with it
        'test._domainkey.football.example.com,"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR'
        'iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3'
        'rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"',
    ],
    "mx": [
        "barrancabermeja.gov.co,mx.barrancabermeja.gov.co,10",
        "pasto.gov.co,mx.pasto.gov.co,10",
        "gmail.com,gmail-smtp-in.l.google.com,5",
        "gmail.com,alt1.gmail-smtp-in.l.google.com,10",
        "hotmail.com,hotmail-com.olc.protection.outlook.com,2",
        "yahoo.com,mta5.am0.yahoodns.net,1",
        "outlook.com,outlook-com.olc.protection.outlook.com,5",
        "example.org,mail.example.org,10",
        "ciudadano.example,mx1.ciudadano.example,10",
        "ciudadano.example,mx2.ciudadano.example,20",
        "caido.example,mx.caido.example,10",
    ],
    "host": [
        "mx.barrancabermeja.gov.co,192.0.2.25",
        "mx.pasto.gov.co,192.0.2.77",
        "correo.cancilleria.gov.co,192.0.2.200",
        "gmail-smtp-in.l.google.com,198.51.100.25",
        "alt1.gmail-smtp-in.l.google.com,198.51.100.26",
        "hotmail-com.olc.protection.outlook.com,198.51.100.40",
        "mta5.am0.yahoodns.net,198.51.100.50",
        "outlook-com.olc.protection.outlook.com,198.51.100.41",
        "mail.example.org,198.51.100.60",
        "mx1.ciudadano.example,127.0.0.2",  # preferred, but nothing listens there: the next one
        "mx2.ciudadano.example,127.0.0.1",
        "mx.caido.example,127.0.0.3",  # loopback, nothing listens: a domain whose mail server is down
        "solo-a.example,198.51.100.70",  # no MX, only an address: mail goes to it (implicit MX)
        "secretariageneral.gov.co,198.51.100.10",  # its /24 holds its own mail servers
        "7.2.0.192.ventas.permitidos.macros.example,127.0.0.2",  # ventas@ (and ventas+x@) from 192.0.2.7
    ],
}


class DnsServer:
    def __init__(self, zone: dict[str, list[str]] | None = None) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="relay-dns-"))
        self.zone = zone or ZONE
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DnsServer:
        lines = [f"port={self.port}", "listen-address=127.0.0.1", "bind-interfaces", "no-resolv", "no-hosts",
                 "pid-file=", "local=/#/", "local-ttl=300", "user=root" if _root() else "", "log-queries",
                 f"log-facility={self.folder / 'dnsmasq.log'}"]
        lines += [f"txt-record={r}" for r in self.zone.get("txt", [])]
        lines += [f"mx-host={r}" for r in self.zone.get("mx", [])]
        lines += [f"host-record={r}" for r in self.zone.get("host", [])]
        conf = self.folder / "dnsmasq.conf"
        conf.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
        self.proc = subprocess.Popen([DNSMASQ, "-k", f"--conf-file={conf}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq did not start: {err[-500:]}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        query = bytes.fromhex("abcd01000001000000000000") + b"\x05gmail\x03com\x00\x00\x0f\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(query, ("127.0.0.1", self.port))
                return sock.recv(512)[:2] == b"\xab\xcd"
            except OSError:
                return False

    def queries(self) -> int:
        """How many queries dnsmasq has logged (cache checks)."""
        log = self.folder / "dnsmasq.log"
        return sum(1 for line in log.read_text(errors="replace").splitlines() if " query[" in line) \
            if log.exists() else 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


class BlackHole:
    """A UDP port that receives queries and never answers: every lookup times out."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def stop(self) -> None:
        self.sock.close()


def _root() -> bool:
    import os

    return os.geteuid() == 0
