"""Bad YAML is refused with file, line, field and a suggested fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.cli import main
from relay.directory import load_directory
from relay.policy.pack import load_pack
from relay.yamlconf import ConfigError
from tests.helpers import POLICIES

GOOD = (POLICIES / "barrancabermeja.yaml").read_text(encoding="utf-8")


def broken(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, loader=load_pack) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        loader(path)
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_misspelt_field_names_line_and_suggests(tmp_path: Path) -> None:
    text = GOOD.replace("    internal_only: true", "    internal_onyl: true")
    [problem] = problems(broken(tmp_path, text))
    assert problem.startswith(f"{tmp_path / 'pack.yaml'}:{line_of(text, 'internal_onyl')}:")
    assert "rules[3].internal_onyl" in problem and "did you mean 'internal_only'" in problem


def test_unknown_kind_lists_the_kinds(tmp_path: Path) -> None:
    text = GOOD.replace("kind: mass_bcc", "kind: mass_bc")
    [problem] = problems(broken(tmp_path, text))
    assert f":{line_of(text, 'kind: mass_bc')}:" in problem or "rules[4]" in problem
    assert "mass_bcc" in problem and "disconnect" in problem


def test_unknown_kind_suggests_the_closest(tmp_path: Path) -> None:
    text = GOOD.replace("kind: mass_bcc", "kind: mass_bc")
    [problem] = problems(broken(tmp_path, text))
    assert "did you mean 'mass_bcc'?" in problem


def test_bad_action_for_kind(tmp_path: Path) -> None:
    text = GOOD.replace("    kind: mass_bcc\n", "    kind: mass_bcc\n    action: hold\n")
    [problem] = problems(broken(tmp_path, text))
    assert "action 'hold' is not possible for kind mass_bcc" in problem and "rewrite" in problem


def test_unknown_placeholder(tmp_path: Path) -> None:
    text = GOOD.replace("propia cuenta o desde un buzón", "propia cuenta {nombre} o desde un buzón")
    [problem] = problems(broken(tmp_path, text))
    assert "unknown placeholder {nombre}" in problem and "rules[2]" in problem


def test_duplicate_ids_and_keys(tmp_path: Path) -> None:
    text = GOOD.replace("id: mass-list-bcc-only", "id: open-relay-guard")
    assert "used twice" in problems(broken(tmp_path, text))[0]
    dup = broken(tmp_path, "pack: x\npack: y\n", "dup.yaml")
    [problem] = problems(dup)
    assert ":2:" in problem and "duplicate key 'pack'" in problem


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    [problem] = problems(broken(tmp_path, "pack: x\nrules: [\n  - a: b\n"))
    assert "YAML syntax" in problem and problem.split(":")[1].isdigit()


def test_bad_regex_term(tmp_path: Path) -> None:
    text = GOOD.replace('"publicacion*": 2', '"re:(unclosed": 2')
    assert "bad regular expression" in problems(broken(tmp_path, text))[0]


def test_directory_errors(tmp_path: Path) -> None:
    text = ("domains: [x.gov.co]\ntimezone: America/Bogot\nworking_hours:\n  mon: ['18:00-08:00']\n"
            "people:\n  - address: a@x.gov.co\n    holidays: ZZ\n")
    found = problems(broken(tmp_path, text, "dir.yaml"), load_directory)
    assert any(":2: timezone" in p and "America/Bogota" in p for p in found)
    assert any(":4: working_hours" in p and "crosses midnight" not in p and "ends before" in p for p in found)
    assert any(":7: people[0].holidays" in p for p in found)


def test_delegate_must_be_a_person(tmp_path: Path) -> None:
    text = "domains: [x.gov.co]\nservice_mailboxes:\n  - address: s@x.gov.co\n    delegates: [ghost@x.gov.co]\n"
    assert "ghost@x.gov.co" in problems(broken(tmp_path, text, "dir.yaml"), load_directory)[0]


def test_validate_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(POLICIES / "pasto.yaml")]) == 0
    bad = broken(tmp_path, GOOD.replace("cites: \"Circular 005-20 (Barrancabermeja), numeral 1:", "citas: \"x"))
    assert main(["validate", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "add 'cites:'" in err and "unknown field" in err


def test_shipped_config_example_validates() -> None:
    root = POLICIES.parent
    assert main(["validate", str(root / "config.example.yaml")]) == 0


@pytest.mark.parametrize(("listen", "hint"), [
    ("127.0.0.1:8895", "inet:127.0.0.1:8895"),
    ("inet:127.0.0.1:99999", "inet:127.0.0.1:8895"),
    ("unix:relative/path", "unix:/var/spool/postfix"),
])
def test_a_bad_milter_address_names_its_line_and_shows_the_forms(tmp_path: Path, listen: str, hint: str) -> None:
    from relay.config import load_config

    example = (Path(__file__).resolve().parent.parent / "config.example.yaml").read_text(encoding="utf-8")
    text = example.replace("store: sqlite:", f'milter:\n  listen: "{listen}"\nstore: sqlite:', 1)
    path = broken(tmp_path, text.replace("policies/", str(POLICIES) + "/").replace(
        "../shared/", str(POLICIES.parent.parent / "shared") + "/"), "relay.yaml")
    [problem] = problems(path, load_config)
    line = line_of(text, f'  listen: "{listen}"')
    assert problem.startswith(f"{path}:{line}: milter.listen:"), problem
    assert hint in problem


def test_a_bad_event_loop_names_its_line_and_the_choices(tmp_path: Path) -> None:
    from relay.config import load_config

    example = (Path(__file__).resolve().parent.parent / "config.example.yaml").read_text(encoding="utf-8")
    text = example.replace("event_loop: auto", "event_loop: tokio")
    path = broken(tmp_path, text.replace("policies/", str(POLICIES) + "/").replace(
        "../shared/", str(POLICIES.parent.parent / "shared") + "/"), "relay.yaml")
    [problem] = problems(path, load_config)
    assert problem.startswith(f"{path}:{line_of(text, 'event_loop: tokio')}: event_loop:"), problem
    assert "uvloop" in problem and "asyncio" in problem


@pytest.mark.parametrize("value", ["0", "-2", "many", "true", "1.5"])
def test_a_bad_workers_count_names_its_line_and_the_forms(tmp_path: Path, value: str) -> None:
    from relay.config import load_config

    example = (Path(__file__).resolve().parent.parent / "config.example.yaml").read_text(encoding="utf-8")
    text = example.replace("workers: 1", f"workers: {value}")
    path = broken(tmp_path, text.replace("policies/", str(POLICIES) + "/").replace(
        "../shared/", str(POLICIES.parent.parent / "shared") + "/"), "relay.yaml")
    [problem] = problems(path, load_config)
    assert problem.startswith(f"{path}:{line_of(text, f'workers: {value}')}: workers:"), problem
    assert "workers: auto" in problem and "workers: 2" in problem


def test_workers_auto_is_the_cores_this_process_may_use() -> None:
    import os

    from relay.config import RelayConfig

    base = {"policy": "p.yaml", "directory": "d.yaml"}
    # The default stays one process: the per-client limits are counted per process (README, Workers)
    assert RelayConfig.model_validate(base).worker_count() == 1
    auto = RelayConfig.model_validate({**base, "workers": "auto"})
    assert auto.workers == "auto" and auto.worker_count() == len(os.sched_getaffinity(0))
    assert RelayConfig.model_validate({**base, "workers": 1}).worker_count() == 1
    assert RelayConfig.model_validate({**base, "workers": 3}).worker_count() == 3
