"""The same cases through the SMTP front-end and the milter front-end, in process: one Disposer,
a fake upstream and a fake store, and the same verdicts, replies, holds, notices and upstream bytes.

The SMTP path is the real aiosmtpd front-end on a loopback port with smtplib as the client (the
relay sends the message on itself). The milter path is the real MilterSession fed the commands
Postfix sends; a small model of the MTA then applies the milter's answer (header edits, recipients
taken out, new body) and delivers to the same fake upstream, as Postfix would after the milter.
What each recipient came to (delivered, held, refused with a code, deferred with a code) must be
the same both ways, and so must everything the relay stored and sent.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.auth import Credentials, hash_password
from relay.clock import FixedClock
from relay.config import RelayConfig
from relay.dispose import BAD_ADDRESS, Disposer, Rules
from relay.frontends import milter_codec as mc
from relay.frontends.milter import MilterSession
from relay.frontends.smtp import RelaySMTP
from relay.policy.pack import load_pack
from relay.scheduler import Scheduler, SchedulerSettings
from relay.store import AuditEntry, HoldState, NewHold, SqliteStore
from relay.upstream import Reply, Transaction
from tests.helpers import POLICIES, directory, pack, to_bytes

PASSWORD = "clave-de-prueba"
B = "barrancabermeja.gov.co"
P = "pasto.gov.co"
C = "cancilleria.gov.co"
LAURA, PATRICIA = f"laura.pinto@{B}", f"patriciah.fierro@{B}"
EDUARDO = f"eduardo.hernandez@{P}"
LUIS, MARIA = f"luis.fernandez@{C}", f"maria.lopez@{C}"
WEEKDAY = datetime.fromisoformat("2026-11-25T10:00:00-05:00")  # a Wednesday morning in Bogotá
FRIDAY_NIGHT = datetime.fromisoformat("2026-11-27T20:00:00-05:00")


# -- fakes -----------------------------------------------------------------------------------------


@dataclass
class FakeUpstream:
    """Answers per recipient from tables; records every delivered copy."""

    rcpt_replies: dict[str, Reply] = field(default_factory=dict)
    data_replies: dict[str, Reply] = field(default_factory=dict)  # by the (single) recipient of a copy
    down: bool = False
    delivered: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)

    def describe(self) -> str:
        return "fake:"

    def transaction(self) -> Transaction:
        return FakeTxn(self)

    async def close(self) -> None:
        return None


class FakeTxn(Transaction):
    def __init__(self, up: FakeUpstream) -> None:
        self.up, self.sender, self.rcpts = up, "", list[str]()

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        self.sender = sender
        return Reply(250, "2.1.0 ok")

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        if self.up.down:
            return Reply(451, "4.4.1 Upstream mail server unavailable; try again later", unreachable=True)
        reply = self.up.rcpt_replies.get(recipient, Reply(250, "2.1.5 ok"))
        if reply.ok:
            self.rcpts.append(recipient)
        return reply

    async def data(self, content: bytes) -> Reply:
        if not self.rcpts:
            return Reply(554, "5.5.1 No valid recipients")
        reply = next((self.up.data_replies[r] for r in self.rcpts if r in self.up.data_replies), Reply(250, "2.0.0 ok"))
        if reply.ok:
            self.up.delivered.append((self.sender, tuple(self.rcpts), content))
        self.rcpts = []
        return reply

    async def abort(self) -> None:
        self.rcpts = []


@dataclass
class FakeStore:
    """What the disposer writes, kept in lists."""

    holds: list[NewHold] = field(default_factory=list)
    notices: list[tuple[str, ...]] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)

    def add_holds(self, holds: list[NewHold], now: datetime) -> list[str]:
        self.holds += holds
        return [f"H{len(self.holds) - len(holds) + i}" for i in range(len(holds))]

    def remove(self, ids: list[str]) -> None:
        self.holds = [h for i, h in enumerate(self.holds) if f"H{i}" not in ids]

    def add_notices(self, notices: list[tuple[str, ...]], now: datetime) -> None:
        self.notices += notices

    def add_audit(self, entries: list[AuditEntry], trace: list[Any] | None = None) -> None:
        self.audit += entries

    def record_accounts(self, accounts: list[Any]) -> None:
        return None

    def close(self) -> None:
        return None


# -- the cases ---------------------------------------------------------------------------------------


def letter(frm: str, to: str, subject: str = "Informe", body: str = "Cordial saludo.", extra: str = "") -> bytes:
    return to_bytes(f"From: {frm}\nTo: {to}\n{extra}Subject: {subject}\nMessage-ID: <m1@test>\n\n{body}\n")


DEBT = ("Le informamos que registra una deuda pendiente con la entidad por concepto de impuesto predial. "
        "Embargo de cuentas si no paga.")
PROMO = ("Aproveche esta oferta por tiempo limitado. Compre ya su poliza con descuento, precios especiales "
         "para servidores publicos. Escribame para cotizar.")


@dataclass(frozen=True)
class Case:
    name: str
    mail_from: str
    rcpts: tuple[str, ...]
    content: bytes
    login: str | None = None
    pack: str = "barrancabermeja"
    now: datetime = WEEKDAY
    rcpt_replies: tuple[tuple[str, Reply], ...] = ()
    data_replies: tuple[tuple[str, Reply], ...] = ()
    down: bool = False
    split: bool = False  # Pasto's sensitive-notice rule set to split instead of refuse
    expect: dict[str, str] = field(default_factory=dict)  # recipient -> fate, the same both ways


CASES = [
    Case("deliver", LAURA, ("jose@gmail.com",), letter(LAURA, "jose@gmail.com"), LAURA,
         expect={"jose@gmail.com": "delivered"}),
    Case("reject at RCPT", LAURA, (f"funcionarios@{B}", f"pmu@{B}"), letter(LAURA, f"pmu@{B}"), LAURA,
         expect={f"funcionarios@{B}": "refused 550", f"pmu@{B}": "delivered"}),
    Case("reject at DATA", PATRICIA, (f"funcionarios@{B}",), letter(PATRICIA, f"funcionarios@{B}"), PATRICIA,
         expect={f"funcionarios@{B}": "refused 550"}),
    Case("hold all", LUIS, (MARIA,), letter(LUIS, MARIA, "Informe para el lunes"), LUIS, "cancilleria",
         FRIDAY_NIGHT, expect={MARIA: "held hold"}),
    Case("hold some", LUIS, (MARIA, "jose@gmail.com"), letter(LUIS, f"{MARIA}, jose@gmail.com", "Para el lunes"),
         LUIS, "cancilleria", FRIDAY_NIGHT, expect={MARIA: "held hold", "jose@gmail.com": "delivered"}),
    Case("moderate", EDUARDO, (f"jorge.benavides@{P}", f"lucia.ortega@{P}"),
         letter(EDUARDO, f"jorge.benavides@{P}, lucia.ortega@{P}", "Promocion exclusiva: 40% de descuento en seguros",
                PROMO), EDUARDO, "pasto",
         expect={f"jorge.benavides@{P}": "held moderate", f"lucia.ortega@{P}": "held moderate"}),
    Case("split", EDUARDO, ("ana@gmail.com", "beto@gmail.com"),
         letter(EDUARDO, "ana@gmail.com, beto@gmail.com", "Aviso de deuda pendiente", DEBT), EDUARDO, "pasto",
         split=True, expect={"ana@gmail.com": "delivered", "beto@gmail.com": "delivered"}),
    Case("split, a later copy refused", EDUARDO, ("ana@gmail.com", "beto@gmail.com"),
         letter(EDUARDO, "ana@gmail.com, beto@gmail.com", "Aviso de deuda pendiente", DEBT), EDUARDO, "pasto",
         data_replies=(("beto@gmail.com", Reply(550, "5.1.1 no such user")),), split=True,
         expect={"ana@gmail.com": "delivered", "beto@gmail.com": "undelivered 550"}),
    Case("rewrite with banner", "patriciah.fierro.secretaria@gmail.com", (f"efrain.molinam@{B}",),
         letter("Patricia Helena Fierro Vitola <patriciah.fierro.secretaria@gmail.com>", f"efrain.molinam@{B}",
                "Necesito un favor", "Hola, necesito que me haga un favor urgente y confidencial."),
         expect={f"efrain.molinam@{B}": "delivered"}),
    Case("upstream refuses one recipient", LAURA, ("nadie@example.org", "jose@gmail.com"),
         letter(LAURA, "jose@gmail.com"), LAURA, rcpt_replies=(("nadie@example.org", Reply(550, "5.1.1 unknown")),),
         expect={"nadie@example.org": "refused 550", "jose@gmail.com": "delivered"}),
    Case("upstream down", LAURA, ("jose@gmail.com",), letter(LAURA, "jose@gmail.com"), LAURA, down=True,
         expect={"jose@gmail.com": "deferred 451"}),
    # a mailbox aiosmtpd lets through and our parser does not (RFC 5321 §4.1.2: no empty atom):
    # refused at RCPT both ways, 501 (RCPT has arguments: RFC 5321 §4.3.2 lists 501 for it)
    Case("bad address", "laura..pinto@" + B, (f"pmu@{B}",), letter(LAURA, f"pmu@{B}"),
         expect={f"pmu@{B}": "refused 501"}),
]


# -- one relay, two front-ends -------------------------------------------------------------------------


def build(case: Case, tmp_path: Path) -> tuple[Disposer, FakeStore, FakeUpstream]:
    rules_pack = pack(case.pack)
    if case.split:
        data = yaml.safe_load((POLICIES / "pasto.yaml").read_text(encoding="utf-8"))
        for rule in data["rules"]:
            if rule["id"] == "sensitive-notice-individual":
                rule["action"] = "rewrite"
        (tmp_path / "pasto-split.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        rules_pack = load_pack(tmp_path / "pasto-split.yaml")
    folk = directory(case.pack)
    credentials = Credentials({a.casefold(): hash_password(PASSWORD, iterations=1000)
                               for a in (LAURA, PATRICIA, EDUARDO, LUIS)})
    config = RelayConfig.model_validate({
        "hostname": "relay.test", "policy": "p.yaml", "directory": "d.yaml",
        "auth": {"credentials_file": "c.txt", "allow_plaintext_on_loopback": True}})
    store, up = FakeStore(), FakeUpstream(dict(case.rcpt_replies), dict(case.data_replies), case.down)
    disposer = Disposer(config, Rules(rules_pack, folk, credentials, None), FixedClock(case.now),
                        store, up)  # type: ignore[arg-type]
    return disposer, store, up


@dataclass
class Outcome:
    fates: dict[str, str]
    verdicts: list[str]
    holds: list[tuple[str, tuple[str, ...], str]]
    notices: list[tuple[str, ...]]
    delivered: list[tuple[str, tuple[str, ...], str]]
    data_reply: str  # the relay's own reply at end of data ("" when it accepted)
    reached_data: bool  # the relay saw the message (the SMTP path stops at RCPT when no recipient is left)


def normal(content: bytes) -> str:
    """A message compared across paths: our Received line out (the MTA writes its own), queue ids
    and banner boundaries made neutral, header fields sorted (the MTA appends added fields)."""
    text = content.decode("utf-8", "replace")
    for qid in re.findall(r"X-Relay-Queue-ID: (\w+)", text):
        text = text.replace(qid, "QID")
    text = re.sub(r"=_policy-relay-warning-[0-9a-f]+", "=_BOUNDARY", text)
    head, _, body = text.partition("\r\n\r\n")
    fields = re.split(r"\r\n(?![ \t])", head)
    fields = [f for f in fields if not (f.startswith("Received: ") and "(policy-relay)" in f)]
    return "\r\n".join(sorted(fields)) + "\r\n\r\n" + body


def outcome(store: FakeStore, up: FakeUpstream, fates: dict[str, str], data_reply: str, reached: bool) -> Outcome:
    for rcpt, fate in list(fates.items()):
        if fate == "accepted":
            held = next((h.reason for h in store.holds if rcpt in h.recipients), None)
            done = any(rcpt in d[1] for d in up.delivered)
            fates[rcpt] = f"held {held}" if held else "delivered" if done else fate
    for _to, kind, _subject, text, *_attached in store.notices:  # a copy the next hop refused after we said 250
        if kind == "bounce":
            for rcpt in fates:
                if m := re.search(rf"- {re.escape(rcpt)}: (\d+)", text):
                    fates[rcpt] = f"undelivered {m.group(1)}"
    return Outcome(
        fates, [e.verdict for e in store.audit],
        [(h.reason, h.recipients, normal(h.content)) for h in store.holds],
        [(to, kind, subject, re.sub(r"\b[0-9A-F]{12}\b", "QID", text))
         for to, kind, subject, text, *_ in store.notices],
        [(f, r, normal(c)) for f, r, c in up.delivered], data_reply, reached)


async def via_smtp(case: Case, tmp_path: Path) -> Outcome:
    disposer, store, up = build(case, tmp_path)
    server = await asyncio.get_running_loop().create_server(lambda: RelaySMTP(disposer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def client() -> tuple[dict[str, str], str]:
        fates: dict[str, str] = {}
        with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:
            smtp.ehlo("client.test")
            if case.login:
                smtp.login(case.login, PASSWORD)
            smtp.mail(case.mail_from)
            for rcpt in case.rcpts:
                code, _ = smtp.rcpt(rcpt)
                fates[rcpt] = "accepted" if code == 250 else f"{'refused' if code >= 500 else 'deferred'} {code}"
            if "accepted" not in fates.values():
                return fates, ""
            code, text = smtp.data(case.content)
        if code != 250:
            fates = {r: f"{'refused' if code >= 500 else 'deferred'} {code}" if f == "accepted" else f
                     for r, f in fates.items()}
            return fates, f"{code} {text.decode()}"
        return fates, ""

    try:
        fates, reply = await asyncio.to_thread(client)
    finally:
        server.close()
    if disposer.tasks:
        await asyncio.wait(list(disposer.tasks))
    await disposer.flush_audit()
    return outcome(store, up, fates, reply, "accepted" in fates.values() or reply != "")


class FakeWriter:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str) -> Any:
        return None


def packets(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while data:
        (size,) = struct.unpack("!I", data[:4])
        out.append((data[4:5], data[5:4 + size]))
        data = data[4 + size:]
    return out


def split_message(content: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    head, _, body = content.partition(b"\r\n\r\n")
    fields = re.split(rb"\r\n(?![ \t])", head)
    return [(f.split(b":", 1)[0], f.split(b":", 1)[1]) for f in fields], body


async def via_milter(case: Case, tmp_path: Path) -> Outcome:
    disposer, store, up = build(case, tmp_path)
    writer = FakeWriter()
    session = MilterSession(disposer, None, writer)  # type: ignore[arg-type]

    async def say(command: mc.Command) -> list[tuple[bytes, bytes]]:
        start = len(writer.out)
        await session.handle(command)
        session.flush()  # what MilterSession.run does after the commands of each read
        return packets(bytes(writer.out[start:]))

    await say(mc.OptNeg(6, 0x1FF, 0x1FFFFF))
    await say(mc.Connect("client.test", "4", 40000, "127.0.0.1"))
    await say(mc.Helo("client.test"))
    await say(mc.Macros(mc.MAIL, {"i": "4XYZ0QUEUE01", **({"auth_authen": case.login} if case.login else {})}))
    await say(mc.Mail(case.mail_from, ()))
    fates: dict[str, str] = {}
    for rcpt in case.rcpts:
        [(code, data)] = await say(mc.Rcpt(rcpt, ()))
        fates[rcpt] = "accepted" if code == mc.R_CONTINUE else _fate(data)
    reply = ""
    if "accepted" in fates.values():
        fields, body = split_message(case.content)
        for name, value in fields:
            await say(mc.Header(name, value))
        await say(mc.Simple(mc.EOH))
        await say(mc.Body(body))
        answer = await say(mc.Simple(mc.BODYEOB))
        final = answer[-1][0]
        if final == mc.R_REPLYCODE:
            reply = answer[-1][1].rstrip(b"\0").decode()
            fates = {r: _fate(answer[-1][1]) if f == "accepted" else f for r, f in fates.items()}
        elif final == mc.R_ACCEPT:
            await mta_delivers(case, up, fates, fields, body, answer)
    if disposer.tasks:
        await asyncio.wait(list(disposer.tasks))
    await disposer.flush_audit()
    return outcome(store, up, fates, reply, "accepted" in fates.values() or reply != "" or bool(store.holds))


def _fate(data: bytes) -> str:
    code = int(data[:3])
    return f"{'refused' if code >= 500 else 'deferred'} {code}"


async def mta_delivers(case: Case, up: FakeUpstream, fates: dict[str, str], fields: list[tuple[bytes, bytes]],
                       body: bytes, answer: list[tuple[bytes, bytes]]) -> None:
    """What Postfix does after the milter's accept: apply its modifications, deliver the rest."""
    removed = set()
    for code, data in answer:
        if code == mc.R_DELRCPT:
            removed.add(data.rstrip(b"\0").decode().strip("<>"))
        elif code == mc.R_ADDHEADER:
            name, value, _ = data.split(b"\0")
            fields.append((name, value.replace(b"\n", b"\r\n")))  # leading space negotiated: as sent
        elif code == mc.R_CHGHEADER:
            (index,) = struct.unpack("!I", data[:4])
            name, value, _ = data[4:].split(b"\0")
            same = [i for i, (n, _) in enumerate(fields) if n.lower() == name.lower()]
            at = same[index - 1]
            if value:
                fields[at] = (name, value.replace(b"\n", b"\r\n"))
            else:
                del fields[at]
    if any(c == mc.R_REPLBODY for c, _ in answer):
        body = b"".join(d for c, d in answer if c == mc.R_REPLBODY)
    content = b"\r\n".join(n + b":" + v for n, v in fields) + b"\r\n\r\n" + body
    txn = up.transaction()
    await txn.mail(case.mail_from)
    going = [r for r, f in fates.items() if f == "accepted" and r not in removed]
    for rcpt in going:
        reply = await txn.rcpt(rcpt)
        if not reply.ok:
            fates[rcpt] = f"{'refused' if reply.code >= 500 else 'deferred'} {reply.code}"
    if any(f == "accepted" and r not in removed for r, f in fates.items()):
        reply = await txn.data(content)
        if not reply.ok:
            for rcpt in going:
                if fates[rcpt] == "accepted":
                    fates[rcpt] = f"{'refused' if reply.code >= 500 else 'deferred'} {reply.code}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_both_front_ends_dispose_of_a_message_alike(case: Case, tmp_path: Path) -> None:
    smtp = asyncio.run(via_smtp(case, tmp_path))
    milter = asyncio.run(via_milter(case, tmp_path))
    assert smtp.fates == case.expect
    assert milter.fates == smtp.fates
    if smtp.reached_data:  # (upstream down: the SMTP path never gets to DATA; the MTA defers instead)
        assert milter.data_reply == smtp.data_reply
        assert milter.verdicts == smtp.verdicts
    else:
        assert [v for v in smtp.verdicts if v != "reject"] == []
    assert milter.holds == smtp.holds
    assert milter.notices == smtp.notices
    assert milter.delivered == smtp.delivered


def test_the_cases_cover_every_disposition() -> None:
    """Each kind of outcome appears in the table at least once."""
    fates = {f.split()[0] for c in CASES for f in c.expect.values()}
    assert fates == {"delivered", "held", "refused", "deferred", "undelivered"}


def test_a_bad_address_at_end_of_data_is_one_reply() -> None:
    # 550, not 501: RFC 5321 §4.3.2 lists 550 among the replies to the end of DATA, and 501 (a
    # syntax error in a command's arguments) only where the command has arguments; DATA has none.
    assert str(BAD_ADDRESS) == "550 5.1.7 Bad address syntax"


def test_a_released_hold_refused_by_the_next_hop_gets_the_data_time_notice(tmp_path: Path) -> None:
    """A held copy goes through the same disposer when released: its refusal notice is the one a
    split copy refused at DATA time gets, word for word."""
    case = next(c for c in CASES if c.name == "split, a later copy refused")
    at_data = asyncio.run(via_smtp(case, tmp_path))
    [(to, kind, subject, text)] = [n for n in at_data.notices if n[1] == "bounce"]

    disposer, _, up = build(case, tmp_path)
    store = SqliteStore(tmp_path / "s.sqlite3")
    disposer.store = store
    up.rcpt_replies["beto@gmail.com"] = Reply(550, "5.1.1 no such user")
    [hold_id] = store.add_holds([NewHold("Q1", "hold", EDUARDO, ("beto@gmail.com",), case.content, case.now,
                                         ("right-to-disconnect",), ("Ley 2088 de 2021",), "Aviso de deuda pendiente",
                                         EDUARDO)], case.now)
    asyncio.run(Scheduler(disposer, disposer.log, SchedulerSettings()).tick())
    [released] = store.due_notices(case.now, 10)
    assert (released.to, released.kind, released.subject, released.text) == (to, kind, subject, text)
    assert store.get_hold(hold_id).state is HoldState.FAILED  # type: ignore[union-attr]


def test_the_milter_listens_on_a_unix_socket_replacing_a_stale_one(tmp_path: Path) -> None:
    import os
    import socket
    import stat

    from relay.config import Milter
    from relay.frontends.milter import listen

    path = tmp_path / "milter.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file left by a previous run
    stale.close()
    disposer, _, _ = build(CASES[0], tmp_path)

    async def go() -> int:
        server = await listen(disposer, Milter(listen=f"unix:{path}", socket_mode="0660"))
        mode = stat.S_IMODE(os.stat(path).st_mode)
        server.close()
        await server.wait_closed()
        return mode

    assert asyncio.run(go()) == 0o660
