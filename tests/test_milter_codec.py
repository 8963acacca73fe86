"""The milter codec (pure): packets as Postfix's milter8.c writes them, replies as it reads them."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.frontends import milter_codec as mc
from relay.rewrite import header_edits


def pkt(code: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + code + data


def test_a_session_as_postfix_sends_it_split_at_every_byte() -> None:
    stream = b"".join([
        pkt(b"O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF)),
        pkt(b"D", b"C" + b"j\0mx.test\0{client_addr}\x00192.0.2.7\0"),
        pkt(b"C", b"client.test\0" + b"4" + struct.pack("!H", 40000) + b"192.0.2.7\0"),
        pkt(b"H", b"client.test\0"),
        pkt(b"D", b"M" + b"i\0ABC123\0{auth_authen}\0ana@inst.gov.co\0"),
        pkt(b"M", b"<ana@inst.gov.co>\0SIZE=100\0BODY=8BITMIME\0"),
        pkt(b"R", b"<b@inst.gov.co>\0NOTIFY=NEVER\0"),
        pkt(b"L", b"Subject\0 Hola\n\tmundo\0"),
        pkt(b"N"),
        pkt(b"B", b"linea 1\r\nlinea 2\r\n"),
        pkt(b"E"),
        pkt(b"A"),
        pkt(b"K"),
        pkt(b"Q"),
    ])
    decoder = mc.Decoder()
    got: list[mc.Command] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i:i + 1])
    assert got == [
        mc.OptNeg(6, 0x1FF, 0x1FFFFF),
        mc.Macros(b"C", {"j": "mx.test", "client_addr": "192.0.2.7"}),
        mc.Connect("client.test", "4", 40000, "192.0.2.7"),
        mc.Helo("client.test"),
        mc.Macros(b"M", {"i": "ABC123", "auth_authen": "ana@inst.gov.co"}),
        mc.Mail("ana@inst.gov.co", ("SIZE=100", "BODY=8BITMIME")),
        mc.Rcpt("b@inst.gov.co", ("NOTIFY=NEVER",)),
        mc.Header(b"Subject", b" Hola\n\tmundo"),
        mc.Simple(b"N"),
        mc.Body(b"linea 1\r\nlinea 2\r\n"),
        mc.Simple(b"E"),
        mc.Simple(b"A"),
        mc.Simple(b"K"),
        mc.Simple(b"Q"),
    ]


def test_unix_and_unknown_connect_families() -> None:
    assert mc.parse(b"C", b"localhost\0L" + struct.pack("!H", 0) + b"/run/x.sock\0") == \
        mc.Connect("localhost", "L", 0, "/run/x.sock")
    assert mc.parse(b"C", b"unknown\0U") == mc.Connect("unknown", "U", 0, "")


@pytest.mark.parametrize("data", [
    pkt(b"Z"),  # unknown command
    pkt(b"O", b"\0\0\0\6"),  # short negotiation
    pkt(b"M", b"<a@b>"),  # no NUL terminator
    pkt(b"L", b"Subject\0"),  # header without value
    struct.pack("!I", 0),  # empty packet
    struct.pack("!I", mc.MAX_PACKET + 1) + b"B",  # oversized
])
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(mc.ProtocolError):
        mc.Decoder().feed(data)


def test_negotiation_reply_carries_the_macro_lists() -> None:
    data = mc.reply_optneg(0x10D, 0x1000A0, {mc.M_ENVFROM: "i {auth_authen}", mc.M_CONNECT: "j"})
    size, code = struct.unpack("!IB", data[:5])
    assert size == len(data) - 4 and bytes([code]) == b"O"
    assert struct.unpack("!III", data[5:17]) == (6, 0x10D, 0x1000A0)
    assert data[17:] == struct.pack("!I", 0) + b"j\0" + struct.pack("!I", 2) + b"i {auth_authen}\0"


def test_reply_codes_are_what_postfix_accepts() -> None:
    # Postfix (milter8.c) wants 4xx/5xx, then an enhanced code of the same class; '%' is doubled.
    assert mc.reply_code("550 5.7.1 [x] 100% no") == pkt(b"y", b"550 5.7.1 [x] 100%% no\0")
    assert mc.reply_code("451 busy") == pkt(b"y", b"451 4.0.0 busy\0")
    assert mc.reply_code("554 5.7.1 two\r\n lines") == pkt(b"y", b"554 5.7.1 two lines\0")
    for bad in ("250 2.0.0 ok", "55 x", "hello"):
        with pytest.raises(ValueError):
            mc.reply_code(bad)


def test_modifications() -> None:
    assert mc.mod_delete_rcpt("b@inst.gov.co") == pkt(b"-", b"<b@inst.gov.co>\0")
    assert mc.mod_add_header("X-Relay-Queue-ID", "ABC") == pkt(b"h", b"X-Relay-Queue-ID\0ABC\0")
    assert mc.mod_change_header(2, "To", b"") == pkt(b"m", struct.pack("!I", 2) + b"To\0\0")


@given(st.lists(st.tuples(st.sampled_from([b"B", b"L", b"R"]), st.binary(max_size=40)), max_size=20),
       st.integers(min_value=1, max_value=64))
def test_any_chunking_gives_the_same_commands(packets: list[tuple[bytes, bytes]], step: int) -> None:
    stream = b"".join(pkt(code, data + b"\0\0") for code, data in packets)
    whole = mc.Decoder().feed(stream)
    decoder = mc.Decoder()
    pieces: list[mc.Command] = []
    for i in range(0, len(stream), step):
        pieces += decoder.feed(stream[i:i + step])
    assert pieces == whole and len(whole) == len(packets)


def test_header_edits_turn_before_into_after() -> None:
    before = [b"From: a@x", b"To: l@x, b@x", b"X-Relay-Queue-ID: forged", b"Cc: c@x", b"X-Relay-Rule-Hits: f",
              b"x-relay-queue-id: forged2"]
    after = [b"From: a@x", b"To: b@x", b"X-Relay-Queue-ID: Q1", b"X-Relay-Rule-Hits: r"]
    assert header_edits(before, after) == [
        ("To", 1, b" b@x"),
        ("X-Relay-Queue-ID", 1, b" Q1"),
        ("X-Relay-Rule-Hits", 1, b" r"),
        ("x-relay-queue-id", 2, None),
        ("Cc", 1, None),
    ]
    assert header_edits(before, before) == []
    assert header_edits([b"Subject: s"], [b"Subject: s", b"To: undisclosed-recipients:;"]) == [
        ("To", 0, b" undisclosed-recipients:;")]


@given(st.binary(max_size=3 * mc.BODY_CHUNK + 7))
def test_a_replacement_body_is_cut_into_packets_the_mta_joins(body: bytes) -> None:
    packets = mc.mod_replace_body(body)
    joined = b""
    for p in packets:
        (length,) = struct.unpack("!I", p[:4])
        assert p[4:5] == mc.R_REPLBODY and length == len(p) - 4 and length - 1 <= mc.BODY_CHUNK
        joined += p[5:]
    assert joined == body and len(packets) == max(1, -(-len(body) // mc.BODY_CHUNK))
