"""policy-relay: an SMTP relay and milter that enforces an institution's e-mail policy."""

__version__ = "0.1.0"
