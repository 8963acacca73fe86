"""DNS facts for a message, gathered before the pure engine decides: which recipient domains can
receive mail, and — for outside mail that claims one of our domains — SPF, DKIM and DMARC.

Lookups are made only where a rule can use them: recipient domains for our own senders (not for
mail from outside), sender authentication only for unauthenticated mail from outside networks
whose envelope or From domain is one of ours.
"""

from __future__ import annotations

from dataclasses import replace

from relay import mailauth, rewrite
from relay.addresses import AddressError, parse_address_list
from relay.config import Dns
from relay.directory import Directory
from relay.dns import Resolver
from relay.identity import Direction, identify
from relay.message import DnsFacts, Envelope


class DnsFailure(Exception):
    """DNS did not answer and the config says to answer 4xx (the client retries)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)

    @property
    def reply(self) -> str:
        return f"451 4.4.3 No se pudo consultar el DNS ({self.what[:80]}); intente mas tarde"


class DnsChecks:
    def __init__(self, config: Dns) -> None:
        self.config = config
        self.resolver = Resolver(list(config.nameservers) or None, config.port, config.timeout, config.cache_size)
        self._sealers = frozenset(d.casefold().rstrip(".") for d in config.arc_trusted_sealers)

    async def recipient_domains(self, envelope: Envelope, directory: Directory, only: str | None = None,
                                direction: Direction | None = None) -> tuple[tuple[str, str], ...]:
        """(domain, "mail" | "none") for the outside recipient domains of our own senders (all of
        the envelope's, or `only` that one recipient's)."""
        if (direction or identify(envelope, directory).direction) is not Direction.STAFF:
            return ()
        found = []
        rcpts = (only,) if only is not None else envelope.rcpt_to
        for domain in dict.fromkeys(r.rpartition("@")[2].casefold().rstrip(".") for r in rcpts
                                    if not directory.is_local(r)):
            if not domain or domain.startswith("["):
                continue  # an address literal: nothing to look up
            status = await self.resolver.mail_domain(domain)
            if status == "error":
                if self.config.on_failure == "tempfail":
                    raise DnsFailure(f"MX de {domain}")
                continue
            found.append((domain, status))
        return tuple(found)

    async def with_facts(self, envelope: Envelope, content: bytes | None, directory: Directory) -> Envelope:
        """The envelope with its DNS facts (recipient domains; sender authentication when the
        message claims one of our domains from outside). Raises DnsFailure (4xx) if so configured."""
        direction = identify(envelope, directory).direction
        if direction is Direction.STAFF:  # our own sender: only the recipient domains matter
            domains = await self.recipient_domains(envelope, directory, direction=direction)
            return replace(envelope, facts=DnsFacts(mail_domains=domains))
        facts = DnsFacts()
        if content is not None:
            facts = await self.sender_facts(envelope, content, directory, facts)
        return replace(envelope, facts=facts)

    async def sender_facts(self, envelope: Envelope, content: bytes, directory: Directory,
                           facts: DnsFacts) -> DnsFacts:
        fields, _ = rewrite.split_head(content)
        headers = [rewrite.field_name_value(f) for f in fields]
        from_domain = _from_domain(headers)
        claims = [d for d in (envelope.mail_from.rpartition("@")[2], from_domain) if d]
        if not any(directory.is_local(f"x@{d}") for d in claims):
            return facts
        if self.config.trust_authentication_results:
            reported = mailauth.trusted_results(headers, self.config.trust_authentication_results)
            if reported is not None:
                dmarc, policy = reported.dmarc, ""
                if from_domain and dmarc in (None, "fail"):  # the policy published decides what a fail means
                    result = await mailauth.check_dmarc(self.resolver, from_domain, reported.spf,
                                                        reported.spf_domain, reported.dkim)
                    dmarc, policy = dmarc or result.result, result.policy
                return replace(facts, spf=reported.spf, spf_domain=reported.spf_domain, dkim=reported.dkim,
                               dmarc=dmarc, dmarc_policy=policy, from_domain=from_domain,
                               source="authentication-results")
        spf_domain = envelope.mail_from.rpartition("@")[2] or (envelope.helo or "")
        checked = await mailauth.spf(self.resolver, envelope.client_ip or "", spf_domain, envelope.mail_from,
                                     envelope.helo or "") if spf_domain else mailauth.SpfResult("none")
        spf = checked.result
        if spf == "temperror" and self.config.on_failure == "tempfail":
            raise DnsFailure(f"SPF de {spf_domain}")
        dmarc, policy = None, ""
        dkim: tuple[str, ...] = ()
        if from_domain and not (spf == "pass" and spf_domain.casefold().rstrip(".") == from_domain):
            # SPF alone does not align the From: an aligned DKIM signature may (DMARC, RFC 7489 §4.2)
            signed = await mailauth.verify_dkim(self.resolver, content, wanted=from_domain)
            dkim = signed.passed
            if signed.temperror and not dkim and spf != "pass" and self.config.on_failure == "tempfail":
                raise DnsFailure(f"clave DKIM de {from_domain}")
        if from_domain:
            result = await mailauth.check_dmarc(self.resolver, from_domain, spf, spf_domain, dkim)
            if result.result == "temperror" and self.config.on_failure == "tempfail":
                raise DnsFailure(f"DMARC de {from_domain}")
            dmarc, policy = result.result, result.policy
        source = "dns"
        if from_domain and dmarc != "pass" and self._sealers and b"arc-seal:" in content[:65536].lower():
            # a list or forwarder changed it (SPF and DKIM broken): its verified ARC chain vouches for
            # what it received — only a trusted sealer's (RFC 8617 §7.2)
            arc = await mailauth.verify_arc(self.resolver, content, self._sealers)
            if mailauth.arc_vouches(arc, from_domain):
                dmarc, source = "pass", f"arc:{arc.sealer}"
        return replace(facts, spf=spf, spf_domain=spf_domain.casefold(), spf_explanation=checked.explanation,
                       dkim=dkim, dmarc=dmarc,
                       dmarc_policy=policy, from_domain=from_domain, source=source)


def _from_domain(headers: list[tuple[str, str]]) -> str:
    value = next((v for n, v in headers if n.lower() == "from"), "")
    try:
        addresses = parse_address_list(value)
    except AddressError:
        return ""
    return addresses[0].addr.rpartition("@")[2].casefold() if addresses else ""
