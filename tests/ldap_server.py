"""A private OpenLDAP slapd for tests: its own slapd.conf, databases and port on loopback.

Debian's `slapd` package (installed by `./dev test`) provides the binary; the test schema in
tests/ldap/ad-test.schema adds the Active Directory / Exchange attributes. Data is loaded
offline with slapadd before the server starts (fast even for 50,000 entries). Like AD, the
server caps a search without paging at 1,000 entries (`sizelimit`), so only paged searches read
a large tree; the bind account is an ordinary entry, not the rootdn, so the limits apply to it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SCHEMA_DIR = Path("/etc/ldap/schema")
TEST_SCHEMA = Path(__file__).parent / "ldap" / "ad-test.schema"
READER_PASSWORD = "lector-secreto"


def require_slapd() -> None:
    if not SLAPD.exists() or not SLAPADD.exists():
        if os.environ.get("RELAY_REQUIRE_LDAP") or os.environ.get("CI"):
            pytest.fail("slapd is not installed (apt-get install slapd ldap-utils; ./dev test does it)")
        pytest.skip("slapd is not installed (apt-get install slapd ldap-utils)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reader_dn(suffix: str) -> str:
    return f"cn=relay-reader,{suffix}"


@dataclass
class Slapd:
    root: Path
    suffixes: Sequence[str]
    port: int = field(default_factory=free_port)
    tls_port: int | None = None
    cert: Path | None = None
    key: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    sizelimit: int = 1000

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def db_dir(self, suffix: str) -> Path:
        return self.root / ("db-" + suffix.replace(",", "_").replace("=", "-"))

    def write_config(self) -> Path:
        lines = [f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson")]
        lines += [
            f"include {TEST_SCHEMA}",
            f"pidfile {self.root / 'slapd.pid'}",
            f"argsfile {self.root / 'slapd.args'}",
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            f"sizelimit size.soft={self.sizelimit} size.hard={self.sizelimit} size.prtotal=unlimited",
            "loglevel none",
        ]
        if self.cert and self.key:
            lines += [f"TLSCertificateFile {self.cert}", f"TLSCertificateKeyFile {self.key}"]
        for suffix in self.suffixes:
            db = self.db_dir(suffix)
            db.mkdir(parents=True, exist_ok=True)
            lines += [
                "database mdb",
                "maxsize 2147483648",
                f'suffix "{suffix}"',
                f'rootdn "cn=admin,{suffix}"',
                "rootpw admin-secreto",
                f"directory {db}",
                "index objectClass eq",
                "index mail,proxyAddresses eq",
                "access to attrs=userPassword by anonymous auth by * none",
                "access to * by * read",
            ]
        path = self.root / "slapd.conf"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def load(self, ldif_by_suffix: dict[str, str]) -> None:
        """Load each suffix's LDIF offline (slapadd), then the server can start."""
        conf = self.write_config()
        for suffix, ldif in ldif_by_suffix.items():
            path = self.root / f"{self.db_dir(suffix).name}.ldif"
            path.write_text(ldif, encoding="utf-8")
            done = subprocess.run([str(SLAPADD), "-q", "-f", str(conf), "-b", suffix, "-l", str(path)],
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"slapadd {suffix}: {done.stderr[-2000:]}"

    def start(self) -> None:
        conf = self.root / "slapd.conf"
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.tls_port:
            urls += f" ldaps://127.0.0.1:{self.tls_port}/"
        self.process = subprocess.Popen([str(SLAPD), "-d", "0", "-f", str(conf), "-h", urls],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"slapd exited: {self.process.stderr.read().decode()[-2000:]}"
                                     if self.process.stderr else "slapd exited")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("slapd did not listen within 20 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
