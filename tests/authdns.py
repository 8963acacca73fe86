"""A small authoritative DNS server for the SPF test suites (dnspython), on a loopback UDP and TCP
port, in a thread of the test process. The zone can be replaced between tests.

Why not dnsmasq (tests/dnsserver.py) here: the OpenSPF suites need answers dnsmasq cannot give —
a query that times out for one type of a name and not another (TIMEOUT), records of the old SPF
type 99 next to TXT ones, TXT records of several strings or of none, CNAME chains and loops, names
with ':', '/', '%' or spaces in them, and a fresh zone for each of ~200 scenarios (restarting
dnsmasq each time costs seconds). The relay's own resolver (relay.dns.Resolver) queries this server
over real sockets, as it queries any nameserver.

A zone maps a lower-case name to its records, each (TYPE, value): A/AAAA/PTR/CNAME a string, MX
(preference, host), TXT/SPF a tuple of strings; ("TIMEOUT", None) makes every query of the name for
a type it has no record of go unanswered, and a record whose value is "TIMEOUT" makes the queries
of its type go unanswered; ("RCODE", "SERVFAIL") (or REFUSED...) answers every query of the name
with that response code.
"""

from __future__ import annotations

import socketserver
import struct
import threading
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SPF
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

Zone = dict[str, list[tuple[str, Any]]]
IN = dns.rdataclass.IN
TTL = 300


def name_of(text: str) -> dns.name.Name:
    """A name label by label as written (any characters), like the relay's resolver builds them."""
    text = text.rstrip(".")
    return dns.name.Name([label.encode("utf-8") for label in text.split(".")] + [b""]) if text else dns.name.root


def text_of(name: dns.name.Name) -> str:
    return ".".join(label.decode("utf-8", "replace") for label in name.labels if label).lower()


def _strings(value: tuple[str, ...]) -> list[bytes]:
    """The character-strings of a TXT record: a TXT record of no strings is not DNS (RFC 1035
    §3.3.14 wants one or more, and dnspython cannot write one): it is sent as one empty string."""
    out = []
    for string in value:
        data = string.encode("utf-8")
        out.extend(data[i:i + 255] for i in range(0, len(data), 255)) if data else out.append(b"")
    return out or [b""]


def rdata(rdtype: str, value: Any) -> dns.rdata.Rdata:
    if rdtype == "A":
        return dns.rdtypes.IN.A.A(IN, dns.rdatatype.A, value)
    if rdtype == "AAAA":
        return dns.rdtypes.IN.AAAA.AAAA(IN, dns.rdatatype.AAAA, value)
    if rdtype == "MX":
        return dns.rdtypes.ANY.MX.MX(IN, dns.rdatatype.MX, int(value[0]), name_of(str(value[1])))
    if rdtype == "PTR":
        return dns.rdtypes.ANY.PTR.PTR(IN, dns.rdatatype.PTR, name_of(value))
    if rdtype == "CNAME":
        return dns.rdtypes.ANY.CNAME.CNAME(IN, dns.rdatatype.CNAME, name_of(value))
    if rdtype == "TXT":
        return dns.rdtypes.ANY.TXT.TXT(IN, dns.rdatatype.TXT, _strings(value))
    if rdtype == "SPF":
        return dns.rdtypes.ANY.SPF.SPF(IN, dns.rdatatype.SPF, _strings(value))
    raise ValueError(f"record type {rdtype} not served")


class AuthServer:
    def __init__(self, zone: Zone | None = None) -> None:
        self.zone: Zone = zone or {}
        self.queries = 0
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                (size,) = struct.unpack("!H", head)
                data = b""
                while len(data) < size:
                    chunk = self.request.recv(size - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data, tcp=True)
                if reply is not None:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        for _ in range(20):  # the same port for UDP and TCP (a truncated answer is asked again over TCP)
            self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            self.port = int(self.udp.server_address[1])
            try:
                self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
                break
            except OSError:
                self.udp.server_close()
        else:
            raise RuntimeError("no free port for UDP and TCP")
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.udp, self.tcp)]

    def start(self) -> AuthServer:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()

    def answer(self, wire: bytes, tcp: bool = False) -> bytes | None:
        """The reply to one query, or None to let it time out."""
        self.queries += 1
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        question = query.question[0]
        name, rdtype = text_of(question.name), dns.rdatatype.to_text(question.rdtype)
        entries = self.zone.get(name)
        if entries is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            return reply.to_wire()
        rcode = next((v for t, v in entries if t == "RCODE"), None)
        if rcode is not None:
            reply.set_rcode(dns.rcode.from_text(rcode))
            return reply.to_wire()
        seen = {name}
        owner = question.name
        while True:
            records = [v for t, v in entries if t == rdtype]
            if any(v == "TIMEOUT" for v in records):
                return None
            if records:
                rrset = dns.rrset.RRset(owner, IN, question.rdtype)
                for value in records:
                    rrset.add(rdata(rdtype, value), TTL)
                reply.answer.append(rrset)
                break
            cnames = [v for t, v in entries if t == "CNAME"]
            if cnames and rdtype != "CNAME":
                rrset = dns.rrset.RRset(owner, IN, dns.rdatatype.CNAME)
                rrset.add(rdata("CNAME", cnames[0]), TTL)
                reply.answer.append(rrset)
                target = cnames[0].rstrip(".").lower()
                if target in seen or target not in self.zone:
                    break  # a loop, or a target outside what we serve: the resolver decides
                seen.add(target)
                owner, entries = name_of(cnames[0]), self.zone[target]
                continue
            if any(t == "TIMEOUT" for t, _ in entries):
                return None
            break
        wire_reply = reply.to_wire()
        if not tcp and len(wire_reply) > 512 and query.edns < 0:
            reply.answer.clear()
            reply.flags |= dns.flags.TC
            wire_reply = reply.to_wire()
        return wire_reply
