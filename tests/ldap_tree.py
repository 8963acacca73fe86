"""An Active-Directory-like LDAP tree built from an institution YAML file, and its mapping.

What the tree has, so that every path of the mapping is used:
- users (objectClass 'user') with `mail` and `proxyAddresses` (SMTP: primary, smtp: alias);
  some with AD-style names ('Apellido\\, Nombre': an escaped comma in the DN);
- zone, holidays, weekly hours and leave in extensionAttribute1..4 when the person has them; the
  office in `department` (AD) and `departmentNumber` (inetOrgPerson) when it has one;
- roles two ways: `employeeType` (funcionario, contratista...) through roles.attributes, the rest
  through role groups, half of them through a nested group (Rol X > Equipo X > people);
- shared mailboxes (msExchRecipientTypeDetails = 34359738368) with delegates in
  msExchDelegateListLink, publicDelegates, or a group per mailbox ('sendas-LOCAL', nested);
- mail-enabled lists whose members sit in nested groups of up to 400, plus accounts without mail
  (so they are counted as members but are not people), one member listed twice;
- one group nobody maps (reported as unmapped).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tests.ldap_server import READER_PASSWORD, reader_dn

ATTRIBUTE_ROLES = {"funcionario": "Funcionario", "contratista": "Contratista", "tecnico": "Tecnico"}
# How each institution keeps delegates (all four ways are used).
DELEGATES = {"barrancabermeja": "msExchDelegateListLink", "bogota": "publicDelegates", "pasto": "group",
             "cancilleria": "msExchDelegateListLink"}
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def suffix_of(domain: str) -> str:
    return ",".join(f"dc={part}" for part in domain.split("."))


def _value(text: str) -> str:
    """An LDIF 'attr: value' tail, base64 when the value is not plain ASCII."""
    if text.isascii() and not text.startswith((" ", ":", "<")) and text == text.strip():
        return f" {text}"
    return ": " + base64.b64encode(text.encode("utf-8")).decode("ascii")


def _entry(dn: str, attrs: list[tuple[str, str]]) -> str:
    lines = [f"dn:{_value(dn)}"] + [f"{name}:{_value(value)}" for name, value in attrs]
    return "\n".join(lines) + "\n\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("+", "\\+").replace('"', '\\"') \
        .replace("<", "\\<").replace(">", "\\>").replace(";", "\\;").replace("=", "\\=")


def hours_text(week: dict[str, list[str]]) -> str:
    return "; ".join(f"{day} {','.join(week[day])}" for day in DAY_NAMES if week.get(day))


def build_tree(name: str, inst: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(suffix, LDIF, ldap: mapping without connection settings) for one institution."""
    domain = inst["domains"][0]
    suffix = suffix_of(domain)
    users, groups_ou, lists_ou, boxes_ou, roles_ou = (f"ou={ou},{suffix}" for ou in
                                                      ("Usuarios", "Grupos", "Listas,ou=Grupos", "Buzones",
                                                       "Roles,ou=Grupos"))
    out = [_entry(suffix, [("objectClass", "dcObject"), ("objectClass", "organization"),
                           ("dc", domain.split(".")[0]), ("o", inst.get("institution") or name)])]
    for ou in ("Usuarios", "Grupos", "Buzones", "Miembros", "Permisos"):
        out.append(_entry(f"ou={ou},{suffix}", [("objectClass", "organizationalUnit"), ("ou", ou)]))
    for ou in ("Listas", "Roles"):
        out.append(_entry(f"ou={ou},{groups_ou}", [("objectClass", "organizationalUnit"), ("ou", ou)]))
    out.append(_entry(reader_dn(suffix), [("objectClass", "person"), ("cn", "relay-reader"), ("sn", "reader"),
                                          ("userPassword", READER_PASSWORD)]))
    person_dn: dict[str, str] = {}
    role_members: dict[str, list[str]] = {}
    for i, person in enumerate(inst.get("people", [])):
        address = person["address"]
        local = address.partition("@")[0]
        full = person.get("name") or local
        words = full.split()
        cn = f"{' '.join(words[-2:])}, {' '.join(words[:-2])}" if len(words) >= 3 and i % 2 == 0 else full
        dn = f"cn={_escape(cn)},{users}"
        person_dn[address.casefold()] = dn
        attrs = [("objectClass", "user"), ("cn", cn), ("sn", words[-1] if words else local),
                 ("displayName", full), ("sAMAccountName", local[:20])]
        # Half keep the primary address in mail, half only as SMTP: in proxyAddresses (mail is
        # still set, lower-case, as AD does).
        attrs.append(("mail", address if i % 2 else address.lower()))
        attrs += [("proxyAddresses", f"SMTP:{address}"), ("proxyAddresses", f"smtp:{local}.alias@{domain}"),
                  ("proxyAddresses", f"X500:/o=Org/ou=Exchange/cn=Recipients/cn={local}")]
        if person.get("department"):  # AD's department (the mapping's default) and inetOrgPerson's
            attrs += [("department", person["department"]), ("departmentNumber", person["department"])]
        if person.get("timezone"):
            attrs.append(("extensionAttribute1", person["timezone"]))
        if person.get("holidays"):
            attrs.append(("extensionAttribute2", person["holidays"]))
        if person.get("working_hours"):
            attrs.append(("extensionAttribute3", hours_text(person["working_hours"])))
        for leave in person.get("leave", []):
            text = f"{leave['from']}/{leave['to']}" + (f" {leave['reason']}" if leave.get("reason") else "")
            attrs.append(("extensionAttribute4", text))
        for role in person.get("roles", []):
            if role in ATTRIBUTE_ROLES:
                attrs.append(("employeeType", ATTRIBUTE_ROLES[role]))
            else:
                role_members.setdefault(role, []).append(dn)
        out.append(_entry(dn, attrs))
    box_dn: dict[str, str] = {}
    delegate_groups: list[tuple[str, list[str]]] = []
    how = DELEGATES.get(name, "msExchDelegateListLink")
    for box in inst.get("service_mailboxes", []):
        address = box["address"]
        local = address.partition("@")[0]
        dn = f"cn={local},{boxes_ou}"
        box_dn[address] = dn
        attrs = [("objectClass", "user"), ("cn", local), ("sn", local), ("displayName", f"Buzón {local}"),
                 ("mail", address), ("proxyAddresses", f"SMTP:{address}"),
                 ("msExchRecipientTypeDetails", "34359738368")]
        delegates = [person_dn[d.casefold()] for d in box.get("delegates", [])]
        if how == "group":
            delegate_groups.append((f"sendas-{local}", delegates))
        else:
            attrs += [(how, d) for d in delegates]
        for role in box.get("roles", []):
            role_members.setdefault(role, []).append(dn)
        out.append(_entry(dn, attrs))
    for i, (group, members) in enumerate(delegate_groups):
        dn = f"cn={group},ou=Permisos,{suffix}"
        if i == 0 and len(members) > 1:  # nested: the group holds a team group that holds the people
            team = f"cn=equipo-{group},{groups_ou}"
            out.append(_entry(team, [("objectClass", "group"), ("cn", f"equipo-{group}"),
                                     *[("member", m) for m in members]]))
            members = [team]
        out.append(_entry(dn, [("objectClass", "group"), ("cn", group), *[("member", m) for m in members]]))
    role_groups: dict[str, list[str]] = {}
    for i, (role, members) in enumerate(sorted(role_members.items())):
        dn = f"cn=Rol {role},{roles_ou}"
        role_groups[dn] = [role]
        if i % 2:  # nested: Rol X > Equipo X > members
            team = f"cn=Equipo {role},{groups_ou}"
            out.append(_entry(team, [("objectClass", "group"), ("cn", f"Equipo {role}"),
                                     *[("member", m) for m in members]]))
            members = [team]
        out.append(_entry(dn, [("objectClass", "group"), ("cn", f"Rol {role}"), *[("member", m) for m in members]]))
    people = list(person_dn.values())
    for lst in inst.get("lists", []):
        address, count = lst["address"], int(lst["members"])
        local = address.partition("@")[0]
        real = people[:min(len(people), count)]
        fillers = []
        for k in range(count - len(real)):
            dn = f"cn={local}-{k:05d},ou=Miembros,{suffix}"
            fillers.append(dn)
            out.append(_entry(dn, [("objectClass", "inetOrgPerson"), ("cn", f"{local}-{k:05d}"), ("sn", "miembro")]))
        members = real + fillers
        subgroups = []
        for start in range(0, len(members), 400):
            chunk = members[start:start + 400]
            if start and chunk:
                chunk = [*chunk, members[0]]  # listed twice: counted once
            sub = f"cn={local}-parte-{start // 400},{groups_ou}"
            subgroups.append(sub)
            out.append(_entry(sub, [("objectClass", "group"), ("cn", f"{local}-parte-{start // 400}"),
                                    *[("member", m) for m in chunk]]))
        out.append(_entry(f"cn={local},{lists_ou}", [
            ("objectClass", "group"), ("cn", local), ("mail", address), ("proxyAddresses", f"SMTP:{address}"),
            *[("member", s) for s in subgroups]]))
    out.append(_entry(f"cn=Comite de convivencia,{groups_ou}", [
        ("objectClass", "group"), ("cn", "Comite de convivencia"), *[("member", p) for p in people[:2]]]))
    mapping: dict[str, Any] = {
        "institution": {k: v for k, v in {
            "name": inst.get("institution", ""), "domains": inst["domains"], "timezone": inst.get("timezone", "UTC"),
            "holidays": inst.get("holidays"), "working_hours": inst.get("working_hours", {}),
            "internal_networks": inst.get("internal_networks", [])}.items() if v is not None},
        "people": {"base": users, "timezone": "extensionAttribute1", "holidays": "extensionAttribute2",
                   "working_hours": "extensionAttribute3", "leave": "extensionAttribute4"},
        "groups": {"base": groups_ou},
        "roles": {"groups": role_groups,
                  "attributes": [{"attribute": "employeeType", "equals": label, "roles": [role]}
                                 for role, label in ATTRIBUTE_ROLES.items()]},
        "service_mailboxes": {"base": boxes_ou},
        "lists": {"base": lists_ou},
    }
    if how == "group":
        mapping["service_mailboxes"]["delegate_group"] = "sendas-{local}"
        mapping["groups"]["base"] = suffix  # the sendas- groups live in ou=Permisos
    return suffix, "".join(out), mapping


def write_source(path: Path, url: str, suffix: str, mapping: dict[str, Any], **settings: Any) -> Path:
    """A file with `directory: URL` and `ldap:` (what `relay check --directory` accepts)."""
    secret = path.parent / "ldap-password"
    secret.write_text(READER_PASSWORD + "\n", encoding="utf-8")
    ldap = {"bind_dn": reader_dn(suffix), "password_file": secret.name, "page_size": 250,
            "snapshot": f"{path.stem}-snapshot.json", **settings, **mapping}
    path.write_text(yaml.safe_dump({"directory": url, "ldap": ldap}, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    return path
