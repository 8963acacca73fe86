"""The hosted hop (trust.hosted): who is the service, who is the sender, what validate warns."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from relay.cli import main
from relay.config import RelayConfig
from relay.hosted import HostedTrust, certificate_names, half_configured, hosted_login

ROOT = Path(__file__).resolve().parent.parent
B = "barrancabermeja.gov.co"
STAMPS = (b"X-MS-Exchange-Organization-AuthAs: Internal\r\n"
          b"X-MS-Exchange-Organization-AuthSource: BN8PR12MB3456.namprd12.prod.outlook.com\r\n")
BODY = b"From: laura@" + B.encode() + b"\r\nSubject: x\r\n\r\nhola\r\n"


def test_both_address_and_certificate_must_match_by_default() -> None:
    trust = HostedTrust.build("exchange_online", ["40.92.0.0/15"], ["*.mail.protection.outlook.com"])
    name = ("inst-gov-co.mail.protection.outlook.com",)
    assert trust.matches("40.92.1.2", name)
    assert not trust.matches("40.92.1.2", ())
    assert not trust.matches("203.0.113.9", name)
    assert not trust.matches("40.92.1.2", ("mail.protection.outlook.com.attacker.example",))
    either = HostedTrust.build("exchange_online", ["40.92.0.0/15"], ["*.mail.protection.outlook.com"], "any")
    assert either.matches("203.0.113.9", name) and either.matches("40.92.1.2", ())
    assert not HostedTrust.build("exchange_online", [], []).matches("40.92.1.2", name)


def test_certificate_names_prefer_subject_alt_names() -> None:
    cert = {"subject": ((("commonName", "cn.example"),),), "subjectAltName": (("DNS", "a.example"),)}
    assert certificate_names(cert) == ("a.example",)
    assert certificate_names({"subject": ((("commonName", "cn.example"),),)}) == ("cn.example",)
    assert certificate_names(None) == ()


@pytest.mark.parametrize(("stamps", "sender", "login"), [
    (STAMPS, f"laura@{B}", f"laura@{B}"),
    (STAMPS.replace(b"Internal", b"Anonymous"), f"laura@{B}", None),
    (STAMPS.split(b"\r\n")[0] + b"\r\n", f"laura@{B}", None),  # no AuthSource
    (STAMPS, "laura@gmail.com", None),  # not one of the institution's domains
    (b"", f"laura@{B}", None),
    (STAMPS + b"X-MS-Exchange-CrossTenant-AuthAs: Anonymous\r\n", f"laura@{B}", None),  # contradicting stamps
])
def test_exchange_login_from_its_stamps(stamps: bytes, sender: str, login: str | None) -> None:
    assert hosted_login("exchange_online", sender, stamps + BODY, [B]) == login


def test_another_tenant_is_not_ours() -> None:
    ours = STAMPS + b"X-MS-Exchange-CrossTenant-Id: 1f2e3d4c-0000-4000-8000-00000000abcd\r\n" + BODY
    theirs = ours.replace(b"1f2e3d4c", b"99999999")
    tenant = "1F2E3D4C-0000-4000-8000-00000000ABCD"
    assert hosted_login("exchange_online", f"laura@{B}", ours, [B], tenant) == f"laura@{B}"
    assert hosted_login("exchange_online", f"laura@{B}", theirs, [B], tenant) is None
    assert hosted_login("exchange_online", f"laura@{B}", STAMPS + BODY, [B], tenant) is None


def test_stamps_after_the_header_section_do_not_count() -> None:
    assert hosted_login("exchange_online", f"laura@{B}", BODY + STAMPS, [B]) is None


def config(**overrides: object) -> RelayConfig:
    data: dict[str, object] = {"policy": "p.yaml", "directory": "d.yaml", **overrides}
    return RelayConfig.model_validate(data)


def test_half_configured_modes_are_warned() -> None:
    hop = {"service": "exchange_online", "clients": ["40.92.0.0/15"]}
    warned = half_configured(config(trust={"hosted": [hop]}, upstream="smtp://x.mail.protection.outlook.com:25"))
    assert any("no certificate_names" in w for w in warned)
    assert any("without STARTTLS required" in w for w in warned)
    hop["certificate_names"] = ["*.mail.protection.outlook.com"]
    warned = half_configured(config(trust={"hosted": [hop]}, upstream="smtp://x:25?starttls=1"))
    assert [w for w in warned if "tls.client_ca" in w] and not [w for w in warned if "STARTTLS" in w]
    assert any("no tenant_id" in w for w in warned)
    hop["tenant_id"] = "1f2e3d4c-0000-4000-8000-00000000abcd"
    full = half_configured(config(trust={"hosted": [hop], "loop_guard": {}}, upstream="smtp://x:25?starttls=1",
                                  tls={"cert": "c", "key": "k", "client_ca": "ca"},
                                  upstream_options={"tls_client_cert": "relay.pem"}))
    assert full == []
    assert half_configured(config()) == []


def test_relay_validate_prints_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "policy": str(ROOT / "policies/barrancabermeja.yaml"),
        "directory": str(ROOT / "examples/directories/barrancabermeja.yaml"),
        "upstream": "smtp://inst.mail.protection.outlook.com:25",
        "trust": {"hosted": [{"service": "exchange_online", "clients": ["40.92.0.0/15"]}]}}))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert "warning: trust.hosted[0] (exchange_online): no certificate_names" in err, err
    assert "without STARTTLS required" in err
    assert "without trust.loop_guard" in err and "without upstream_options.tls_client_cert" in err
    assert code == 0
