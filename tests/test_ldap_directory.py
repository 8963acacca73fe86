"""The LDAP directory against a real OpenLDAP slapd (Debian's package) on a loopback port.

The tree is built from the acceptance institutions the AD way (tests/ldap_tree.py), and every
public acceptance scenario is decided with the directory from LDAP: the results must be the same
as with the YAML files.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay import ldapdir, yamlconf
from relay.cli import main as relay_main
from relay.config import load_config
from relay.directory import MailingList, Person, ServiceMailbox
from relay.ldapdir import load_directory_file as load_directory
from tests.helpers import INSTITUTIONS, PACK_NAMES, ROOT, SHARED
from tests.ldap_server import Slapd, free_port, require_slapd
from tests.ldap_tree import build_tree, write_source

SCENARIOS = sorted((SHARED / "acceptance" / "scenarios").glob("*.yaml"))


def _institution(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((INSTITUTIONS / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


def _runner() -> Any:
    spec = importlib.util.spec_from_file_location("acceptance_run", SHARED / "acceptance" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = relay_main(list(argv))
    return code, out.getvalue(), err.getvalue()


class Tree:
    """One slapd with the four institutions, and a source file (directory: ldap://… + ldap:) each."""

    def __init__(self, root: Path, slapd: Slapd, trees: dict[str, tuple[str, str, dict[str, Any]]]) -> None:
        self.root = root
        self.slapd = slapd
        self.trees = trees
        self.sources = {name: write_source(root / f"{name}-ldap.yaml", slapd.url, suffix, mapping)
                        for name, (suffix, _, mapping) in trees.items()}


def start_tree(root: Path, names: tuple[str, ...] = PACK_NAMES, **slapd_options: Any) -> Tree:
    require_slapd()
    trees = {name: build_tree(name, _institution(name)) for name in names}
    server_dir = root / "slapd"
    server_dir.mkdir(parents=True)
    slapd = Slapd(server_dir, [t[0] for t in trees.values()], **slapd_options)
    slapd.load({suffix: ldif for suffix, ldif, _ in trees.values()})
    slapd.start()
    return Tree(root, slapd, trees)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    t = start_tree(tmp_path_factory.mktemp("ldap"))
    yield t
    t.slapd.stop()


@pytest.fixture
def own_tree(tmp_path: Path) -> Iterator[Tree]:
    """A server of its own, for tests that stop and start it."""
    t = start_tree(tmp_path, ("barrancabermeja",))
    yield t
    t.slapd.stop()


# -- the same directory as the YAML files ---------------------------------------------------------


@pytest.mark.parametrize("name", PACK_NAMES)
def test_ldap_directory_equals_the_yaml_file(tree: Tree, name: str) -> None:
    from_yaml = load_directory(INSTITUTIONS / f"{name}.yaml")
    from_ldap = load_directory(tree.sources[name])
    assert isinstance(from_ldap, ldapdir.LdapDirectory) and from_ldap.stale is None
    assert from_ldap.name == from_yaml.name and from_ldap.domains == from_yaml.domains
    assert from_ldap.networks == from_yaml.networks and from_ldap.timezone == from_yaml.timezone
    for entry in from_yaml.all_entries():
        assert from_ldap.find(entry.address) == entry, entry.address
    assert len(from_ldap.all_entries()) == len(from_yaml.all_entries())
    # proxyAddresses smtp: aliases find the same person; X500: values are not addresses.
    for person in (e for e in from_yaml.all_entries() if isinstance(e, Person)):
        local, _, domain = person.address.partition("@")
        assert from_ldap.find(f"{local}.alias@{domain}") == person
    assert from_ldap.snapshot["warnings"] == []
    assert len(from_ldap.snapshot["unmapped_groups"]) == 1  # the Comité de convivencia


def test_900_member_list_counted_through_nested_groups(tree: Tree) -> None:
    directory = load_directory(tree.sources["barrancabermeja"])
    funcionarios = directory.find("funcionarios@barrancabermeja.gov.co")
    assert funcionarios == MailingList("funcionarios@barrancabermeja.gov.co", 900)
    # 900 = 5 people + 895 accounts without mail, in three nested groups, one member listed twice.
    record = ldapdir.show(directory, "funcionarios@barrancabermeja.gov.co")
    assert record is not None and record["dn"].startswith("cn=funcionarios,ou=Listas")
    bogota = load_directory(tree.sources["bogota"]).find("colaboradores@alcaldiabogota.gov.co")
    assert isinstance(bogota, MailingList) and bogota.members == 3000  # more than the server's 1,000 limit


def test_delegates_from_attributes_and_from_nested_groups(tree: Tree) -> None:
    pmu = load_directory(tree.sources["barrancabermeja"]).find("pmu@barrancabermeja.gov.co")
    assert isinstance(pmu, ServiceMailbox)
    assert pmu.delegates == {"carlos.rueda@barrancabermeja.gov.co", "andres.mejia@barrancabermeja.gov.co"}
    pasto = load_directory(tree.sources["pasto"])
    intranet = pasto.find("intranet@pasto.gov.co")  # sendas-intranet > equipo-sendas-intranet > people
    assert isinstance(intranet, ServiceMailbox)
    assert intranet.delegates == {"yanet.bastidas@pasto.gov.co", "carolina.munoz@pasto.gov.co"}
    shown = ldapdir.show(pasto, "intranet@pasto.gov.co")
    assert shown is not None and all(v.startswith("group cn=sendas-intranet") for v in shown["why_delegates"].values())


# -- every acceptance scenario, from LDAP ---------------------------------------------------------


def _check_json(directory: Path, scenario: dict[str, Any], eml: Path) -> dict[str, Any]:
    envelope = scenario["envelope"]
    at = scenario["at"]
    argv = ["check", "--policy", str(ROOT / "policies" / f"{scenario['institution']}.yaml"),
            "--directory", str(directory), "--at", at if isinstance(at, str) else at.isoformat(),
            "--mail-from", envelope.get("mail_from") or ""]
    for rcpt in envelope["rcpt_to"]:
        argv += ["--rcpt", rcpt]
    if envelope.get("auth"):
        argv += ["--auth", envelope["auth"]]
    if envelope.get("client_ip"):
        argv += ["--client-ip", envelope["client_ip"]]
    code, out, err = run_cli(*argv, "--json", str(eml))
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_every_acceptance_scenario_same_result_from_ldap(tree: Tree, tmp_path: Path) -> None:
    run = _runner()
    assert SCENARIOS, "no acceptance scenarios found"
    failures = []
    for path in SCENARIOS:
        scenario = yaml.safe_load(path.read_text(encoding="utf-8"))
        eml = tmp_path / f"{path.stem}.eml"
        eml.write_bytes(scenario["message"].replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8"))
        name = scenario["institution"]
        with_yaml = _check_json(INSTITUTIONS / f"{name}.yaml", scenario, eml)
        with_ldap = _check_json(tree.sources[name], scenario, eml)
        problems = run.check(scenario, with_ldap)
        if problems or with_ldap != with_yaml:
            failures.append(f"{path.stem}: {problems or 'differs from the YAML directory'}")
    assert not failures, "\n".join(failures)


def test_public_runner_passes_with_the_directory_from_ldap(tree: Tree, tmp_path: Path) -> None:
    """The unchanged shared runner, with a `relay` that is handed the LDAP source instead of the
    institution file (the only difference), through the real command line."""
    wrapper = tmp_path / "relay-ldap"
    mapping = {str(INSTITUTIONS / f"{n}.yaml"): str(p) for n, p in tree.sources.items()}
    wrapper.write_text(
        f"#!{sys.executable}\nimport sys\nfrom relay.cli import main\nm = {mapping!r}\n"
        "sys.exit(main([m.get(a, a) for a in sys.argv[1:]]))\n", encoding="utf-8")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run([sys.executable, str(SHARED / "acceptance" / "run.py"), "--relay", str(wrapper)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert last == f"{len(SCENARIOS)} passed, 0 failed", last


# -- server down, back, refreshed -----------------------------------------------------------------


def test_down_at_start_uses_snapshot_down_at_refresh_keeps_back_refreshes(own_tree: Tree) -> None:
    source_path = own_tree.sources["barrancabermeja"]
    source = ldapdir.source_from_file(source_path)
    first = ldapdir.load(source)
    assert first.stale is None and source.snapshot_path.exists()
    assert stat.S_IMODE(source.snapshot_path.stat().st_mode) == 0o600
    own_tree.slapd.stop()
    # Down at start, snapshot on disk: the relay starts and decides with it, marked stale.
    at_start = ldapdir.load(source)
    assert at_start.stale and "LDAP unreachable" in at_start.stale
    assert at_start.entries.keys() == first.entries.keys()
    assert at_start.find("pmu@barrancabermeja.gov.co") == first.find("pmu@barrancabermeja.gov.co")
    code, out, _ = run_cli("directory", "stats", "--directory", str(source_path), "--json")
    assert code == 0 and json.loads(out)["people"] == 5
    # Down at refresh: the running directory stays (the same object's data, marked stale).
    kept = ldapdir.load(source, previous=first)
    assert kept.stale and kept.entries is first.entries
    # Back, with a new person: the refresh takes it.
    own_tree.slapd.start()
    add_person(own_tree, "barrancabermeja", "nueva.persona@barrancabermeja.gov.co", "Nueva Persona")
    back = ldapdir.load(source, previous=kept)
    assert back.stale is None
    assert isinstance(back.find("nueva.persona@barrancabermeja.gov.co"), Person)


def test_no_server_and_no_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    source_path = write_source(tmp_path / "x-ldap.yaml", f"ldap://127.0.0.1:{free_port()}", "dc=x,dc=gov,dc=co",
                               build_tree("barrancabermeja", _institution("barrancabermeja"))[2], timeout=2)
    with pytest.raises(ldapdir.DirectoryUnavailable, match="no snapshot"):
        load_directory(source_path)
    code, _, err = run_cli("directory", "stats", "--directory", str(source_path))
    assert code == 1 and "no snapshot" in err


def test_refresh_drops_too_many_people_is_refused(own_tree: Tree) -> None:
    source = ldapdir.source_from_file(own_tree.sources["barrancabermeja"])
    first = ldapdir.load(source)
    emptied = source.settings.model_copy(update={"people": source.settings.people.model_copy(
        update={"filter": "(&(objectClass=user)(mail=nadie*))"})})
    refused = ldapdir.load(ldapdir.Source(source.url, emptied, source.file), previous=first)
    assert refused.entries is first.entries and refused.stale and "refused" in refused.stale


def add_person(tree: Tree, name: str, address: str, full_name: str) -> None:
    import ldap3

    suffix = tree.trees[name][0]
    conn = ldap3.Connection(ldap3.Server(tree.slapd.url), user=f"cn=admin,{suffix}", password="admin-secreto",
                            auto_bind=True)
    assert conn.add(f"cn={full_name},ou=Usuarios,{suffix}", ["user"],
                    {"cn": full_name, "sn": full_name.split()[-1], "mail": address, "displayName": full_name,
                     "employeeType": "Funcionario"}), conn.result
    conn.unbind()


def relay_config(tmp_path: Path, tree: Tree, name: str, **ldap: Any) -> Path:
    source = yaml.safe_load(tree.sources[name].read_text(encoding="utf-8"))
    source["ldap"]["password_file"] = str(tree.sources[name].parent / source["ldap"]["password_file"])
    source["ldap"]["snapshot"] = str(tmp_path / "var" / "directory.json")
    source["ldap"].update(ldap)
    config = {"hostname": "relay.test", "listen": None, "milter": {"listen": f"inet:127.0.0.1:{free_port()}"},
              "policy": str(ROOT / "policies" / f"{name}.yaml"), "upstream": f"maildir:{tmp_path / 'maildir'}",
              "store": f"sqlite:{tmp_path / 'relay.sqlite3'}", "pid_file": str(tmp_path / "relay.pid"), **source}
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_running_relay_refreshes_swaps_and_reports_stale(own_tree: Tree, tmp_path: Path) -> None:
    from relay.app import RelayApp

    config = relay_config(tmp_path, own_tree, "barrancabermeja")

    async def scenario() -> None:
        app = RelayApp.from_config(config)
        ldapdir.watch(app)
        try:
            before = app.rules
            assert isinstance(before.directory, ldapdir.LdapDirectory) and before.directory.stale is None
            assert b"relay_directory_stale 0.0" in app.metrics.render()
            own_tree.slapd.stop()
            await ldapdir.refresh_once(app)
            assert app.rules.directory.entries is before.directory.entries  # the old data stays
            assert app.rules.pack is before.pack and app.rules.generation == before.generation
            assert b"relay_directory_stale 1.0" in app.metrics.render()
            decision, _ = app.disposer.decide(*_staff_to_list())
            assert decision.verdict.value == "reject"  # still knows the list and who may use it
            own_tree.slapd.start()
            add_person(own_tree, "barrancabermeja", "otra.persona@barrancabermeja.gov.co", "Otra Persona")
            assert await ldapdir.refresh_once(app)
            assert app.rules.directory.find("otra.persona@barrancabermeja.gov.co") is not None
            assert b"relay_directory_stale 0.0" in app.metrics.render()
            # `relay reload` (SIGHUP) reads the server too, and swaps pack and directory together.
            add_person(own_tree, "barrancabermeja", "tercera.persona@barrancabermeja.gov.co", "Tercera Persona")
            result = await app.reload()
            assert result.ok and app.rules.generation == before.generation + 1
            assert app.rules.directory.find("tercera.persona@barrancabermeja.gov.co") is not None
            # A reload while the server is down keeps the relay on the last good data.
            own_tree.slapd.stop()
            result = await app.reload()
            assert result.ok and app.rules.directory.stale
            assert app.rules.directory.find("tercera.persona@barrancabermeja.gov.co") is not None
        finally:
            await app.disposer.close()

    asyncio.run(scenario())


def test_relay_starts_with_the_snapshot_when_ldap_is_down(own_tree: Tree, tmp_path: Path) -> None:
    from relay.app import RelayApp

    config = relay_config(tmp_path, own_tree, "barrancabermeja")
    code, _, err = run_cli("validate", str(config))  # validate reads the server but writes no snapshot
    assert code == 0, err
    ldapdir.load(ldapdir.source_from_config(load_config(config), config))
    own_tree.slapd.stop()

    async def scenario() -> None:
        app = RelayApp.from_config(config)
        try:
            assert isinstance(app.rules.directory, ldapdir.LdapDirectory) and app.rules.directory.stale
            decision, _ = app.disposer.decide(*_staff_to_list())
            assert decision.verdict.value == "reject"
        finally:
            await app.disposer.close()

    asyncio.run(scenario())


def _staff_to_list() -> tuple[Any, bytes]:
    from relay.message import Envelope

    envelope = Envelope.build("laura.pinto@barrancabermeja.gov.co", ["funcionarios@barrancabermeja.gov.co"],
                              "laura.pinto@barrancabermeja.gov.co", "10.20.1.5")
    content = (b"From: Laura Pinto <laura.pinto@barrancabermeja.gov.co>\r\nTo: funcionarios@barrancabermeja.gov.co"
               b"\r\nSubject: Aviso a todos\r\n\r\nHola a todos.\r\n")
    return envelope, content


# -- a broken mapping names the config line -------------------------------------------------------


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line)


def test_base_that_does_not_exist_names_the_config_line(tree: Tree, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(tree.sources["pasto"].read_text(encoding="utf-8").replace("ou=Usuarios,", "ou=Usuaros,"),
                    encoding="utf-8")
    (tmp_path / "ldap-password").write_text((tree.root / "ldap-password").read_text())
    with pytest.raises(yamlconf.ConfigError) as caught:
        load_directory(path)
    line = _line_of(path, "ou=Usuaros")
    assert caught.value.problems == [f"{path}:{line}: ldap.people.base: 'ou=Usuaros,dc=pasto,dc=gov,dc=co' does not "
                                     f"exist on {tree.slapd.url}"]


@pytest.mark.parametrize(("old", "new", "field", "says"), [
    ("(msExchRecipientTypeDetails=34359738368)", "(msExchRecipientTypeDetails=34359738368", "service_mailboxes.filter",
     "unbalanced parentheses"),
    ("timezone: extensionAttribute1", "timezon: extensionAttribute1", "people.timezon", "did you mean 'timezone'"),
    ("page_size: 250", "page_size: 0", "page_size", "greater than or equal to 1"),
])
def test_mapping_mistakes_name_the_line(tree: Tree, tmp_path: Path, old: str, new: str, field: str,
                                        says: str) -> None:
    text = tree.sources["pasto"].read_text(encoding="utf-8")
    if old not in text:  # the default filter is not written out: add a wrong one
        text = text.replace("  service_mailboxes:\n", f"  service_mailboxes:\n    filter: '{old}'\n")
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    code, _, err = run_cli("validate", str(path))
    assert code == 3
    line = _line_of(path, new)
    assert f"{path}:{line}: ldap.{field}:" in err and says in err, err


def test_validate_checks_attributes_against_the_schema_and_reports_counts(tree: Tree, tmp_path: Path) -> None:
    code, out, err = run_cli("validate", str(tree.sources["pasto"]))
    assert code == 0, err
    assert "8 people" in out and "5 service mailboxes" in out and "2 lists" in out and "1 unmapped groups" in out
    assert "roles" in out
    path = tmp_path / "typo.yaml"
    path.write_text(tree.sources["pasto"].read_text(encoding="utf-8").replace("extensionAttribute2",
                                                                              "extensionAtribute2"), encoding="utf-8")
    (tmp_path / "ldap-password").write_text((tree.root / "ldap-password").read_text())
    code, _, err = run_cli("validate", str(path))
    line = _line_of(path, "extensionAtribute2")
    assert code == 3 and f"{path}:{line}: ldap.people.holidays: attribute 'extensionAtribute2' is not in the " \
        f"schema of {tree.slapd.url}" in err, err


def test_directory_show_says_which_entry_and_groups(tree: Tree) -> None:
    load_directory(tree.sources["cancilleria"])  # writes the snapshot `show` reads
    code, out, err = run_cli("directory", "show", "luis.fernandez@cancilleria.gov.co", "--directory",
                             str(tree.sources["cancilleria"]), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["kind"] == "person" and shown["dn"].startswith("cn=")
    assert shown["roles"] == ["direccion_confianza_manejo", "directivo", "secretario_general"]
    nested = [w for w in shown["why_roles"] if len(w.get("via", [])) == 2]
    assert nested, shown["why_roles"]  # a role through Rol X > Equipo X
    code, out, _ = run_cli("directory", "show", "maria.lopez@cancilleria.gov.co", "--directory",
                           str(tree.sources["cancilleria"]), "--live")
    assert code == 0 and "employeeType" in out and "2026-12-14" in out and "leave_from: attribute" in out
    code, _, err = run_cli("directory", "show", "nadie@cancilleria.gov.co", "--directory",
                           str(tree.sources["cancilleria"]))
    assert code == 1 and "not in the directory" in err
    code, out, _ = run_cli("directory", "stats", "--directory", str(tree.sources["cancilleria"]), "--json")
    stats = json.loads(out)
    assert (stats["people"], stats["service_mailboxes"], stats["lists"], stats["unmapped_groups"]) == (7, 1, 1, 1)
    assert stats["stale"] is None and stats["roles"]["funcionario"] == 5


def test_hr_leave_file_replaces_the_attribute(tree: Tree, tmp_path: Path) -> None:
    hr = tmp_path / "permisos.csv"
    hr.write_text("address,from,to,reason\nmaria.lopez@cancilleria.gov.co,2027-01-04,2027-01-08,licencia\n"
                  "sofia.vargas@cancilleria.gov.co,2026-12-01,2026-12-02,\n", encoding="utf-8")
    source = ldapdir.source_from_file(tree.sources["cancilleria"])
    source = ldapdir.Source(source.url, source.settings.model_copy(update={"leave_file": str(hr)}), source.file)
    directory = ldapdir.load(source)
    maria, sofia = directory.find("maria.lopez@cancilleria.gov.co"), directory.find("sofia.vargas@cancilleria.gov.co")
    assert isinstance(maria, Person) and isinstance(sofia, Person)
    assert [(a.isoformat(), b.isoformat()) for a, b in maria.schedule.leave] == [("2027-01-04", "2027-01-08")]
    assert len(sofia.schedule.leave) == 1
    hr.write_text("address,from,to\nmaria.lopez@cancilleria.gov.co,2027-01-08,2027-01-04\n", encoding="utf-8")
    with pytest.raises(yamlconf.ConfigError, match=r"permisos.csv:2: expected"):
        ldapdir.load(source)


# -- paging past the server's size limit, and TLS -------------------------------------------------


def test_the_office_comes_from_department_or_another_attribute(tmp_path: Path) -> None:
    """The compliance report's office: AD's `department` by default, `departmentNumber` (inetOrgPerson)
    when the mapping names it, nothing with `department: null`; the same as the YAML directory's."""
    from tests.report_day import DEPARTMENTS, write_directory

    require_slapd()
    yaml_path = write_directory(tmp_path)
    inst = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    suffix, ldif, mapping = build_tree("cancilleria", inst)
    (tmp_path / "slapd").mkdir()
    slapd = Slapd(tmp_path / "slapd", [suffix])
    slapd.load({suffix: ldif})
    slapd.start()
    try:
        from_yaml = load_directory(yaml_path)
        by_default = load_directory(write_source(tmp_path / "ad.yaml", slapd.url, suffix, mapping))
        for entry in from_yaml.all_entries():
            assert by_default.find(entry.address) == entry, entry.address
        people = {**mapping["people"], "department": "departmentNumber"}
        inet = load_directory(write_source(tmp_path / "inet.yaml", slapd.url, suffix, {**mapping, "people": people}))
        unmapped = load_directory(write_source(tmp_path / "none.yaml", slapd.url, suffix,
                                               {**mapping, "people": {**mapping["people"], "department": None}}))
        for address, office in DEPARTMENTS.items():
            assert [getattr(d.find(address), "department", None) for d in (from_yaml, by_default, inet, unmapped)] \
                == [office, office, office, ""]
        camilo = by_default.find("camilo.reyes@cancilleria.gov.co")
        assert isinstance(camilo, Person) and camilo.department == ""
        code, out, _ = run_cli("directory", "show", "sofia.vargas@cancilleria.gov.co", "--directory",
                               str(tmp_path / "ad.yaml"), "--live", "--json")
        assert code == 0 and json.loads(out)["department"] == DEPARTMENTS["sofia.vargas@cancilleria.gov.co"]
    finally:
        slapd.stop()


def test_paged_search_reads_past_the_size_limit(tmp_path: Path) -> None:
    require_slapd()
    inst = _institution("cancilleria")
    inst["people"] += [{"address": f"p{i:05d}@cancilleria.gov.co", "name": f"Persona {i:05d} Prueba",
                       "roles": ["funcionario"]} for i in range(2500)]
    suffix, ldif, mapping = build_tree("cancilleria", inst)
    (tmp_path / "slapd").mkdir()
    slapd = Slapd(tmp_path / "slapd", [suffix])
    slapd.load({suffix: ldif})
    slapd.start()
    try:
        no_paging = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", slapd.url, "-D", f"cn=relay-reader,{suffix}",
                                    "-w", "lector-secreto", "-b", f"ou=Usuarios,{suffix}", "(mail=*)", "dn"],
                                   capture_output=True, text=True, timeout=60)
        assert no_paging.returncode == 4, no_paging.stderr  # sizeLimitExceeded, as AD's 1,000
        path = write_source(tmp_path / "big.yaml", slapd.url, suffix, mapping, page_size=300)
        directory = load_directory(path)
        assert sum(isinstance(e, Person) for e in directory.all_entries()) == 2507
        assert directory.find("p02499@cancilleria.gov.co") is not None
    finally:
        slapd.stop()


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)  # slapd may run as another user when started as root
    return cert, key


def test_ldaps_and_starttls_with_the_certificate_checked(tmp_path: Path) -> None:
    require_slapd()
    cert, key = _certificate(tmp_path)
    suffix, ldif, mapping = build_tree("barrancabermeja", _institution("barrancabermeja"))
    (tmp_path / "slapd").mkdir()
    slapd = Slapd(tmp_path / "slapd", [suffix], tls_port=free_port(), cert=cert, key=key)
    slapd.load({suffix: ldif})
    slapd.start()
    try:
        ldaps = write_source(tmp_path / "ldaps.yaml", slapd.ldaps_url, suffix, mapping, ca_file=str(cert))
        assert load_directory(ldaps).find("pmu@barrancabermeja.gov.co") is not None
        starttls = write_source(tmp_path / "starttls.yaml", slapd.url, suffix, mapping, ca_file=str(cert),
                                start_tls=True)
        assert load_directory(starttls).find("pmu@barrancabermeja.gov.co") is not None
        (tmp_path / "other").mkdir()
        other, _ = _certificate(tmp_path / "other")
        wrong = write_source(tmp_path / "wrong.yaml", slapd.ldaps_url, suffix, mapping, ca_file=str(other))
        with pytest.raises(ldapdir.DirectoryUnavailable, match="no snapshot"):
            load_directory(wrong)  # a certificate we cannot verify is not a server we read
    finally:
        slapd.stop()


# -- pure parts ------------------------------------------------------------------------------------


def test_attribute_formats() -> None:
    assert ldapdir.parse_hours("mon-fri 08:00-12:00,14:00-18:00; sat 08:00-12:00") == {
        **{d: ["08:00-12:00", "14:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}, "sat": ["08:00-12:00"]}
    with pytest.raises(ValueError):
        ldapdir.parse_hours("fri-mon 08:00-12:00")
    with pytest.raises(ValueError):
        ldapdir.parse_hours("mon 08:00-12:00,11:00-13:00")
    assert ldapdir.parse_leave("2026-12-14/2026-12-18 vacaciones") == (
        ldapdir.date(2026, 12, 14), ldapdir.date(2026, 12, 18), "vacaciones")
    assert ldapdir.parse_leave("2026-12-14")[1] == ldapdir.date(2026, 12, 14)
    with pytest.raises(ValueError):
        ldapdir.parse_leave("2026-12-18..2026-12-14")


def test_proxy_addresses() -> None:
    attrs = {"mail": [], "proxyaddresses": ["smtp:b@x.gov.co", "SMTP:A@x.gov.co", "X500:/o=x", "sip:a@x.gov.co",
                                            "smtp:a@x.gov.co"]}
    assert ldapdir._addresses(attrs, "mail", "proxyAddresses") == ("A@x.gov.co", ["b@x.gov.co"])


def test_dn_keys_and_nesting_cycles() -> None:
    written = ldapdir.dn_key("CN=Pérez\\, Ana , OU=Usuarios,DC=x")
    assert written == ldapdir.dn_key("cn=P\\C3\\A9rez\\2C Ana,ou=usuarios,dc=x")
    assert ldapdir.dn_key("cn=a\\,ou=b,dc=x") != ldapdir.dn_key("cn=a,ou=b,dc=x")
    graph = ldapdir.Graph({"g1": ("G1", ["g2", "u1"]), "g2": ("G2", ["g1", "u2", "u1"])})
    assert graph.leaves("g1") == {"u1", "u2"}
    assert set(graph.ancestors("u2")) == {"g1", "g2"}


def test_ldap_url_without_mapping_names_the_directory_line(tmp_path: Path) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(f"policy: {ROOT / 'policies' / 'pasto.yaml'}\ndirectory: ldaps://dc1.pasto.gov.co\n",
                      encoding="utf-8")
    code, _, err = run_cli("validate", str(config))
    assert code == 3 and f"{config}:2: directory: ldaps://dc1.pasto.gov.co needs an 'ldap:' section" in err, err
    config.write_text(f"policy: {ROOT / 'policies' / 'pasto.yaml'}\ndirectory: ldap://dc1.pasto.gov.co/ou=x\n",
                      encoding="utf-8")
    code, _, err = run_cli("validate", str(config))
    assert code == 3 and f"{config}:2: directory:" in err and "no path" in err, err


def test_fallback_domain_controller_when_the_first_does_not_answer(tree: Tree, tmp_path: Path) -> None:
    suffix, _, mapping = tree.trees["bogota"]
    path = write_source(tmp_path / "dcs.yaml", f"ldap://127.0.0.1:{free_port()}", suffix, mapping,
                        fallback_urls=[tree.slapd.url], timeout=3)
    directory = load_directory(path)
    assert isinstance(directory, ldapdir.LdapDirectory) and directory.stale is None
    assert directory.find("seguridad.informacion@alcaldiabogota.gov.co") is not None
