"""The relay's own configuration (YAML, validated by pydantic); paths are relative to the file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay import yamlconf
from relay.ldapdir import LdapSettings, check_url, is_ldap_url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=10025, ge=1, le=65535)


class Limits(_Strict):
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=1000, ge=1)
    max_connections: int = Field(default=100, ge=1)
    idle_timeout: float = Field(default=300, gt=0, description="seconds without a command")
    data_timeout: float = Field(default=600, gt=0, description="seconds for a whole DATA transfer")
    max_line_length: int = Field(default=998, ge=78)
    max_connections_per_client: int | None = Field(
        default=20, ge=1, description="open connections from one client address (trusted hops exempt); null: none")
    memory_budget: int = Field(default=128 * 1024 * 1024, ge=1024 * 1024,
                               description="message bytes held in memory at once; beyond it DATA spools to disk")
    max_junk_commands: int = Field(default=100, ge=1, description="NOOP, VRFY, EXPN or HELP per session")
    max_errors: int = Field(default=20, ge=1, description="protocol errors (5xx syntax) before 421 and close")


class Tls(_Strict):
    cert: str
    key: str
    require_for_auth: bool = True
    client_ca: str | None = Field(default=None, description="CA bundle to verify TLS client certificates "
                                  "(asked for, not required); needed by trust.hosted certificate_names")


class Auth(_Strict):
    credentials_file: str
    allow_plaintext_on_loopback: bool = False
    max_failures_per_connection: int = Field(default=3, ge=1, description="failed AUTH, then 421 and close")
    max_failures_per_client: int = Field(default=10, ge=1, description="failed AUTH per address per window")
    max_failures_per_login: int = Field(default=20, ge=1, description="failed AUTH for one login from any address "
                                        "per window; then 454 from addresses it never signed in from")
    failure_window: float = Field(default=600, gt=0, description="seconds a failed AUTH is counted")
    failure_delay: float = Field(default=1.0, ge=0, description="seconds before the first 535 (doubles, max 16x)")


def _networks(value: tuple[str, ...], example: str) -> tuple[str, ...]:
    """Each item an IP address or network; the error shows `example`."""
    import ipaddress

    for net in value:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ValueError(f"{net!r}: use an IP address or network ({example})") from None
    return value


class HostedHop(_Strict):
    """A hosted mail service (Exchange Online, Google Workspace) accepted as a trusted hop."""

    service: Literal["exchange_online", "google_workspace"]
    clients: tuple[str, ...] = Field(default=(), description="the service's sending ranges "
                                     "(e.g. Exchange Online 40.92.0.0/15)")
    certificate_names: tuple[str, ...] = Field(
        default=(), description="names its TLS client certificate must carry (*.mail.protection.outlook.com)")
    require: Literal["both", "any"] = Field(
        default="both", description="both: address and certificate must match; any: either one")
    tenant_id: str | None = Field(
        default=None, description="Exchange Online: the tenant's id (GUID); X-MS-Exchange-CrossTenant-Id must "
        "be it, since every tenant's mail comes from the same servers and certificate")

    _clients = field_validator("clients")(lambda value: _networks(value, "40.92.0.0/15"))


class LoopGuard(_Strict):
    """The header the relay stamps on every message it delivers (an HMAC with the relay's secret
    over the queue id, the time and the Message-ID): the hosted service's routing rule excepts it,
    and a stamped message coming back from a trusted hosted hop is passed on once, unchanged
    (relay/hosted.py; docs/microsoft365.md, docs/google-workspace.md)."""

    header: str = Field(default="X-Policy-Relay-Loop", description="the header's name (what the mail-flow rule's "
                        "'a message header matches' exception names)")
    max_age: float = Field(default=86400, gt=0, le=30 * 86400,
                           description="seconds a stamp is believed after the relay wrote it")
    secret_file: str | None = Field(default=None, description="HMAC key (made, mode 0600, when missing); "
                                    "default: admin.secret_file when admin: is set, else var/relay.secret")

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,75}", value):
            raise ValueError(f"{value!r}: use a header name of letters, digits and '-' (X-Policy-Relay-Loop)")
        if value.lower().startswith("x-relay-"):
            raise ValueError(f"{value!r}: X-Relay-* headers are removed from every message; use e.g. "
                             "X-Policy-Relay-Loop")
        return value


class Trust(_Strict):
    """Hops whose XFORWARD and recorded SASL login we believe (a content_filter Postfix)."""

    xforward_hosts: tuple[str, ...] = ()
    login_header: str = "X-Authenticated-Sender"
    hosted: tuple[HostedHop, ...] = Field(
        default=(), description="hosted services in front of the relay (docs/microsoft365.md, "
        "docs/google-workspace.md)")
    loop_guard: LoopGuard | None = Field(
        default=None, description="stamp delivered mail so the hosted service does not send it through again")


class LocalSubmission(_Strict):
    """Mail submitted on the mail server itself (Postfix `sendmail`/pickup through
    `non_smtpd_milters`, which presents it as 127.0.0.1 with no login): staff mail, not a relay
    attempt. docs/postfix.md has the main.cf lines."""

    clients: tuple[str, ...] = Field(default=("127.0.0.1", "::1"),
                                     description="client addresses that are the server itself")
    login: str | None = Field(default=None, description="identity such mail gets, as if it had logged "
                              "in (e.g. sistemas@inst.gov.co); null: the sender must be a known address")

    _clients = field_validator("clients")(lambda value: _networks(value, "127.0.0.1, ::1, 10.0.0.5/32"))

    @field_validator("login")
    @classmethod
    def _login(cls, value: str | None) -> str | None:
        if value is not None and "@" not in value:
            raise ValueError(f"{value!r}: use an e-mail address (sistemas@inst.gov.co)")
        return value


class UpstreamOptions(_Strict):
    """How the relay talks to its upstream (smtp://, smtps://, lmtp://)."""

    timeout: float = Field(default=60, gt=0, description="seconds for connect and each reply")
    pool_size: int = Field(default=8, ge=0, le=1000, description="idle connections kept for reuse")
    tls_ca_file: str | None = Field(default=None, description="CA bundle to verify the upstream (default: system)")
    tls_verify: bool = Field(default=True, description="false only for a lab upstream with a self-signed cert")
    password_file: str | None = Field(default=None, description="file with the AUTH password (not in the URL)")
    tls_client_cert: str | None = Field(default=None, description="PEM certificate the relay presents in TLS to "
                                        "the upstream (Exchange Online's certificate-based inbound connector, "
                                        "smtp-relay.gmail.com); use with ?starttls=1")
    tls_client_key: str | None = Field(default=None, description="its private key (default: in tls_client_cert)")


class Scheduler(_Strict):
    """Releasing held mail and sending notices."""

    batch: int = Field(default=50, ge=1, le=10000, description="holds claimed per round")
    concurrency: int = Field(default=4, ge=1, le=100, description="holds delivered at once")
    retry_base: float = Field(default=60, gt=0, description="seconds before the first retry (doubles)")
    retry_max: float = Field(default=3600, gt=0, description="longest wait between retries")
    alert_after_attempts: int = Field(default=6, ge=1, description="attempts before alert_to is told")
    alert_to: str | None = Field(default=None, description="mailbox told about a hold that cannot be delivered")
    max_sleep: float = Field(default=60, gt=0, le=3600, description="longest sleep; bounds a wall-clock jump")
    retention_days: int | None = Field(default=None, ge=1, le=3650, description="days the message trace is kept "
                                       "(decisions with addresses and subjects, trace events, finished holds: "
                                       "personal data, Ley 1581 de 2012); purged hourly; null keeps everything")


class Milter(_Strict):
    """The milter listener (Postfix smtpd_milters / Sendmail INPUT_MAIL_FILTER)."""

    listen: str = Field(description="inet:HOST:PORT or unix:/PATH, as Postfix writes milter addresses")
    idle_timeout: float = Field(default=900, gt=0, description="seconds a silent MTA connection is kept")
    socket_mode: str = Field(default="0660", description="permissions of a unix socket (octal)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        kind, _, rest = value.partition(":")
        if kind == "unix" and rest.startswith("/"):
            return value
        host, _, port = rest.rpartition(":")
        if kind == "inet" and host and port.isdigit() and 0 < int(port) < 65536:
            return value
        raise ValueError(f"{value!r}: use inet:127.0.0.1:8895 or unix:/var/spool/postfix/policy-relay/milter")

    @field_validator("socket_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        try:
            int(value, 8)
        except ValueError:
            raise ValueError(f"{value!r}: an octal mode such as 0660") from None
        return value

    def address(self) -> tuple[str, str, int]:
        """('inet', host, port) or ('unix', path, 0)."""
        kind, _, rest = self.listen.partition(":")
        if kind == "unix":
            return kind, rest, 0
        host, _, port = rest.rpartition(":")
        return kind, host.strip("[]"), int(port)


class AdminAccount(_Strict):
    """A moderator or operator who signs in to the admin pages."""

    login: str = Field(min_length=1, max_length=200)
    password_hash: str = Field(description="pbkdf2_sha256$...; make one with: relay passwd LOGIN")
    name: str = ""
    mailboxes: tuple[str, ...] = Field(default=(), description="moderator addresses whose notice links this "
                                       "account may use (besides its login, when that is an address)")
    any_link: bool = Field(default=False, description="may use the notice links sent to any moderator")

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        if not value.startswith("pbkdf2_sha256$") or value.count("$") != 3:
            raise ValueError("not a password hash; make one with `relay passwd LOGIN` and paste what follows "
                             "'LOGIN:'")
        return value


class ApiToken(_Strict):
    """A client of the JSON API (/api/v1/...): its token's hash, made by `relay api-token new NAME`."""

    name: str = Field(min_length=1, max_length=200)
    token_hash: str = Field(description="sha256$HEX; make one with: relay api-token new NAME")
    scope: Literal["read", "moderate"] = Field(default="read", description="read: holds, trace, report, "
                                               "health; moderate: also approve, reject, release, delete")

    @field_validator("token_hash")
    @classmethod
    def _token_hash(cls, value: str) -> str:
        from relay.apitokens import valid_hash

        if not valid_hash(value):
            raise ValueError("not a token hash; make one with `relay api-token new NAME` and paste its "
                             "token_hash (sha256$ and 64 hex digits)")
        return value


class Admin(_Strict):
    """The admin listener: moderation pages, rule test page, /metrics, /healthz, /readyz."""

    listen: str = Field(default="127.0.0.1:8025", description="HOST:PORT; keep it on loopback behind a proxy")
    public_url: str | None = Field(default=None, description="base of the links in moderation notices, "
                                   "e.g. https://relay.example.gov.co (default: http://LISTEN)")
    secret_file: str = Field(default="var/admin.secret", description="HMAC key for links and sessions; "
                             "made (mode 0600) when missing")
    accounts: tuple[AdminAccount, ...] = ()
    link_ttl: float = Field(default=3 * 86400, gt=0, description="seconds a link in a notice stays valid")
    session_ttl: float = Field(default=8 * 3600, gt=0, description="seconds a sign-in lasts")
    max_failures_per_account: int = Field(default=10, ge=1, description="failed sign-ins per login per window")
    max_failures_per_client: int = Field(default=30, ge=1, description="failed sign-ins per address per window")
    failure_window: float = Field(default=900, gt=0, description="seconds a failed sign-in is counted")
    api_tokens: tuple[ApiToken, ...] = Field(default=(), description="clients of the JSON API (docs/api.md)")
    api_token_file: str | None = Field(default=None, description="more API clients, NAME:sha256$HEX[:SCOPE] "
                                       "lines; read again when it changes")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return value
        raise ValueError(f"{value!r}: use HOST:PORT, e.g. 127.0.0.1:8025")

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: use http://HOST:PORT or https://HOST")
        return value.rstrip("/") if value else value

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def base_url(self) -> str:
        host, port = self.address()
        return self.public_url or (f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")


class RateLimit(_Strict):
    """At most `limit` recipients per `window` seconds for one of our senders (its SASL login, or
    its own address): a compromised account must not get the institution listed as a spammer.
    Counted in the store, so several relays on one PostgreSQL share the count."""

    window: int = Field(ge=60, le=7 * 86400, description="seconds; counted in fixed windows (3600: per hour)")
    limit: int = Field(ge=1, description="recipients per sender and window")


class StoreOptions(_Strict):
    """Tuning of a postgresql:// store (ignored by sqlite:)."""

    lease: float = Field(default=300, ge=1, description="seconds a relay owns a hold it is releasing; after a "
                         "crash another relay takes it over then (longer than the slowest delivery)")
    pool_size: int = Field(default=10, ge=1, le=200, description="connections per relay")


class Dns(_Strict):
    """DNS checks: recipient domains that cannot receive mail, and SPF/DMARC of outside mail that
    claims one of the institution's domains. Off unless this section is present."""

    nameservers: tuple[str, ...] = Field(default=(), description="resolver addresses; empty: /etc/resolv.conf")
    port: int = Field(default=53, ge=1, le=65535)
    timeout: float = Field(default=3, gt=0, le=30, description="seconds for one lookup, retries included")
    on_failure: Literal["tempfail", "pass"] = Field(
        default="tempfail", description="DNS did not answer: 4xx (the client retries) or let the mail through")
    trust_authentication_results: str | None = Field(
        default=None, description="authserv-id of the hop in front (e.g. the MX) whose Authentication-Results "
                                  "are believed instead of our own SPF/DMARC lookups")
    cache_size: int = Field(default=20000, ge=100)
    arc_trusted_sealers: tuple[str, ...] = Field(
        default=(), description="domains (ARC-Seal d=) of the lists and forwarders whose verified ARC chain "
                                "(RFC 8617) vouches for mail they changed on the way")


class Log(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class RelayConfig(_Strict):
    hostname: str = "policy-relay.local"
    listen: Listen | None = Field(default=Listen(), description="the SMTP listener; null for milter only")
    milter: Milter | None = None
    policy: str
    directory: str = Field(description="institution YAML file, or ldap://HOST / ldaps://HOST with an ldap: section")
    upstream: str = Field(default="maildir:var/maildir",
                          description="smtp://host:port, lmtp://host:port, "
                                      "mx:DOMAIN[:PORT][?tls=may|require|off], maildir:PATH")
    upstream_options: UpstreamOptions = UpstreamOptions()
    store: str = Field(default="sqlite:var/relay.sqlite3",
                       description="sqlite:PATH, or postgresql://USER@HOST:PORT/DB for several relays")
    store_options: StoreOptions = StoreOptions()
    rate_limits: tuple[RateLimit, ...] = Field(default=(), description="e.g. [{window: 3600, limit: 500}, "
                                               "{window: 86400, limit: 2000}]")
    pid_file: str = Field(default="var/relay.pid", description="`relay queue` signals this process (SIGUSR1)")
    scheduler: Scheduler = Scheduler()
    limits: Limits = Limits()
    tls: Tls | None = None
    auth: Auth | None = None
    trust: Trust = Trust()
    auto_reply_grace_period: float = Field(
        default=90 * 86400, ge=0, description="seconds; one auto-reply per sender and mailbox in this period, "
        "kept in the store (as Mailman's autoresponse_grace_period, 90 days); 0: answer every time")
    local_submission: LocalSubmission | None = Field(
        default=None, description="mail the server submits itself (sendmail/pickup): docs/postfix.md")
    log: Log = Log()
    dns: Dns | None = Field(default=None, description="DNS checks (docs/dns.md); off unless configured")
    admin: Admin | None = Field(default=None, description="the admin listener; off unless configured")
    ldap: LdapSettings | None = Field(default=None, description="the LDAP / Active Directory mapping (docs/ldap.md)")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto", description="auto: uvloop when it is installed (faster), else asyncio's own")
    workers: int | Literal["auto"] = Field(
        default=1, description="relay processes sharing the SMTP and milter sockets (1, the default: one "
        "process); auto: one per CPU core. The per-client connection and AUTH-failure limits are counted "
        "in each process (README, Workers)")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256):
            return value
        raise ValueError(f"{value!r}: use a number of processes from 1 to 256 (e.g. workers: 2), "
                         "or workers: auto for one per CPU core")

    def worker_count(self) -> int:
        """How many serving processes `relay serve` runs (auto: the CPU cores this process may use)."""
        if self.workers == "auto":
            return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        return self.workers

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        if not value.startswith(("smtp://", "smtps://", "lmtp://", "maildir:", "mx:")):
            raise ValueError(f"{value!r}: use smtp://host:port, lmtp://host:port, mx:DOMAIN or maildir:PATH")
        if value.startswith("mx:"):
            target, _, query = value.removeprefix("mx:").partition("?")
            domain, _, port = target.partition(":")
            if not domain or "." not in domain or (port and not (port.isdigit() and 0 < int(port) < 65536)):
                raise ValueError(f"{value!r}: use mx:DOMAIN or mx:DOMAIN:PORT (e.g. mx:alcaldia.gov.co)")
            options = dict(p.partition("=")[::2] for p in query.split("&") if p)
            if set(options) - {"tls"} or options.get("tls", "may") not in ("may", "require", "off"):
                raise ValueError(f"{value!r}: the only option is ?tls=may (default), ?tls=require or ?tls=off")
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        return check_url(value) if is_ldap_url(value) or "://" in value else value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError(f"{value!r}: use sqlite:PATH or postgresql://USER@HOST:PORT/DB")
        return value

    def resolve(self, base: str | Path, value: str) -> Path:
        """A path from this config, relative to the config file's folder."""
        path = Path(value)
        return path if path.is_absolute() else Path(base).resolve().parent / path

    def sqlite_path(self, config_path: str | Path) -> Path | None:
        """The embedded store's file, or None for a PostgreSQL store."""
        if not self.store.startswith("sqlite:"):
            return None
        return self.resolve(config_path, self.store.removeprefix("sqlite:"))

    def missing_state(self, config_path: str | Path) -> list[str]:
        """What the relay keeps that does not exist yet ('file:line: field: problem' lines): the
        SQLite store and the admin secret. A typo in a path would otherwise start an empty store
        (held messages out of sight, never released) or a new key (every link and sign-in void);
        `relay serve --init` makes them on a first start."""
        problems = []
        store = self.sqlite_path(config_path)
        if store is not None and not store.exists():
            problems.append(yamlconf.problem_at(config_path, ("store",), (
                f"{store} does not exist: fix the path, or create it with `relay init` "
                "(or `relay serve --init` at the first start)")))
        if self.admin is not None:
            secret = self.resolve(config_path, self.admin.secret_file)
            if not secret.exists():
                problems.append(yamlconf.problem_at(config_path, ("admin", "secret_file"), (
                    f"{secret} does not exist: fix the path, or create it with `relay init` "
                    "(or `relay serve --init`); a new key ends every sign-in and link")))
        return problems

    def check_files(self, config_path: str | Path) -> None:
        """Load the pack and directory the config names, so their errors surface at validate time."""
        from relay.ldapdir import load_directory_file as load_directory
        from relay.policy.pack import load_pack

        files: list[tuple[tuple[str, ...], str | None]] = [
            (("tls", "cert"), self.tls.cert if self.tls else None),
            (("tls", "key"), self.tls.key if self.tls else None),
            (("tls", "client_ca"), self.tls.client_ca if self.tls else None),
            (("auth", "credentials_file"), self.auth.credentials_file if self.auth else None),
            (("upstream_options", "tls_ca_file"), self.upstream_options.tls_ca_file),
            (("upstream_options", "password_file"), self.upstream_options.password_file),
            (("upstream_options", "tls_client_cert"), self.upstream_options.tls_client_cert),
            (("upstream_options", "tls_client_key"), self.upstream_options.tls_client_key),
        ]
        problems = [
            yamlconf.problem_at(config_path, loc, f"file not found: {self.resolve(config_path, value)} "
                                "(paths are relative to the config file's folder)")
            for loc, value in files if value and not self.resolve(config_path, value).is_file()
        ]
        if problems:
            raise yamlconf.ConfigError(str(config_path), problems)
        pack_path = self.resolve(config_path, self.policy)
        pack = load_pack(pack_path)
        if is_ldap_url(self.directory):  # the server is asked at load time and by `relay validate`
            from relay.ldapdir import check_files, source_from_config

            check_files(source_from_config(self, config_path))
            return
        directory_path = self.resolve(config_path, self.directory)
        directory = load_directory(directory_path)
        # The roles and addresses the pack's rules name must exist (serve and reload refuse otherwise).
        from relay.crosscheck import cross_check

        if problems := cross_check(pack, pack_path, directory, directory_path):
            raise yamlconf.ConfigError(str(pack_path), problems)


def load_config(path: str | Path) -> RelayConfig:
    config = yamlconf.load(RelayConfig, path)
    config.check_files(path)
    return config
