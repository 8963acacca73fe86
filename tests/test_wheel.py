"""The wheel: `python -m build` of a fresh clone makes one that installs into an empty virtualenv
(with requirements.lock) and runs `relay validate` and `relay serve` on the examples; and the lock
pins every runtime dependency at a version pyproject accepts.

Decision (README, "Install on a server"): the wheel carries the program and the data the program
itself reads (the moderation pages' templates and stylesheet, py.typed); an institution's config,
pack and directory are passed by path, from the repository or the sdist."""

from __future__ import annotations

import signal
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.e2e.http import Client
from tests.helpers import ROOT
from tests.packaging import clean_env, config_on_free_ports, fresh, run, wait_port


def lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            [spec] = list(requirement.specifier)
            assert spec.operator == "==", line
            pins[requirement.name.lower().replace("_", "-")] = spec.version
    return pins


def test_the_lock_pins_every_runtime_dependency_at_a_version_pyproject_accepts() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = lock()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a dependency but not in requirements.lock (see its header to refresh it)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])
    for dev_only in ("pytest", "mypy", "ruff", "hypothesis", "selenium", "build"):
        assert dev_only not in pins, f"{dev_only} is a dev tool, not a runtime dependency"


def test_license_file_is_the_mit_license_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


@pytest.mark.e2e
def test_wheel_holds_the_program_and_its_data_files() -> None:
    wheel = fresh().wheel
    assert wheel.name.startswith("policy_relay-") and wheel.name.endswith("-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.relative_to(ROOT).as_posix() for p in (ROOT / "relay" / "web" / "templates").iterdir()}
    assert templates <= names, templates - names  # every template and the stylesheet
    assert "relay/py.typed" in names and "relay/cli.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "policies/", "examples/", "bench/")) for n in names)


@pytest.mark.e2e
def test_the_wheel_in_an_empty_venv_validates_and_serves_the_examples(tmp_path: Path) -> None:
    f = fresh()
    installed = run([f.venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"], f.base).stdout.lower()
    assert "policy-relay==" in installed or "policy_relay==" in installed
    for dev_only in ("pytest", "mypy", "hypothesis", "selenium"):  # runtime dependencies only
        assert f"\n{dev_only}==" not in f"\n{installed}", dev_only
    where = run([f.venv / "bin" / "python", "-c", "import relay; print(relay.__file__)"], tmp_path).stdout
    assert where.startswith(str(f.venv)), where  # the wheel's relay, not a source tree's

    files = [f.clone / "config.example.yaml", f.clone / "examples" / "demo" / "pack.yaml",
             f.clone / "examples" / "demo" / "directory.yaml",
             *sorted((f.clone / "policies").glob("*.yaml")),
             *sorted((f.clone / "examples" / "directories").glob("*.yaml"))]
    done = run([f.relay, "validate", *files], tmp_path, env=clean_env())
    assert done.stdout.count(": ok (") == len(files), done.stdout

    config, smtp, admin = config_on_free_ports(f.clone, "wheel-test.yaml", "var-wheel")
    # started from another folder: the config's relative paths are relative to the config file
    proc = subprocess.Popen([f.relay, "serve", "--init", "--config", config], cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(smtp, proc)
        wait_port(admin, proc)
        sent = subprocess.run([f.relay, "send", "--server", f"127.0.0.1:{smtp}", "--from", "ana@example.org",
                               "--to", "sofia.vargas@villaejemplo.gov.co"], capture_output=True, text=True,
                              timeout=60, env=clean_env())
        assert sent.returncode == 0 and "<- 250 2.0.0" in sent.stdout, sent.stdout + sent.stderr
        page = Client(admin).get("/login")  # rendered from the packaged templates
        assert page.status == 200 and "policy-relay" in page.text, page.text[:500]
        css = Client(admin).get("/static/relay.css")
        assert css.status == 200 and "{" in css.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert list((f.clone / "var-wheel" / "maildir" / "new").iterdir())
