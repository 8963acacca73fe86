"""The next hop: SMTP/LMTP (relay.upstream.smtp), a Maildir (maildir), the MX hosts of a domain
(mx); `factory.make_upstream` builds the one a config names. Callers only need what is here."""

from relay.upstream.base import UPSTREAM_DOWN, Reply, Transaction, Upstream, UpstreamError

__all__ = ["UPSTREAM_DOWN", "Reply", "Transaction", "Upstream", "UpstreamError"]
