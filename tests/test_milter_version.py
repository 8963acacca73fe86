"""Milter negotiation answers with the lower protocol version (Postfix milter_protocol 2..6)."""

from __future__ import annotations

import struct

import pytest

from relay.frontends import milter_codec as mc


@pytest.mark.parametrize(("offered", "answered"), [(2, 2), (3, 3), (4, 4), (6, 6), (7, 6)])
def test_the_lower_version_is_answered(offered: int, answered: int) -> None:
    reply = mc.reply_optneg(mc.F_ADDHDRS, 0, {mc.M_CONNECT: "j"}, offered)
    version, actions, _ = struct.unpack("!III", reply[5:17])
    assert (version, actions) == (answered, mc.F_ADDHDRS)
    assert (len(reply) > 17) is (answered >= 6)  # macro lists exist only from version 6
