"""First run, as a new mail admin does it: a clone of the repository alone (no ../shared beside
it), the README's first command, the README's "Try it" messages from a second terminal, and the
moderation page.

The README's first command is `./dev serve`. It runs here for real (the `dev` script, its install
step, `relay serve --config ...`), with two changes a shared test machine needs: CONFIG names a
copy of config.example.yaml whose two ports are free ones, and VENV names a virtualenv that
already holds what `./dev serve` would install — the wheel of the same commit and its runtime
dependencies (tests/packaging.py; the install step sees its stamp and skips). Set
RELAY_FIRST_RUN_FRESH_VENV=1 to let `./dev serve` create and fill an empty VENV itself instead
(about a minute more). The messages are read from the clone's README, so README and test cannot
drift apart."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from relay.directory import Person, load_directory
from relay.message import Envelope, Submission, parse_message
from relay.policy.calendar import next_working_start
from relay.policy.engine import evaluate
from relay.policy.pack import load_pack
from tests.e2e.http import Client
from tests.helpers import ROOT, to_bytes
from tests.packaging import clean_env, config_on_free_ports, fresh, fresh_clone, wait_port

DEMO = ROOT / "examples" / "demo"
D = "@villaejemplo.gov.co"


# --- the demo's files, without a running relay ---------------------------------------------------

def test_demo_pack_examples_give_their_verdicts_with_the_demo_directory() -> None:
    pack, directory = load_pack(DEMO / "pack.yaml"), load_directory(DEMO / "directory.yaml")
    kinds = {rule.kind for rule in pack.rules}
    shown = {"open_relay", "institutional_sender", "send_as", "broadcasters", "mass_bcc", "sensitive_individual",
             "commercial", "mailbox_purpose", "social_signup", "disconnect"}
    assert shown <= kinds, shown - kinds
    fired: set[str] = set()
    for example in pack.examples:
        env = example.envelope
        envelope = Envelope.build(env.mail_from, env.rcpt_to, env.auth, env.client_ip)
        decision = evaluate(Submission(envelope, parse_message(to_bytes(example.message))), pack, directory, example.at)
        hits = {f.rule_id for f in decision.findings}
        fired |= hits
        assert decision.verdict.value == example.expect.verdict, (example.name, decision.to_json())
        assert set(example.expect.rules) <= hits and not set(example.expect.not_rules) & hits, (example.name, hits)
    dns_rules = {"recipient-domain-exists", "institutional-domain-spoofing", "webmail-impersonation"}
    assert {r.id for r in pack.rules} - dns_rules <= fired  # every non-DNS rule is shown by an example


@pytest.mark.parametrize("name", ["barrancabermeja", "bogota", "cancilleria", "pasto"])
def test_every_pack_runs_its_examples_with_its_directory_from_the_repository(name: str) -> None:
    pack = load_pack(ROOT / "policies" / f"{name}.yaml")
    directory = load_directory(ROOT / "examples" / "directories" / f"{name}.yaml")
    for example in pack.examples:
        env = example.envelope
        envelope = Envelope.build(env.mail_from, env.rcpt_to, env.auth, env.client_ip)
        decision = evaluate(Submission(envelope, parse_message(to_bytes(example.message))), pack, directory, example.at)
        assert decision.verdict.value == example.expect.verdict, (name, example.name)


def test_config_example_names_only_files_inside_the_repository() -> None:
    from relay.config import load_config

    config = load_config(ROOT / "config.example.yaml")  # also loads the pack and directory it names
    assert config.auth is not None
    for value in (config.policy, config.directory, config.auth.credentials_file):
        path = config.resolve(ROOT / "config.example.yaml", value).resolve()
        assert ROOT in path.parents and "shared" not in path.parts, path
    assert config.admin is not None and config.admin.accounts  # the README's moderador / demo


def test_directory_doc_errors_are_what_validate_prints(tmp_path: Path) -> None:
    """docs/directory.md shows a broken file and the errors; they are still the real ones."""
    doc = (ROOT / "docs" / "directory.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Validation errors"):]
    broken = re.search(r"```yaml\n(.*?)```", section, re.S)
    shown = re.search(r"    \$ relay validate directory.yaml\n((?:    directory\.yaml:.*\n)+)", section)
    assert broken and shown
    (tmp_path / "directory.yaml").write_text(broken.group(1), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "relay", "validate", "directory.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [line[4:] for line in shown.group(1).splitlines()]


# --- the README's Try it, against ./dev serve in a fresh clone -----------------------------------

@dataclass
class Sent:
    number: int
    argv: list[str]
    exit: int
    out: str

    def replies(self) -> list[str]:
        return [line[3:] for line in self.out.splitlines() if line.startswith("<- ")]


def try_it_commands(readme: str) -> list[tuple[int, str]]:
    """The numbered `relay send` commands of the README's Try it, continuation lines joined."""
    section = readme[readme.index("### Try it"):readme.index("Then look at what happened")]
    commands: list[tuple[int, str]] = []
    number, lines = 0, section.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if m := re.match(r"# (\d+)\. ", line):
            number = int(m.group(1))
        elif line.startswith(".venv/bin/relay send "):
            command = line
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            commands.append((number, command))
        i += 1
    return commands


def maildir(folder: Path) -> list[EmailMessage]:
    found = []
    for path in sorted((folder / "new").iterdir()) if (folder / "new").exists() else []:
        found.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
    return found


def to(message: EmailMessage) -> str:
    return str(message["X-Relay-Envelope-To"]).strip("<> ")


def wait_for(what: str, test: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not test():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


@pytest.mark.e2e
def test_readme_try_it_from_a_fresh_clone_without_shared() -> None:
    if os.environ.get("RELAY_FIRST_RUN_FRESH_VENV") == "1":
        base, clone = fresh_clone()
        venv = base / "dev-serve-venv"  # empty: ./dev serve creates and fills it
    else:
        f = fresh()
        base, clone, venv = f.base, f.clone, f.venv
    assert not (base / "shared").exists()
    readme = (clone / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set up"):readme.index("### Try it")]
    assert re.findall(r"^    (\./dev \w+)", setup, re.M) == ["./dev serve", "./dev test"]  # exactly two
    commands = try_it_commands(readme)
    assert [n for n, _ in commands] == [1, 2, 3, 4, 5, 6, 7], commands

    config, smtp, admin = config_on_free_ports(clone, "first-run.yaml")
    env = {**clean_env(), "VENV": str(venv), "CONFIG": config.name}
    log = (base / "first-run.log").open("wb")
    proc = subprocess.Popen(["./dev", "serve"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
    relay = str(venv / "bin" / "relay")
    box = clone / "var" / "maildir"
    try:
        wait_port(smtp, proc, timeout=600)
        wait_port(admin, proc)
        directory = load_directory(clone / "examples" / "demo" / "directory.yaml")
        sent: dict[int, Sent] = {}
        held_expected: list[dict[str, datetime]] = []
        ad_expected: list[datetime | None] = []  # 5: María's next working start, if she is off work
        for number, command in commands:
            argv = shlex.split(command)
            assert argv[0] == ".venv/bin/relay"
            argv = [relay, *argv[1:], "--server", f"127.0.0.1:{smtp}"]
            before = datetime.now(UTC)
            done = subprocess.run(argv, cwd=clone, env=clean_env(), capture_output=True, text=True, timeout=60)
            after = datetime.now(UTC)
            sent[number] = Sent(number, argv, done.returncode, done.stdout)
            if number == 4:
                for moment in (before, after):  # the relay decided in between
                    due = {rcpt: next_working_start(p.schedule, moment)
                           for rcpt in (f"kenji.sato{D}", f"maria.lopez{D}")
                           if isinstance(p := directory.find(rcpt), Person)}
                    held_expected.append({rcpt: at for rcpt, at in due.items() if at is not None})
            if number == 5:
                maria = directory.find(f"maria.lopez{D}")
                assert isinstance(maria, Person)
                ad_expected.extend(next_working_start(maria.schedule, moment) for moment in (before, after))
        check_answers(sent)
        holds = json.loads(subprocess.run([relay, "queue", "--config", config.name, "list", "--json"], cwd=clone,
                                          env=clean_env(), capture_output=True, text=True, timeout=60).stdout)
        check_landing(box, holds, held_expected, ad_expected)
        moderate_on_the_page(admin, box, holds, relay, config.name, clone)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    assert proc.returncode == 0, (base / "first-run.log").read_text(errors="replace")[-3000:]


def check_answers(sent: dict[int, Sent]) -> None:
    for number in (1, 4, 5, 6, 7):
        assert sent[number].exit == 0 and sent[number].replies()[-1].startswith("250 2.0.0"), sent[number]
    refused = sent[2].replies()[-1]
    assert sent[2].exit == 5 and refused.startswith("554 5.7.1 [open-relay-guard]") and "Circular 005-20" in refused
    refused = sent[3].replies()[-1]
    assert sent[3].exit == 5 and refused.startswith("550 5.7.1 [mass-mail-authorized-senders]"), refused
    assert "Circular 005-20" in refused and "numeral 3" in refused
    assert "DATA" not in sent[2].out and "DATA" not in sent[3].out  # refused at RCPT, nothing sent
    assert "held by policy" in sent[5].replies()[-1]


def check_landing(box: Path, holds: list[dict[str, object]], held_expected: list[dict[str, datetime]],
                  ad_expected: list[datetime | None]) -> None:
    def mails() -> list[EmailMessage]:
        return maildir(box)

    def subjects_to(address: str) -> list[str]:
        return [str(m["Subject"]) for m in mails() if to(m) == address]

    # 1: delivered into the Maildir
    assert "Solicitud de información" in subjects_to(f"sofia.vargas{D}")
    # 2, 3: refused, nothing for the recipients; Sofía told why about 3
    assert not subjects_to("victim@example.org") and not subjects_to(f"funcionarios{D}")
    assert any("funcionarios" in s for s in subjects_to(f"sofia.vargas{D}"))
    # 4: at least one of Kenji (Tokyo) and María (Bogotá) is off work at any instant; the held
    # copy has its deliver_at, the one at work is in the Maildir now, and Sofía is told when
    held_at = {str(rcpt): datetime.fromisoformat(str(h["deliver_at"]))
               for h in holds if h["reason"] == "hold" for rcpt in h["recipients"]}  # type: ignore[attr-defined]
    assert {str(h["subject"]) for h in holds if h["reason"] == "hold"} == {"Informe de cooperación"}, holds
    assert held_at and held_at in held_expected, (held_at, held_expected)  # held, each with its deliver_at
    assert all(due > datetime.now(UTC) for due in held_at.values())
    held = set(held_at)
    for rcpt in {f"kenji.sato{D}", f"maria.lopez{D}"} - held:
        assert "Informe de cooperación" in subjects_to(rcpt)
    for rcpt in held:
        assert "Informe de cooperación" not in subjects_to(rcpt)
    assert any("retenido" in s.lower() for s in subjects_to(f"sofia.vargas{D}")), subjects_to(f"sofia.vargas{D}")
    # 5: moderated, not delivered; the moderators asked, the sender told
    moderated = [h for h in holds if h["reason"] == "moderate"]
    assert len(moderated) == 1 and moderated[0]["recipients"] == [f"maria.lopez{D}"], holds
    # María may be off work as the test runs: then the copy also names the right to disconnect and
    # keeps her next working start, the earliest an approved copy may go
    due = moderated[0]["deliver_at"]
    assert (datetime.fromisoformat(str(due)) if due else None) in ad_expected, (due, ad_expected)
    rules = ["commercial-content-approval", *(["right-to-disconnect"] if due else [])]
    assert moderated[0]["rules"] == rules, moderated[0]
    assert not any(s.startswith("Promoción") for s in subjects_to(f"maria.lopez{D}"))
    assert any("Promoción" in s for s in subjects_to(f"comunicaciones{D}"))
    assert any("aprobación" in s.lower() for s in subjects_to(f"andres.mejia{D}"))
    # 6: delivered to soporte@, and the auto-reply to María
    assert "Mi computador no enciende" in subjects_to(f"soporte{D}")
    replies = [m for m in mails() if to(m) == f"maria.lopez{D}" and "automática" in str(m["Subject"])]
    assert replies and "2500" in replies[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert replies[0]["Auto-Submitted"] and str(replies[0]["X-Relay-Envelope-From"]).strip("<> ") == ""
    # 7: delivered, and security alerted
    assert "Confirma tu cuenta de Instagram" in subjects_to(f"sofia.vargas{D}")
    assert any("Instagram" in s for s in subjects_to(f"seguridad.informacion{D}"))


def moderate_on_the_page(admin: int, box: Path, holds: list[dict[str, object]], relay: str, config: str,
                         clone: Path) -> None:
    """The README: open the pages, sign in as moderador / demo, open the advertising, approve. If
    María is off work, the approved copy waits for her working hours instead of going at once."""
    [ad] = [h for h in holds if h["reason"] == "moderate"]
    c = Client(admin)
    assert c.sign_in("moderador", "demo").status == 303
    listing = c.get("/holds")
    assert listing.status == 200 and "Mensajes retenidos" in listing.text
    assert "Promoción por tiempo limitado" in listing.text and "Informe de cooperación" in listing.text
    page = c.get(f"/holds/{ad['id']}")
    assert page.status == 200 and "Aprobar y entregar" in page.text
    ask = c.get(f"/holds/{ad['id']}/approve")  # the button asks first
    assert ask.status == 200 and "Sí, aprobar 1 mensaje" in ask.text, ask.text[:500]
    done = c.post(f"/holds/{ad['id']}/approve", ask.hidden_fields(f"/holds/{ad['id']}/approve"))
    assert done.status == 200 and "Aprobado" in done.text, done.text[:500]

    def delivered() -> bool:
        return any(to(m) == f"maria.lopez{D}" and str(m["Subject"]).startswith("Promoción") for m in maildir(box))

    due = datetime.fromisoformat(str(ad["deliver_at"])) if ad["deliver_at"] else None
    if due is None or due <= datetime.now(UTC) + timedelta(seconds=5):
        wait_for("the approved advertising in María's mailbox", delivered)
        return
    listed = subprocess.run([relay, "queue", "--config", config, "show", str(ad["id"]), "--json"], cwd=clone,
                            env=clean_env(), capture_output=True, text=True, timeout=60)
    shown = json.loads(listed.stdout)
    assert shown["state"] == "waiting" and datetime.fromisoformat(shown["next_attempt"]) == due, shown
    assert not delivered()


# --- relay send without a relay ------------------------------------------------------------------

def test_send_builds_the_message_from_headers_and_body(tmp_path: Path) -> None:
    from relay.cli import build_parser
    from relay.send import build_message

    args = build_parser().parse_args(["send", "--from", f"sofia.vargas{D}", "--to", f"maria.lopez{D}",
                                      "--header", "Subject: Promoción por tiempo limitado", "--body", "Envío gratis"])
    parsed = email.message_from_bytes(build_message(args), policy=email.policy.default)
    assert parsed["Subject"] == "Promoción por tiempo limitado" and parsed["To"] == f"maria.lopez{D}"
    assert parsed["From"] == f"sofia.vargas{D}" and parsed["Message-ID"] and parsed["Date"]
    assert parsed.get_body(("plain",)).get_content().strip() == "Envío gratis"  # type: ignore[union-attr]
    raw = tmp_path / "m.eml"
    raw.write_bytes(b"From: a@b.example\nSubject: x\n\nbody\n")
    args = build_parser().parse_args(["send", "--from", "a@b.example", "--to", "c@d.example", "--file", str(raw),
                                      "--header", "X-Test: 1"])
    assert build_message(args) == b"X-Test: 1\r\nFrom: a@b.example\r\nSubject: x\r\n\r\nbody\r\n"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["send", "--from", "a@b", "--to", "c@d", "--header", "no colon"])


def test_send_exits_1_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    from relay.cli import main
    from tests.packaging import free_port

    assert main(["send", "--server", f"127.0.0.1:{free_port()}", "--from", "a@b.example", "--to", "c@d.example"]) == 1
    assert "Connection refused" in capsys.readouterr().err
