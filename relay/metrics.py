"""Prometheus metrics: decisions by verdict and rule, holds waiting, upstream and store latency.

Counters move where the audit trail is written (`Metrics.decision` takes the same AuditEntry),
so `/metrics` and `relay audit` tell one story. Hold figures are read from the store at scrape
time: they survive restarts and include what `relay queue` changed.

Under `workers: N` (relay.workers) every worker counts into memory-mapped files in one directory
the supervisor made for the run (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR),
and worker 0's /metrics adds up the files of every worker, living or dead: a worker that dies
leaves its counters and histograms behind, so totals never drop when it is restarted (its
successor counts into a file of its own). Gauges are "live" ones: the supervisor drops a dead
worker's (`mark_process_dead`). The figures computed at scrape time (holds, DNS cache, directory)
are worker 0's: the store's for holds (the same for every worker), worker 0's own for DNS.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from relay import __version__
from relay.clock import Clock
from relay.store import AuditEntry, Store, StoreError
from relay.store.base import MODERATION_EVENTS
from relay.upstream import Reply, Transaction, Upstream

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's: where each process's files go


def mark_dead(pid: int, shared: str | Path) -> None:
    """A worker exited: its live gauges go (its counters and histograms stay in the totals)."""
    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(shared))  # type: ignore[no-untyped-call]


class Metrics:
    """The relay's registry (its own, not the global one, so tests can run several relays).

    `shared`: a worker's multiprocess directory (relay.workers): values go to files there and
    `registry` (what /metrics renders, where scrape-time collectors are registered) reads every
    worker's files. Without it, one process, as before."""

    def __init__(self, shared: str | Path | None = None) -> None:
        self.shared = shared
        own = CollectorRegistry(auto_describe=True)
        if shared is not None:
            # prometheus_client picks its value class when first imported and names each file
            # from the environment: a forked worker switches both to its supervisor's directory
            os.environ[MULTIPROC_ENV] = str(shared)
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, path=str(shared))  # type: ignore[no-untyped-call]
        else:
            self.registry = own
        r = own
        self.messages = Counter("relay_messages", "Decisions, by verdict (rcpt-time refusals count as reject)",
                                ["verdict"], registry=r)
        self.rule_hits = Counter("relay_rule_hits", "Rule findings in force, by rule id and action",
                                 ["rule", "action"], registry=r)
        self.monitored = Counter("relay_rule_monitored", "Findings of rules in monitor mode (not enforced)",
                                 ["rule"], registry=r)
        self.upstream_seconds = Histogram("relay_upstream_seconds", "Time for the upstream to answer a message",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("relay_upstream_errors", "Upstream refusals and failures, by kind",
                                       ["kind"], registry=r)
        self.store_seconds = Histogram("relay_store_seconds", "Time of store operations", ["operation"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("relay_store_errors", "Store operations that failed", ["operation"], registry=r)
        self.reloads = Counter("relay_reloads", "Reloads (SIGHUP, relay reload), by result", ["result"], registry=r)
        # workers: sessions add up; the newest generation and reload in force (a restarted worker
        # starts at generation 1 with the current files, so the oldest would mislead)
        self.sessions = Gauge("relay_smtp_sessions", "SMTP sessions open now", registry=r,
                              multiprocess_mode="livesum")
        self.generation = Gauge("relay_rules_generation", "Generation of the rules in force (1 at start)",
                                registry=r, multiprocess_mode="livemax")
        self.build = Gauge("relay_build_info", "The relay's version (value 1)", ["version", "python"], registry=r,
                           multiprocess_mode="livemax")
        self.build.labels(__version__, platform.python_version()).set(1)
        self.last_reload = Gauge("relay_last_reload_timestamp_seconds",
                                 "When the rules in force were loaded (start or last successful reload), Unix time",
                                 registry=r, multiprocess_mode="livemax")
        self.last_reload.set(time.time())
        self.directory_written: float | None = None  # a YAML directory's mtime when loaded (relay_directory_age)
        r.register(DirectoryAgeCollector(self))

    def decision(self, entry: AuditEntry) -> None:
        self.messages.labels(entry.verdict).inc()
        for rule, _cites, action, *_why in entry.rules:
            self.rule_hits.labels(rule, action).inc()
        for rule in entry.monitored:
            self.monitored.labels(rule).inc()

    def reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()
        if ok:
            self.last_reload.set(time.time())

    def directory_loaded(self, path: Any) -> None:
        """A YAML directory was loaded from `path`: its age is counted from the file's mtime."""
        try:
            self.directory_written = os.stat(path).st_mtime
        except (OSError, TypeError, ValueError):
            self.directory_written = None

    def watch_store(self, store: Store, clock: Clock) -> None:
        self.registry.register(HoldCollector(store, clock))

    def watch_dns(self, resolver: Any) -> None:
        self.registry.register(DnsCollector(resolver))

    def render(self) -> bytes:
        """The text exposition (blocking: the hold figures read the store)."""
        return bytes(generate_latest(self.registry))


class HoldCollector(Collector):
    """Holds waiting and the age of the oldest, by reason, read from the store at scrape time."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def describe(self) -> list[Any]:
        return []  # figures come from the store; nothing to describe before a scrape

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        waiting = GaugeMetricFamily("relay_holds_open", "Held messages not yet delivered or refused, by reason",
                                    labels=["reason"])
        oldest = GaugeMetricFamily("relay_oldest_hold_age_seconds", "Age of the oldest open hold, by reason",
                                   labels=["reason"])
        try:
            stats = self.store.hold_stats()
        except StoreError:
            return
        now = self.clock.now()
        for reason in ("hold", "moderate"):
            count, first = stats.get(reason, (0, None))
            waiting.add_metric([reason], count)
            oldest.add_metric([reason], max((now - first).total_seconds(), 0.0) if first else 0.0)
        yield waiting
        yield oldest
        try:
            queued, first_notice = self.store.outbox_stats()
            actions = self.store.moderation_counts()
        except StoreError:
            return
        yield GaugeMetricFamily("relay_notices_queued", "Notices in the outbox not yet taken by the upstream",
                                value=queued)
        yield GaugeMetricFamily("relay_oldest_notice_age_seconds", "Age of the oldest notice in the outbox",
                                value=max((now - first_notice).total_seconds(), 0.0) if first_notice else 0.0)
        moderation = CounterMetricFamily("relay_moderation_actions", "Moderation actions recorded in the store "
                                         "(web, API, relay queue, expiry), by action", labels=["action"])
        for event in MODERATION_EVENTS:
            moderation.add_metric([event], actions.get(event, 0))
        yield moderation


class DirectoryAgeCollector(Collector):
    """The age of a YAML directory in force (since its file was written); an LDAP directory's age
    is relay.ldapdir's (since its snapshot was taken)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.metrics.directory_written is not None:
            yield GaugeMetricFamily("relay_directory_age_seconds", "Age of the directory data in force",
                                    value=max(0.0, time.time() - self.metrics.directory_written))


class DnsCollector(Collector):
    """DNS lookups sent and answers taken from the cache (relay.dns.Resolver's counters)."""

    def __init__(self, resolver: Any) -> None:
        self.resolver = resolver

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("relay_dns_lookups", "DNS queries sent (cache misses)", value=self.resolver.lookups)
        yield CounterMetricFamily("relay_dns_cache_hits", "DNS answers taken from the cache", value=self.resolver.hits)
        yield CounterMetricFamily("relay_dns_failures", "DNS queries that timed out or failed",
                                  value=self.resolver.failures)


class TimedStore:
    """The store, with every call timed (and failures counted) into `relay_store_seconds`."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not callable(target) or name.startswith("_"):
            return target
        seconds = self._metrics.store_seconds.labels(name)
        errors = self._metrics.store_errors.labels(name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return target(*args, **kwargs)
            except StoreError:
                errors.inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - started)

        return timed


class MeteredUpstream:
    """The upstream, with each message's DATA timed and every non-250 outcome counted by kind."""

    def __init__(self, upstream: Upstream, metrics: Metrics) -> None:
        self.inner = upstream
        self.metrics = metrics

    def describe(self) -> str:
        return self.inner.describe()

    async def close(self) -> None:
        await self.inner.close()

    def transaction(self) -> Transaction:
        return MeteredTransaction(self.inner.transaction(), self.metrics)


class MeteredTransaction(Transaction):
    def __init__(self, inner: Transaction, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def _count(self, reply: Reply) -> Reply:
        if not reply.ok:
            self.metrics.upstream_errors.labels("temporary" if reply.temporary else "permanent").inc()
        return reply

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        return self._count(await self.inner.mail(sender, options))

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        return self._count(await self.inner.rcpt(recipient, options))

    async def data(self, content: bytes) -> Reply:
        started = time.perf_counter()
        reply = await self.inner.data(content)
        self.metrics.upstream_seconds.observe(time.perf_counter() - started)
        return self._count(reply)

    async def abort(self) -> None:
        await self.inner.abort()
