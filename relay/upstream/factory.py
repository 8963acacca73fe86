"""The one module that knows every next-hop backend: a config's upstream URL -> an `Upstream`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.config import UpstreamOptions
from relay.upstream.base import Upstream
from relay.upstream.maildir import MaildirUpstream
from relay.upstream.mx import MxUpstream
from relay.upstream.smtp import SmtpUpstream


def make_upstream(url: str, helo: str, base: Path, options: UpstreamOptions | None = None,
                  resolver: Any = None) -> Upstream:
    """Build the upstream a config names; paths are relative to `base` (the config's folder);
    `resolver` (relay.dns.Resolver) finds the hosts of an mx: upstream."""
    client_cert = None
    if options and options.tls_client_cert:
        client_cert = (base / options.tls_client_cert, base / (options.tls_client_key or options.tls_client_cert))
    if url.startswith("mx:"):
        from relay.dns import Resolver  # only an mx: upstream resolves names

        target, _, query = url.removeprefix("mx:").partition("?")
        domain, _, port = target.partition(":")
        options = options or UpstreamOptions()
        tls = dict(p.partition("=")[::2] for p in query.split("&") if p).get("tls", "may")
        ca_file = base / options.tls_ca_file if options.tls_ca_file else None
        return MxUpstream(domain, int(port or 25), helo, resolver or Resolver(), options.timeout, options.pool_size,
                          tls, options.tls_verify, ca_file, client_cert)
    if url.startswith("maildir:"):
        path = Path(url.removeprefix("maildir:"))
        return MaildirUpstream(path if path.is_absolute() else base / path)
    options = options or UpstreamOptions()
    ca_file = base / options.tls_ca_file if options.tls_ca_file else None
    password = None
    if options.password_file:
        password = (base / options.password_file).read_text(encoding="utf-8").strip()
    return SmtpUpstream(url, helo, options.timeout, options.pool_size, options.tls_verify, ca_file, password,
                        client_cert=client_cert)
