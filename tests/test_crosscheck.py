"""A pack cannot silently misfire: `relay validate` (and serve/reload, through load_config) refuse a
pack whose rules name roles or addresses the directory does not have, a directory whose lists are
outside the institution's domains, and (with a directory) a pack whose own examples fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.config import load_config
from relay.policy.rules import KINDS
from relay.yamlconf import ConfigError
from tests.helpers import INSTITUTIONS, POLICIES, ROOT
from tests.test_ldap_directory import relay_config, tree  # noqa: F401  (the slapd fixture)


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `relay` command (the console script next to this Python, else `python -m relay`)."""
    script = Path(sys.executable).parent / "relay"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "relay"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def edited(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (POLICIES / f"{name}.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


def validate_against(pack: Path, name: str) -> subprocess.CompletedProcess[str]:
    return relay("validate", "--directory", str(INSTITUTIONS / f"{name}.yaml"), str(pack))


def test_the_shipped_packs_fit_their_directories() -> None:
    for name in ("barrancabermeja", "bogota", "cancilleria", "pasto"):
        done = validate_against(POLICIES / f"{name}.yaml", name)
        assert done.returncode == 0, done.stderr
        assert "examples pass" in done.stdout


def test_a_role_no_one_has_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    pack = edited(tmp_path, "cancilleria", "urgent_roles: [directivo]", "urgent_roles: [directiva]")
    done = validate_against(pack, "cancilleria")
    assert done.returncode == 3, done.stdout
    [problem] = [p for p in done.stderr.splitlines() if "directiva" in p]
    assert problem.startswith(f"{pack}:{line_of(pack, 'directiva')}: rules[")
    assert ".urgent_roles[0]: no one in the directory has the role 'directiva'" in problem
    assert "did you mean 'directivo'?" in problem
    assert "Traceback" not in done.stderr


def test_a_moderator_not_in_the_directory_is_refused(tmp_path: Path) -> None:
    pack = edited(tmp_path, "pasto", "moderators: [intranet@pasto.gov.co]", "moderators: [intranett@pasto.gov.co]")
    done = validate_against(pack, "pasto")
    assert done.returncode == 3
    assert f"{pack}:{line_of(pack, 'intranett@')}:" in done.stderr
    assert ".moderators[0]: intranett@pasto.gov.co is not in the directory (did you mean 'intranet@pasto.gov.co'?)" \
        in done.stderr


@pytest.mark.parametrize(("name", "old", "new", "field"), [
    ("pasto", "allowed_senders: [intranet@pasto.gov.co, secretarias@pasto.gov.co]",
     "allowed_senders: [intranet@pasto.gov.co, nadie@pasto.gov.co]", ".allowed_senders[1]:"),
    ("pasto", "exempt_senders: [intranet@pasto.gov.co, despacho@pasto.gov.co]",
     "exempt_senders: [intranet@pasto.gov.co, nadie@pasto.gov.co]", ".exempt_senders[1]:"),
    ("bogota", "alert_to: [seguridad.informacion@alcaldiabogota.gov.co]",
     "alert_to: [nadie@alcaldiabogota.gov.co]", ".alert_to[0]:"),
    ("barrancabermeja", "mailbox: soportetic@barrancabermeja.gov.co",
     "mailbox: nadie@barrancabermeja.gov.co", ".mailbox:"),
])
def test_every_address_field_is_checked(tmp_path: Path, name: str, old: str, new: str, field: str) -> None:
    pack = edited(tmp_path, name, old, new)
    done = validate_against(pack, name)
    assert done.returncode == 3
    [problem] = [p for p in done.stderr.splitlines() if "nadie@" in p and "is not in the directory" in p]
    assert problem.startswith(f"{pack}:{line_of(pack, 'nadie@')}: rules[") and field in problem


def test_an_address_outside_the_institution_is_refused(tmp_path: Path) -> None:
    pack = edited(tmp_path, "pasto", "moderators: [intranet@pasto.gov.co]", "moderators: [jefe@gmail.com]")
    done = validate_against(pack, "pasto")
    assert done.returncode == 3
    assert "jefe@gmail.com is not an address of the institution (pasto.gov.co)" in done.stderr


def test_a_list_outside_the_institutions_domains_is_refused(tmp_path: Path) -> None:
    text = (INSTITUTIONS / "pasto.yaml").read_text(encoding="utf-8")
    path = tmp_path / "dir.yaml"
    path.write_text(text.replace("- address: servidores@pasto.gov.co", "- address: servidores@pasto.gob.co"),
                    encoding="utf-8")
    done = relay("validate", str(path))
    assert done.returncode == 3
    assert f"{path}:{line_of(path, 'servidores@pasto.gob.co')}: lists[0].address: servidores@pasto.gob.co is not " \
        "in the institution's domains (pasto.gov.co)" in done.stderr


def test_a_failing_example_is_an_error_when_a_directory_is_given(tmp_path: Path) -> None:
    pack = edited(tmp_path, "cancilleria", "expect: {verdict: hold, rules: [right-to-disconnect]}",
                  "expect: {verdict: deliver, rules: [right-to-disconnect]}")
    assert relay("validate", str(pack)).returncode == 0  # alone: no directory to run it against
    done = validate_against(pack, "cancilleria")
    assert done.returncode == 3
    [problem] = done.stderr.splitlines()
    assert problem.startswith(f"{pack}:") and "examples[1]: example " in problem
    assert "verdict hold, expected deliver" in problem


def config_for(tmp_path: Path, pack: Path, name: str) -> Path:
    config = tmp_path / "relay.yaml"
    config.write_text(f"policy: {pack}\ndirectory: {INSTITUTIONS / f'{name}.yaml'}\n", encoding="utf-8")
    return config


def test_serve_and_reload_refuse_it_too(tmp_path: Path) -> None:
    """serve and reload read the config with load_config: the same cross-checks refuse the pack."""
    pack = edited(tmp_path, "cancilleria", "urgent_roles: [directivo]", "urgent_roles: [directiva]")
    config = config_for(tmp_path, pack, "cancilleria")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert any("urgent_roles[0]" in p and "did you mean 'directivo'" in p for p in info.value.problems)
    done = relay("validate", str(config))
    assert done.returncode == 3 and "directiva" in done.stderr
    good = config_for(tmp_path, POLICIES / "cancilleria.yaml", "cancilleria")
    assert load_config(good).policy.endswith("cancilleria.yaml")


def test_validating_a_config_runs_the_packs_examples(tmp_path: Path) -> None:
    pack = edited(tmp_path, "cancilleria", "expect: {verdict: hold, rules: [right-to-disconnect]}",
                  "expect: {verdict: reject, rules: [right-to-disconnect]}")
    done = relay("validate", str(config_for(tmp_path, pack, "cancilleria")))
    assert done.returncode == 3 and "expected reject" in done.stderr


def test_a_default_is_not_the_pack_authors_typo(tmp_path: Path) -> None:
    """Only values the pack writes are checked: a kind's default role that no one has is no error."""
    pack = edited(tmp_path, "cancilleria", "    exempt_roles: [direccion_confianza_manejo]\n", "")
    directory = tmp_path / "dir.yaml"
    directory.write_text((INSTITUTIONS / "cancilleria.yaml").read_text(encoding="utf-8")
                         .replace("direccion_confianza_manejo", "otro_rol"), encoding="utf-8")
    done = relay("validate", "--directory", str(directory), str(pack))
    assert "direccion_confianza_manejo" not in done.stderr


def test_every_kind_declares_its_role_and_address_fields() -> None:
    """A new kind with a `*_roles`, `*_senders`, `moderators`, `alert_to` or `mailbox` field must say
    so in ROLE_FIELDS / ADDRESS_FIELDS, or the cross-checks would not see it."""
    for name, kind in KINDS.items():
        fields = set(kind.config.model_fields)
        assert set(kind.config.ROLE_FIELDS) <= fields and set(kind.config.ADDRESS_FIELDS) <= fields, name
        for field in fields:
            if field.endswith("_roles"):
                assert field in kind.config.ROLE_FIELDS, (name, field)
            if field.endswith("_senders") or field in ("moderators", "alert_to", "mailbox"):
                assert field in kind.config.ADDRESS_FIELDS, (name, field)



def test_a_config_with_an_ldap_directory_is_checked_against_the_server(tree: Any, tmp_path: Path) -> None:  # noqa: F811
    """`relay validate CONFIG` with `directory: ldap://…` reads the server and checks the pack
    against what it holds (roles and addresses the rules name, the examples)."""
    good = relay_config(tmp_path, tree, "pasto")
    done = relay("validate", str(good))
    assert done.returncode == 0 and "examples pass" in done.stdout, done.stderr
    data = yaml.safe_load(good.read_text(encoding="utf-8"))
    data["policy"] = str(edited(tmp_path, "pasto", "moderators: [intranet@pasto.gov.co]",
                                "moderators: [intranett@pasto.gov.co]"))
    good.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    done = relay("validate", str(good))
    assert done.returncode == 3 and "intranett@pasto.gov.co is not in the directory" in done.stderr, done.stderr
