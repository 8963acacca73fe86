"""Wiring for `relay serve`: config -> clock -> store -> upstream -> disposer -> front-ends,
scheduler and admin pages; signals (SIGHUP reloads, SIGUSR1 wakes the scheduler) and shutdown.

Nothing here decides what happens to a message: that is relay.dispose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from relay import ldapdir, logs, systemd, yamlconf
from relay.auth import Credentials
from relay.checks import DnsChecks
from relay.clock import Clock, FileClock, SystemClock, clock_from_env
from relay.config import RelayConfig, load_config
from relay.dispose import Disposer, Rules
from relay.frontends.milter import listen as milter_listen
from relay.frontends.smtp import listen as smtp_listen
from relay.identity import server_directory
from relay.metrics import MeteredUpstream, Metrics, TimedStore
from relay.policy.pack import load_pack
from relay.prefork import DEFERRED, Inherited, ServeError, one_at_a_time, try_lock
from relay.scheduler import Scheduler, SchedulerSettings
from relay.store import Store, StoreError, open_store
from relay.upstream.factory import make_upstream
from relay.web import links
from relay.web.server import AdminSite, is_loopback_host
from relay.web.server import listen as listen_admin


def load_rules(config: RelayConfig, config_path: Path, generation: int = 1) -> Rules:
    """Read the pack, directory, credentials and certificate a config names (blocking)."""
    credentials = (Credentials.load(config.resolve(config_path, config.auth.credentials_file))
                   if config.auth else None)
    tls_context: ssl.SSLContext | None = None
    if config.tls:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(config.resolve(config_path, config.tls.cert),
                                    config.resolve(config_path, config.tls.key))
        if config.tls.client_ca:  # asked for, not required: only trust.hosted looks at it
            tls_context.load_verify_locations(config.resolve(config_path, config.tls.client_ca))
            tls_context.verify_mode = ssl.CERT_OPTIONAL
    return Rules(load_pack(config.resolve(config_path, config.policy)),
                 server_directory(ldapdir.open_directory(config, config_path), config),
                 credentials, tls_context, generation)


def loop_key(config: RelayConfig, config_path: Path) -> bytes | None:
    """trust.loop_guard's HMAC key: its secret_file, else the admin secret (as the moderation
    links), else var/relay.secret; made on first use. None without a loop guard."""
    guard = config.trust.loop_guard
    if guard is None:
        return None
    name = guard.secret_file or (config.admin.secret_file if config.admin else "var/relay.secret")
    return links.load_key(config.resolve(config_path, name))


# Settings read only at start: a reload that changes them says so and keeps the running value.
RESTART_FIELDS = ("listen", "milter", "upstream", "upstream_options", "store", "store_options", "pid_file", "log",
                  "event_loop", "admin", "dns", "workers")


def scheduler_settings(config: RelayConfig) -> SchedulerSettings:
    sched = config.scheduler
    return SchedulerSettings(sched.batch, sched.concurrency, sched.retry_base, sched.retry_max,
                             sched.alert_after_attempts, sched.alert_to, sched.max_sleep, sched.retention_days)


class RelayApp:
    """The services of one relay process, built from its config in dependency order."""

    def __init__(self, config: RelayConfig, config_path: Path, clock: Clock | None = None,
                 metrics_dir: Path | None = None) -> None:
        self.config, self.config_path = config, config_path
        base = config_path.resolve().parent
        rules = load_rules(config, config_path)
        self.clock = clock or SystemClock()
        self.metrics = Metrics(metrics_dir)  # a worker's: every worker's files (relay.workers)
        dns = DnsChecks(config.dns) if config.dns else None
        if dns is not None:
            self.metrics.watch_dns(dns.resolver)
        store: Store = cast(Store, TimedStore(open_store(
            config.store, base, config.store_options.lease, config.store_options.pool_size), self.metrics))
        self.metrics.watch_store(store, self.clock)
        upstream = MeteredUpstream(make_upstream(config.upstream, config.hostname, base, config.upstream_options,
                                                 dns.resolver if dns else None), self.metrics)
        self.link_key = (links.load_key(config.resolve(config_path, config.admin.secret_file))
                         if config.admin else None)
        self.disposer = Disposer(config, rules, self.clock, store, upstream, metrics=self.metrics, dns=dns,
                                 link_key=self.link_key, loop_key=loop_key(config, config_path))
        self.scheduler = Scheduler(self.disposer, logs.get("relay.scheduler"), scheduler_settings(config))
        self.disposer.wake = self.scheduler.wake
        self.metrics.generation.set(1)
        self._directory_age(config, rules)

    @property
    def rules(self) -> Rules:
        return self.disposer.rules

    @rules.setter
    def rules(self, rules: Rules) -> None:  # an LDAP refresh swaps the directory in (relay.ldapdir)
        self.disposer.rules = rules

    @property
    def store(self) -> Store:
        return self.disposer.store

    @property
    def log(self) -> Any:
        return self.disposer.log

    async def reload(self) -> ReloadResult:
        """Re-read config, pack, directory, credentials and certificate; swap them in at once, or
        keep the running ones when any file is bad (the same errors as `relay validate`).
        Sessions in flight finish with the rules they started with; nothing is dropped."""
        generation = self.rules.generation + 1
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
            rules = await asyncio.to_thread(load_rules, config, self.config_path, generation)
        except yamlconf.ConfigError as error:
            return self._reload_refused(error.problems)
        except (OSError, ValueError) as error:
            filename = getattr(error, "filename", None)
            return self._reload_refused([f"{filename or 'a file the config names'}: "
                                         f"{getattr(error, 'strerror', None) or error}"])
        except ssl.SSLError as error:
            return self._reload_refused([f"tls: the certificate or key is unusable ({error.reason or error})"])
        kept = [name for name in RESTART_FIELDS if getattr(config, name) != getattr(self.config, name)]
        self.config = config.model_copy(update={name: getattr(self.config, name) for name in kept})
        self.disposer.config, self.disposer.rules = self.config, rules
        try:
            self.disposer.loop_key = await asyncio.to_thread(loop_key, self.config, self.config_path)
        except OSError as error:  # the old key (or none) stays
            self.log.error("loop_guard_key_unreadable", error=str(error)[:200])
        self.scheduler.settings = scheduler_settings(config)
        self.disposer.log = logs.get("relay").bind(pack=rules.pack.pack)
        self.log.info("reloaded", generation=generation, rules=len(rules.pack.rules),
                      addresses=len(rules.directory.entries), restart_needed=kept)
        self.metrics.reload(True)
        self.metrics.generation.set(generation)
        self._directory_age(config, rules)
        return ReloadResult(True, generation, rules.pack.pack, len(rules.pack.rules), [], kept)

    def _directory_age(self, config: RelayConfig, rules: Rules) -> None:
        """relay_directory_age_seconds of a YAML directory (an LDAP one reports its snapshot's age)."""
        if getattr(rules.directory, "taken_at", None) is None:
            self.metrics.directory_loaded(config.resolve(self.config_path, config.directory))

    def _reload_refused(self, problems: list[str]) -> ReloadResult:
        self.log.error("reload_refused", problems=problems, generation=self.rules.generation,
                       advice="the running rules stay in force; fix the file and reload again")
        self.metrics.reload(False)
        pack = self.rules.pack
        return ReloadResult(False, self.rules.generation, pack.pack, len(pack.rules), problems, [])

    @classmethod
    def from_config(cls, path: str | Path, clock: Clock | None = None) -> RelayApp:
        return cls(load_config(path), Path(path), clock)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    generation: int
    pack: str
    rules: int
    problems: list[str]
    restart_needed: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "generation": self.generation, "pack": self.pack, "rules": self.rules,
                "problems": self.problems, "restart_needed": self.restart_needed}


async def _listeners(app: RelayApp, config: RelayConfig, worker: Inherited | None = None) -> list[asyncio.Server]:
    """The SMTP listener and the milter listener, whichever the config names (a worker: on the
    sockets its supervisor bound)."""
    servers = []
    if config.listen is not None:
        try:
            server = await smtp_listen(app.disposer, config.listen.host, config.listen.port,
                                       worker.smtp if worker else None)
        except OSError as error:
            raise ServeError(f"cannot listen on {config.listen.host}:{config.listen.port}: {error.strerror}") from None
        servers.append(server)
        app.log.info("listening", host=config.listen.host, ports=[s.getsockname()[1] for s in server.sockets],
                     upstream=app.disposer.upstream.describe())
    if config.milter is not None:
        try:
            servers.append(await milter_listen(app.disposer, config.milter, worker.milter if worker else None))
        except OSError as error:
            raise ServeError(f"cannot listen on milter {config.milter.listen}: {error.strerror}") from None
        app.log.info("milter_listening", listen=config.milter.listen, upstream=app.disposer.upstream.describe())
        kind, where, _ = config.milter.address()
        if kind == "inet" and not is_loopback_host(where):
            # whoever reaches this port is believed about the SASL login ({auth_authen}): only the MTA may
            app.log.warning("milter_not_loopback", listen=config.milter.listen,
                            advice="bind to 127.0.0.1 or a unix socket, or firewall it to the MTA only")
    return servers


def _write_status(path: Path, result: ReloadResult) -> None:
    """What `relay reload` waits for: the outcome of the latest reload, written atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.as_json(), ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def reload_status_path(config: RelayConfig, config_path: str | Path) -> Path:
    return config.resolve(config_path, config.pid_file).with_suffix(".reload.json")


async def serve(config_path: str | Path, ready: asyncio.Event | None = None, worker: Inherited | None = None) -> None:
    """Run the relay until SIGTERM or SIGINT; finish sessions in flight, then stop. SIGHUP reloads.
    `worker`: one of `workers: N` (relay.workers): serve the supervisor's sockets, release holds
    only while holding the scheduler lock, admin listener and reload status in worker 0 only."""
    config = load_config(config_path)
    logs.configure(config.log.level, config.log.format)
    clock = clock_from_env()
    try:
        with one_at_a_time(worker):  # workers open (and may create) the store in turn
            app = RelayApp(config, Path(config_path), clock, worker.metrics_dir if worker else None)
    except OSError as error:
        raise ServeError(f"cannot read {error.filename or 'a file the config names'}: "
                         f"{error.strerror or error}") from None
    except ssl.SSLError as error:
        raise ServeError(f"tls: the certificate or key is unusable ({error.reason or error})") from None
    except (StoreError, ValueError) as error:
        raise ServeError(str(error)) from None
    if isinstance(clock, FileClock):
        app.log.warning("test_clock", path=str(clock.path), now=clock.now().isoformat())
    loop = asyncio.get_running_loop()
    servers = await _listeners(app, config, worker)
    if not servers:
        raise ServeError("nothing to listen on: set listen (SMTP) or milter.listen")
    first = worker is None or worker.index == 0
    admin = await _admin_listener(app, config) if first else None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, app.scheduler.wake)  # `relay queue` changed something
    if hasattr(app.store, "listen"):  # a shared store: a hold added or approved anywhere wakes us
        try:
            app.store.listen(lambda: loop.call_soon_threadsafe(app.scheduler.wake))
        except StoreError as error:
            raise ServeError(str(error)) from None
    status_path = reload_status_path(config, config_path)
    reloading = asyncio.Lock()

    async def reload() -> None:
        async with reloading:  # signals in a burst reload one after another, the last one wins
            systemd.reloading()
            result = await app.reload()
            if first:
                with contextlib.suppress(OSError):
                    _write_status(status_path, result)
            systemd.ready(f"rules generation {result.generation}")

    loop.add_signal_handler(signal.SIGHUP, lambda: app.disposer.spawn(reload()))
    if worker is not None:  # what the supervisor passed on while this worker started (relay.workers)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED)
    pid_file = config.resolve(config_path, config.pid_file)
    if worker is None:  # under workers: N the supervisor's pid is in the pid file
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
    if first:
        with contextlib.suppress(OSError):
            _write_status(status_path, ReloadResult(True, 1, app.rules.pack.pack, len(app.rules.pack.rules), [], []))
    # With the test clock, time may jump at any moment: the scheduler looks again every 0.1 s.
    poll = 0.1 if isinstance(clock, FileClock) else None
    scheduler = loop.create_task(app.scheduler.run(poll) if worker is None else _lead(app, worker, stop, poll))
    auditor = loop.create_task(app.disposer.audit_loop(stop))
    directory_refresh = ldapdir.start(app)  # LDAP: refresh on schedule (a YAML directory: idle)
    if admin is not None:
        admin[0].ready = True
    systemd.ready("accepting mail")
    if ready is not None:
        ready.set()
    await stop.wait()
    systemd.stopping()
    app.log.info("stopping", active=app.disposer.active)
    for server in servers:
        server.close()
    for _ in range(100):
        if app.disposer.active == 0:
            break
        await asyncio.sleep(0.1)
    if admin is not None:
        await admin[1].cleanup()
    app.scheduler.stop()
    directory_refresh.cancel()
    await asyncio.wait([scheduler, auditor], timeout=30)
    await app.disposer.close()
    if worker is None:
        with contextlib.suppress(OSError):
            pid_file.unlink()
    app.log.info("stopped")


async def _lead(app: RelayApp, worker: Inherited, stop: asyncio.Event, poll: float | None) -> None:
    """A worker's scheduler: it runs only in the worker that holds the scheduler lock (the others
    try again every half second, so one takes over when the holder dies). A hold stored or
    approved in another worker wakes the holder through the supervisor (SIGUSR1, passed on)."""
    loop = asyncio.get_running_loop()
    leading = False
    pending = False

    def tell_leader() -> None:
        nonlocal pending
        pending = False
        with contextlib.suppress(OSError):
            os.kill(os.getppid(), signal.SIGUSR1)

    def wake() -> None:
        nonlocal pending
        if leading:
            app.scheduler.wake()
        elif not pending:  # a burst of holds: one signal
            pending = True
            loop.call_later(0.01, tell_leader)

    app.disposer.wake = wake
    while not stop.is_set():
        fd = await asyncio.to_thread(try_lock, worker.lock_path)
        if fd is not None:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    else:
        return
    leading = True
    app.log.info("scheduler_leader", worker=worker.index, lock=str(worker.lock_path))
    try:
        await app.scheduler.run(poll)
    finally:
        os.close(fd)


async def _admin_listener(app: RelayApp, config: RelayConfig) -> tuple[AdminSite, web.AppRunner] | None:
    """The admin pages, /metrics and health checks (relay.web.server.listen), when configured."""
    try:
        token_file = (config.resolve(app.config_path, config.admin.api_token_file)
                      if config.admin and config.admin.api_token_file else None)
        signed_out = (config.resolve(app.config_path, config.admin.secret_file + ".signed-out")
                      if config.admin else None)
        return await listen_admin(app.disposer, app.link_key, config.admin, app.log, token_file, signed_out)
    except OSError as error:
        assert config.admin is not None
        raise ServeError(f"cannot listen on admin {config.admin.listen}: {error.strerror}") from None
