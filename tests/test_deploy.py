"""The deployment files agree with each other and with the relay: container config, Dockerfile
health check, compose addresses, Postfix's main.cf/master.cf, the systemd unit.

No Docker engine runs on the test machines, so the image is not built here; what can be checked
without one is: the config validates, the health check command works against a real relay run
with that config, and the addresses the files name match."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from relay import yamlconf
from relay.cli import main
from relay.config import RelayConfig
from tests.e2e.harness import free_port, wait_port
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
CONTAINER_CONFIG = DEPLOY / "container" / "config.yaml"


def container_config() -> RelayConfig:
    data, node = yamlconf.read_yaml(CONTAINER_CONFIG)
    return yamlconf.validate(RelayConfig, data, node, str(CONTAINER_CONFIG))


def healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "the Dockerfile has a HEALTHCHECK ... CMD [...]"
    return list(json.loads(match.group(1)))


def test_dockerfile_copies_what_exists_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), item
    assert re.search(r"^USER relay$", text, re.M)
    assert text.count("FROM python:3.11-slim") == 2
    config = container_config()
    assert config.admin is not None and config.listen is not None
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.+)$", text, re.M)[0].split()}
    assert {config.listen.port, config.admin.address()[1]} <= exposed
    assert f":{config.admin.address()[1]}/readyz" in " ".join(healthcheck())


def test_compose_addresses_match_the_relay_and_postfix_files() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text(encoding="utf-8"))
    config = container_config()
    postfix_ip = compose["services"]["postfix"]["networks"]["mail"]["ipv4_address"]
    relay_ip = compose["services"]["relay"]["networks"]["mail"]["ipv4_address"]
    assert config.trust.xforward_hosts == (postfix_ip,)  # the relay believes exactly that Postfix
    main_cf = (DEPLOY / "compose" / "postfix" / "main.cf").read_text(encoding="utf-8")
    master_cf = (DEPLOY / "compose" / "postfix" / "master.cf").read_text(encoding="utf-8")
    assert config.listen is not None
    assert f"content_filter = smtp:[{relay_ip}]:{config.listen.port}" in main_cf
    host, port = config.upstream.removeprefix("smtp://").split(":")
    assert host == "postfix" and re.search(rf"^{port}\s+inet .*smtpd$", master_cf, re.M)
    assert f"-o mynetworks={relay_ip}/32" in master_cf and "-o content_filter=\n" in master_cf
    published = compose["services"]["relay"]["ports"]
    assert all(p.startswith("127.0.0.1:") for p in published)  # admin pages: host loopback only


@pytest.mark.skipif(not shutil.which("postconf"), reason="Postfix is installed by ./dev test")
def test_postfix_accepts_the_compose_main_and_master_cf() -> None:
    folder = str(DEPLOY / "compose" / "postfix")
    for args in (["-n"], ["-M"]):
        done = subprocess.run(["postconf", "-c", folder, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "warning" not in done.stderr, done.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "policy-relay.service").read_text(encoding="utf-8")
    assert "Type=notify" in unit and "ExecReload=" in unit and "relay reload" in unit
    local = unit.replace("/opt/policy-relay/.venv/bin/relay", str(Path(sys.executable).parent / "relay"))
    (tmp_path / "policy-relay.service").write_text(local, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "policy-relay.service")],
                          capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "policy-relay.service" in line]
    assert problems == [], problems


def test_the_image_health_check_passes_against_a_relay_on_the_container_config(tmp_path: Path) -> None:
    """The container config, with its absolute paths moved into a temporary folder, starts a relay;
    the Dockerfile's HEALTHCHECK command (port for port) then exits 0; and 1 once it stops."""
    data = yaml.safe_load(CONTAINER_CONFIG.read_text(encoding="utf-8"))
    smtp_port, admin_port = free_port(), free_port()
    data["listen"] = {"host": "127.0.0.1", "port": smtp_port}
    data["admin"]["listen"] = f"127.0.0.1:{admin_port}"
    pack, directory, _config = mounted()
    data["policy"], data["directory"] = str(pack), str(directory)  # what compose mounts by default
    for key in ("store", "pid_file"):
        data[key] = data[key].replace("/var/lib/policy-relay", str(tmp_path))
    data["admin"]["secret_file"] = data["admin"]["secret_file"].replace("/var/lib/policy-relay", str(tmp_path))
    data["upstream"] = f"maildir:{tmp_path / 'maildir'}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    command = [sys.executable if c == "python" else c for c in healthcheck()]
    command = [c.replace(":8025/", f":{admin_port}/") for c in command]
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--init", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(admin_port)
        deadline = time.monotonic() + 15
        while subprocess.run(command, capture_output=True, timeout=30).returncode != 0:
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.2)
        assert (tmp_path / "admin.secret").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0
    warnings = [json.loads(line) for line in err.decode().splitlines() if '"no_admin_account"' in line]
    assert warnings and warnings[0]["level"] == "warning", err.decode()[-2000:]  # accounts: [] is said aloud


def compose_mounts() -> dict[str, Path]:
    """Container path -> host file of the relay's bind mounts in the compose file, with the
    `${VAR:-default}` defaults compose would use when the variables are unset."""
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text(encoding="utf-8"))
    mounts: dict[str, Path] = {}
    for volume in compose["services"]["relay"]["volumes"]:
        source, target = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (DEPLOY / "compose" / source).resolve()
    return mounts


def mounted() -> tuple[Path, Path, Path]:
    """The pack, directory and config files compose mounts by default."""
    config = container_config()
    mounts = compose_mounts()
    return mounts[config.policy], mounts[config.directory], mounts["/etc/policy-relay/config.yaml"]


def test_config_pack_and_directory_are_mounted_not_baked_in() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = " ".join(re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M)).split()
    assert not {"policies", "examples", "deploy/container/config.yaml", "config.example.yaml"} & set(copied), copied
    assert "-c requirements.lock" in text  # the image gets the pinned versions
    assert re.search(r'^CMD \["serve", "--init", "--config", "/etc/policy-relay/config.yaml"\]$', text, re.M)
    pack, directory, config = mounted()
    assert config == CONTAINER_CONFIG.resolve()
    for path in (pack, directory, config):
        assert path.is_file() and ROOT in path.parents, path  # inside the repository, never ../shared
    assert main(["validate", str(pack), str(directory)]) == 0
