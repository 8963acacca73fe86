"""What a newcomer gets: a fresh clone of the committed HEAD with nothing beside it, the wheel built
from it, and an empty virtualenv with that wheel installed. Built once per test run, shared by
tests/test_first_run.py and tests/test_wheel.py (the install from the package mirrors is the slow
part: about a minute on a loaded 2-core machine)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.helpers import ROOT

PIP = ["-m", "pip", "install", "-q", "--disable-pip-version-check"]


@dataclass(frozen=True)
class Fresh:
    base: Path    # an empty temporary folder: no ../shared beside the clone
    clone: Path   # git clone of the worktree's committed HEAD
    wheel: Path   # python -m build --wheel of the clone
    venv: Path    # a new virtualenv with the wheel installed under requirements.lock

    @property
    def relay(self) -> Path:
        return self.venv / "bin" / "relay"


def run(args: list[str | Path], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@cache
def fresh_clone() -> tuple[Path, Path]:
    base = Path(tempfile.mkdtemp(prefix="relay-first-run-"))
    atexit.register(shutil.rmtree, base, True)
    clone = base / "policy-relay"
    head = run(["git", "rev-parse", "HEAD"], ROOT).stdout.strip()
    run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, clone], base)
    run(["git", "checkout", "--quiet", "--detach", head], clone)
    assert not (base / "shared").exists() and not (clone.parent / "shared").exists()
    return base, clone


@cache
def fresh() -> Fresh:
    base, clone = fresh_clone()
    dist = base / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, clone], clone)
    [wheel] = dist.glob("policy_relay-*.whl")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", venv], base)
    run([venv / "bin" / "python", *PIP, "-c", clone / "requirements.lock", wheel], base)
    # `./dev serve` installs into $VENV unless its stamp is newer than pyproject.toml: this venv has
    # what that step would install (the runtime dependencies and the relay of the same commit).
    (venv / ".installed-runtime").touch()
    return Fresh(base, clone, wheel, venv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the relay exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def config_on_free_ports(clone: Path, name: str, var: str = "var") -> tuple[Path, int, int]:
    """config.example.yaml as it is, beside it (so its relative paths mean the same), with its two
    listening ports moved to free ones (the test machine is shared) and, when `var` is given,
    its var/ folder (store, Maildir, secret, pid) renamed so two tests keep apart."""
    smtp, admin = free_port(), free_port()
    text = (clone / "config.example.yaml").read_text(encoding="utf-8")
    assert "  port: 10025\n" in text and "listen: 127.0.0.1:8025 " in text
    text = text.replace("  port: 10025\n", f"  port: {smtp}\n").replace(
        "listen: 127.0.0.1:8025 ", f"listen: 127.0.0.1:{admin} ")
    text = text.replace(" var/", f" {var}/").replace(":var/", f":{var}/")
    path = clone / name
    path.write_text(text, encoding="utf-8")
    return path, smtp, admin


def clean_env() -> dict[str, str]:
    """The environment of a new shell: no virtualenv of ours, no test clock."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "POLICY_RELAY_TEST_CLOCK") and not k.startswith("PYTEST")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not re.search(r"\.venv|/venv", p))
    return env
