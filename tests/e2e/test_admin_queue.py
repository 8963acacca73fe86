"""Issue 26, the web queue people can work, over real HTTP against a running relay: search and
filters (dates in the institution's zone), every row reachable page by page (no hidden cap), bulk
and single actions only after a confirmation page, history and errors in Spanish, and sign-ins
that survive a restart of the relay."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from relay.auth import hash_password
from relay.store import HoldState, NewHold
from relay.store.sqlite import SqliteStore
from tests.e2e.harness import RelayProcess, Sink
from tests.e2e.http import Client, Page
from tests.e2e.test_admin_web import MODERATOR, START, admin_relay, signed_in
from tests.e2e.test_queue_tools import moderated, send_promo

P = "pasto.gov.co"
CONTENT = b"From: a@pasto.gov.co\r\nSubject: prueba\r\n\r\nTexto.\r\n"


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    r = admin_relay(tmp_path, sink)
    yield r
    r.stop()


def store_of(relay: RelayProcess) -> SqliteStore:
    """The running relay's own store (SQLite in WAL mode: another process may write it too)."""
    return SqliteStore(Path(str(relay.config["store"]).removeprefix("sqlite:")))


def put(relay: RelayProcess, holds: list[NewHold], at: datetime) -> list[str]:
    store = store_of(relay)
    try:
        return store.add_holds(holds, at)
    finally:
        store.close()


def held(queue_id: str, moderate: bool = True, sender: str = f"eduardo.hernandez@{P}",
         rcpt: str = f"jorge.benavides@{P}", subject: str = "Oferta") -> NewHold:
    return NewHold(queue_id=queue_id, reason="moderate" if moderate else "hold", mail_from=sender,
                   recipients=(rcpt,), content=CONTENT, deliver_at=None if moderate else START + timedelta(days=1),
                   rule_ids=("commercial-content-approval",) if moderate else ("right-to-disconnect",),
                   cites=("Circular 004 de 2021",), subject=subject, sender_notice_to=sender)


def row_ids(page: Page) -> list[str]:
    assert page.status == 200, page.text
    return re.findall(r'<tr class="hold [a-z]+" data-id="([^"]+)"', page.text)


def state(relay: RelayProcess, hold_id: str) -> HoldState:
    store = store_of(relay)
    try:
        hold = store.get_hold(hold_id)
        assert hold is not None
        return hold.state
    finally:
        store.close()


def test_every_held_message_is_reachable_page_by_page(relay: RelayProcess) -> None:
    """No hidden 500-row cap: 520 waiting messages are counted, and the last page shows the last."""
    ids = put(relay, [held(f"BULK{n:03d}", moderate=False) for n in range(520)], START)
    c = signed_in(relay)
    first = c.get("/holds")
    assert len(row_ids(first)) == 50 and "520 mensajes" in first.text and "página 1 de 11" in first.text
    last = c.get(html.unescape(re.search(r'<a href="([^"]+)" id="last">', first.text).group(1)))  # type: ignore[union-attr]
    assert "página 11 de 11" in last.text and len(row_ids(last)) == 20
    seen = []
    for n in range(1, 12):
        seen += row_ids(c.get(f"/holds?pagina={n}"))
    assert sorted(seen) == sorted(ids)
    assert len(row_ids(c.get("/holds?por_pagina=200&pagina=3"))) == 120


def test_the_list_is_searched_and_filtered(relay: RelayProcess) -> None:
    """By sender, recipient, rule, reason, a part of the subject, and dates in the institution's zone
    (Bogotá): a message stored at 23:30 on the 23rd, local time, is the 23rd's, though it is the 24th
    in UTC."""
    late = datetime.fromisoformat("2026-11-23T23:30:00-05:00")
    [night] = put(relay, [held("NIGHT", subject="Rifa navideña", sender=f"lucia.ortega@{P}")], late)
    [timed] = put(relay, [held("TIMED", moderate=False, rcpt=f"yanet.bastidas@{P}")], START)
    [promo] = put(relay, [held("PROMO", subject="Promoción seguros")], START + timedelta(minutes=5))
    c = signed_in(relay)
    assert sorted(row_ids(c.get("/holds"))) == sorted([night, timed, promo])
    assert row_ids(c.get(f"/holds?remitente=LUCIA.ORTEGA%40{P}")) == [night]
    assert row_ids(c.get(f"/holds?destinatario=yanet.bastidas%40{P}")) == [timed]
    assert row_ids(c.get("/holds?regla=right-to-disconnect")) == [timed]
    assert row_ids(c.get("/holds?motivo=moderate")) == [night, promo]
    assert row_ids(c.get("/holds?q=seguros")) == [promo]
    assert row_ids(c.get("/holds?q=night")) == [night]  # a part of the id
    assert row_ids(c.get("/holds?desde=2026-11-23&hasta=2026-11-23")) == [night]
    assert sorted(row_ids(c.get("/holds?desde=2026-11-24"))) == sorted([timed, promo])
    assert row_ids(c.get("/holds?desde=2026-11-24+11:33")) == [promo]
    narrowed = c.get("/holds?motivo=moderate&regla=commercial-content-approval")
    assert "2 mensajes coinciden" in narrowed.text and 'value="commercial-content-approval"' in narrowed.text
    bad = c.get("/holds?desde=ayer-noche")
    assert bad.status == 400 and "no es una fecha" in bad.text and "2026-11-27" in bad.text
    assert "Ningún mensaje coincide" in c.get("/holds?q=nadie-envia-esto").text


def test_bulk_actions_show_what_will_be_done_and_wait_for_confirmation(relay: RelayProcess, sink: Sink) -> None:
    m1, m2, m3 = put(relay, [held("M1"), held("M2"), held("M3")], START)
    [w1] = put(relay, [held("W1", moderate=False)], START)
    c = signed_in(relay)
    listing = c.get("/holds")
    csrf, back = listing.field("csrf"), "/holds"
    assert f'name="id" value="{m1}"' in listing.text and 'id="bulk-approve"' in listing.text
    assert c.post("/holds/bulk", [("id", m1), ("action", "approve")]).status == 403  # no CSRF token
    ask = c.post("/holds/bulk", [("csrf", csrf), ("back", back), ("id", m1), ("id", m2), ("id", w1),
                                 ("action", "approve")])
    assert ask.status == 200 and "Confirmar: aprobar 2 mensajes" in ask.text, ask.text
    assert re.search(rf'data-id="{w1}">.*?no: no es posible', ask.text, re.S)  # a waiting one cannot be approved
    assert [state(relay, i) for i in (m1, m2, w1)] == [HoldState.MODERATION, HoldState.MODERATION, HoldState.WAITING]
    fields = ask.hidden_fields("/holds/bulk/confirm")
    assert sorted(v for k, v in fields if k == "id") == sorted([m1, m2])
    done = c.post("/holds/bulk/confirm", fields)
    assert done.status == 200 and "2 de 2 mensajes aprobados" in done.text, done.text
    assert {state(relay, m1), state(relay, m2)} <= {HoldState.WAITING, HoldState.DELIVERING, HoldState.DELIVERED}
    again = c.post("/holds/bulk/confirm", fields)  # a second try says who decided, in Spanish
    assert again.status == 409 and "0 de 2" in again.text and "ya fue aprobado por comunicaciones" in again.text
    refuse = c.post("/holds/bulk", [("csrf", csrf), ("id", m3), ("id", w1), ("action", "reject")])
    assert "Confirmar: rechazar 2 mensajes" in refuse.text and 'id="reason"' in refuse.text
    no_reason = c.post("/holds/bulk/confirm", refuse.hidden_fields("/holds/bulk/confirm"))
    assert no_reason.status == 400 and state(relay, m3) is HoldState.MODERATION
    rejected = c.post("/holds/bulk/confirm", [*refuse.hidden_fields("/holds/bulk/confirm"),
                                              ("reason", "Publicidad no autorizada")])
    assert "2 de 2 mensajes rechazados" in rejected.text
    assert state(relay, m3) is HoldState.REJECTED and state(relay, w1) is HoldState.REJECTED
    assert c.post("/holds/bulk", [("csrf", csrf), ("action", "delete")]).status == 400  # nothing ticked


def test_single_approve_release_and_delete_ask_first(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = str(moderated(relay)["id"])
    [waiting] = put(relay, [held("W9", moderate=False)], START)
    c = signed_in(relay)
    page = c.get(f"/holds/{hold}")
    # the page's approve button is a form that asks (GET), not one that acts (POST)
    form = re.search(r'<form method="(\w+)" action="([^"]+)"[^>]*>\s*<button type="submit" id="approve"', page.text)
    assert form and form.groups() == ("get", f"/holds/{hold}/approve"), page.text
    ask = c.get(f"/holds/{hold}/approve")
    assert ask.status == 200 and "Confirmar: aprobar 1 mensaje" in ask.text and "Promocion exclusiva" in ask.text
    assert state(relay, hold) is HoldState.MODERATION
    done = c.post(f"/holds/{hold}/approve", ask.hidden_fields(f"/holds/{hold}/approve"))
    assert done.status == 200 and "Aprobado" in done.text
    for action, verb in (("release", "liberar ahora"), ("delete", "eliminar")):
        page = c.get(f"/holds/{waiting}")
        assert re.search(rf'<form method="get" action="/holds/{waiting}/{action}"', page.text), action
        ask = c.get(f"/holds/{waiting}/{action}")
        assert f"Confirmar: {verb} 1 mensaje" in ask.text and state(relay, waiting) is HoldState.WAITING
    done = c.post(f"/holds/{waiting}/delete", ask.hidden_fields(f"/holds/{waiting}/delete"))
    assert "Eliminado" in done.text and state(relay, waiting) is HoldState.DELETED


def test_history_and_errors_are_in_spanish(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = str(moderated(relay)["id"])
    c = signed_in(relay)
    page = c.get(f"/holds/{hold}")
    refused = c.post(f"/holds/{hold}/release", {"csrf": page.field("csrf")})  # release is for timed holds
    assert refused.status == 409 and "esta acción solo es posible si está «en espera»" in refused.text, refused.text
    assert "this needs" not in refused.text and "hold " not in refused.text
    c.post(f"/holds/{hold}/approve", {"csrf": page.field("csrf")})
    sink.wait_for(4)
    history = re.search(r'<ul class="history" id="history">(.*?)</ul>', c.get(f"/holds/{hold}").text, re.S)
    assert history, "no history"
    text = html.unescape(history.group(1))
    assert "retenido: requiere aprobación — reglas: commercial-content-approval" in text, text
    assert "aprobado por comunicaciones (web)" in text and "entregado a 2 destinatario(s)" in text, text
    for english in (" held", "approved", "delivered", " by ", "recipient(s)"):
        assert english not in text, english


def test_a_sign_in_survives_a_restart_of_the_relay(relay: RelayProcess) -> None:
    [m] = put(relay, [held("R1")], START)
    c = signed_in(relay)
    csrf = c.get("/holds").field("csrf")
    relay.stop()
    relay.start()
    page = c.get("/holds")
    assert page.status == 200 and m in row_ids(page), (page.status, page.headers.get("location"))
    assert page.field("csrf") == csrf  # the forms of pages opened before the restart still work
    ask = c.post("/holds/bulk", [("csrf", csrf), ("id", m), ("action", "delete")])
    assert ask.status == 200 and "Confirmar: eliminar 1 mensaje" in ask.text
    out = c.post("/logout", {"csrf": csrf})
    assert out.status == 303
    assert c.get("/holds").status == 303  # signed out, the cookie is gone


def test_a_signed_out_cookie_is_refused_even_if_kept(relay: RelayProcess) -> None:
    """Signing out ends the session on the relay's side too: a copy of the cookie kept elsewhere
    (a shared computer, a stolen cookie) no longer opens the pages, also after a restart."""
    c = signed_in(relay)
    kept = dict(c.cookies)
    c.post("/logout", {"csrf": c.get("/holds").field("csrf")})
    thief = Client(c.port, dict(kept))
    assert thief.get("/holds").status == 303
    relay.stop()
    relay.start()
    assert Client(c.port, dict(kept)).get("/holds").status == 303


def test_a_new_password_or_a_removed_account_ends_its_sign_ins(relay: RelayProcess) -> None:
    """A sign-in kept in its cookie is still the account's: once the relay runs with the account's
    password changed (or the account gone; `admin:` is read at start), it ends, and the new
    password signs in again."""
    c = signed_in(relay)
    assert c.get("/holds").status == 200
    [account] = [a for a in relay.config["admin"]["accounts"] if a["login"] == MODERATOR]
    account["password_hash"] = hash_password("una-clave-nueva-larga", iterations=1000)
    relay.stop()
    relay.start()  # writes the config
    assert c.get("/holds").status == 303
    again = Client(c.port)
    assert again.sign_in(MODERATOR, "una-clave-nueva-larga").status == 303 and again.get("/holds").status == 200
    relay.config["admin"]["accounts"] = [a for a in relay.config["admin"]["accounts"] if a["login"] != MODERATOR]
    relay.stop()
    relay.start()  # writes the config
    assert again.get("/holds").status == 303


def test_everything_matching_takes_every_page_and_no_more_than_the_cap(relay: RelayProcess) -> None:
    """Issue 26: «todos los que coinciden» takes every hold of the search (all pages, not just the
    ticked rows) to the confirmation page; a search matching nothing, or more than MAX_ALL, is refused
    with a Spanish page, and nothing changes."""
    from relay.web.queue import MAX_ALL

    waiting = put(relay, [held(f"T{n:02d}", moderate=False) for n in range(12)], START)
    [moderated] = put(relay, [held("MOD")], START)
    c = signed_in(relay)
    listing = c.get("/holds?estado=waiting&por_pagina=5")
    csrf, back = listing.field("csrf"), html.unescape(listing.field("back"))
    assert 'id="select-all"' in listing.text and "todos los 12 mensajes que coinciden" in listing.text
    ask = c.post("/holds/bulk", [("csrf", csrf), ("back", back), ("todos", "1"), ("id", waiting[0]),
                                 ("action", "release")])
    assert ask.status == 200 and "Confirmar: liberar ahora 12 mensajes" in ask.text, ask.text
    fields = ask.hidden_fields("/holds/bulk/confirm")
    assert sorted(v for k, v in fields if k == "id") == sorted(waiting) and moderated not in ask.text
    assert {state(relay, i) for i in waiting} == {HoldState.WAITING}  # nothing done before the confirmation
    done = c.post("/holds/bulk/confirm", fields)
    assert done.status == 200 and "12 de 12 mensajes liberados" in done.text, done.text
    assert state(relay, moderated) is HoldState.MODERATION
    none = c.post("/holds/bulk", [("csrf", csrf), ("back", "/holds?q=nada-coincide"), ("todos", "1"),
                                  ("action", "delete")])
    assert none.status == 400 and "Ningún mensaje coincide" in none.text
    put(relay, [held(f"B{n:04d}") for n in range(MAX_ALL + 1)], START)
    too_many = c.post("/holds/bulk", [("csrf", csrf), ("back", "/holds"), ("todos", "1"), ("action", "delete")])
    assert too_many.status == 400 and f"hasta {MAX_ALL}" in too_many.text and "afine la búsqueda" in too_many.text
    assert state(relay, moderated) is HoldState.MODERATION
