"""`workers: N`: one supervisor and N pre-forked relay processes serving the same sockets.

The supervisor (the process `relay serve` started, whose pid is in the pid file) binds the SMTP
and milter listening sockets, forks the workers, and then only supervises: a worker that dies is
started again (with a backoff when it keeps dying), SIGTERM/SIGINT stop every worker (each
finishes its sessions, as a single relay does) and are waited for, SIGHUP and SIGUSR1 are passed
on to every worker. It never opens the store and never touches a message.

Each worker is a whole relay (relay.app.serve) on the inherited sockets; the kernel hands each
new connection to one of them. Exactly one worker releases holds: the one holding an flock on
the scheduler lock file (beside the SQLite store; beside the pid file for PostgreSQL, whose leases
already keep several relays apart). When it dies the kernel drops its lock and another worker
takes over within a second, after `recover` puts its claimed holds back to waiting. Worker 0 also
serves the admin listener (pages, health checks, and /metrics: the sum of every worker's figures,
which the workers write to files in a directory beside the pid file, emptied at each start; see
relay.metrics) and writes the reload status file.

Durability is the single relay's: a worker answers 250 for DATA only after the upstream's 250 or
the store's fsync, so `kill -9` of a worker loses nothing that got 250.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from relay import logs, systemd, yamlconf
from relay.config import Milter, load_config
from relay.metrics import MULTIPROC_ENV, mark_dead
from relay.prefork import DEFERRED, Inherited, ServeError, scheduler_lock_path

EXIT_CANNOT_START = 3  # a worker's ServeError (said on stderr): the supervisor gives up
EXIT_CONFIG = 2
STOP_GRACE = 45.0  # seconds a stopping worker gets (sessions 10 s, scheduler 30 s) before SIGKILL
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)
QUICK_DEATH = 10.0  # a worker that dies younger than this counts towards the backoff
BACKOFF_MAX = 30.0


def bind_smtp(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.setblocking(False)
    return sock


def bind_milter(milter: Milter) -> socket.socket:
    kind, where, port = milter.address()
    try:
        if kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                if Path(where).is_socket():
                    Path(where).unlink()  # a stale socket from a previous run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(where)
            os.chmod(where, int(milter.socket_mode, 8))
        else:
            return bind_smtp(where, port)
        sock.listen(1024)
    except OSError as error:
        raise ServeError(f"cannot listen on milter {milter.listen}: {error.strerror}") from None
    sock.setblocking(False)
    return sock


def _die_with_parent(parent: int) -> None:
    """Linux: the worker gets SIGTERM when its supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


class Supervisor:
    def __init__(self, config_path: str | Path,
                 run: Callable[[Coroutine[Any, Any, None]], Any]) -> None:
        self.config_path = config_path
        self.run = run
        self.config = load_config(config_path)
        self.log = logs.get("relay.workers")
        self.count = self.config.worker_count()
        self.children: dict[int, int] = {}  # pid -> worker index
        self.born: dict[int, float] = {}  # worker index -> when started (monotonic)
        self.quick_deaths: dict[int, int] = {}
        self.restart_at: dict[int, float] = {}
        self.stopping = False
        self.exit_code = 0

    def serve(self) -> int:
        config = self.config
        smtp = bind_smtp(config.listen.host, config.listen.port) if config.listen else None
        milter = bind_milter(config.milter) if config.milter else None
        if smtp is None and milter is None:
            raise ServeError("nothing to listen on: set listen (SMTP) or milter.listen")
        self.sockets = (smtp, milter)
        self.lock_path = scheduler_lock_path(config, self.config_path)
        pid_file = config.resolve(self.config_path, config.pid_file)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pid_file.write_text(f"{os.getpid()}\n")
        # a fresh directory for this run's metrics files: the previous run's figures are gone
        self.metrics_dir = pid_file.with_suffix(".metrics")
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(mode=0o700, exist_ok=True)
        os.environ[MULTIPROC_ENV] = str(self.metrics_dir)
        self.log.info("supervisor_started", workers=self.count, lock=str(self.lock_path))
        for index in range(self.count):
            self.spawn(index)
        systemd.ready(f"accepting mail ({self.count} workers)")
        try:
            self.loop()
        finally:
            for sock in (smtp, milter):
                if sock is not None:
                    sock.close()
            if config.milter is not None and config.milter.address()[0] == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(config.milter.address()[1])
            with contextlib.suppress(OSError):
                pid_file.unlink()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.log.info("supervisor_stopped", exit_code=self.exit_code)
        return self.exit_code

    def spawn(self, index: int) -> None:
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            self._worker(index, parent)
        self.children[pid] = index
        self.born[index] = time.monotonic()
        self.restart_at.pop(index, None)
        self.log.info("worker_started", worker_pid=pid, worker_index=index)

    def _worker(self, index: int, parent: int) -> None:
        from relay.app import serve

        code = 1
        try:
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            # SIGHUP and SIGUSR1 stay blocked (pending) until serve() has its handlers: a reload
            # asked while a worker starts is done once it runs, instead of killing it
            signal.pthread_sigmask(signal.SIG_UNBLOCK, set(SIGNALS) - set(DEFERRED))
            _die_with_parent(parent)
            logs.WORKER = index
            os.environ.pop("NOTIFY_SOCKET", None)  # systemd hears the supervisor only
            self.run(serve(self.config_path, worker=Inherited(index, self.count, *self.sockets, self.lock_path,
                                                            self.metrics_dir)))
            code = 0
        except ServeError as error:
            print(f"relay serve: worker {index}: {error}", file=sys.stderr)
            code = EXIT_CANNOT_START
        except yamlconf.ConfigError as error:
            for problem in error.problems:
                print(problem, file=sys.stderr)
            code = EXIT_CONFIG
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def forward(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def loop(self) -> None:
        deadline: float | None = None
        while self.children or (not self.stopping and self.restart_at):
            now = time.monotonic()
            timeout = 1.0
            if self.restart_at and not self.stopping:
                timeout = max(0.0, min(timeout, min(self.restart_at.values()) - now))
            info = signal.sigtimedwait(SIGNALS, timeout)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                self.stopping = True
                deadline = time.monotonic() + STOP_GRACE
                systemd.stopping()
                self.log.info("supervisor_stopping", workers=len(self.children))
                self.forward(signal.SIGTERM)
            elif info is not None and info.si_signo in (signal.SIGHUP, signal.SIGUSR1):
                self.forward(info.si_signo)
            self.reap()
            if self.stopping and deadline is not None and time.monotonic() > deadline:
                self.log.error("workers_killed", pids=list(self.children), after=STOP_GRACE)
                self.forward(signal.SIGKILL)
                deadline = None
            if not self.stopping:
                for index, at in list(self.restart_at.items()):
                    if at <= time.monotonic():
                        self.spawn(index)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            mark_dead(pid, self.metrics_dir)  # its live gauges go; its counters stay in the totals
            if self.stopping:
                self.log.info("worker_stopped", worker_pid=pid, worker_index=index, exit_code=code)
                continue
            lived = time.monotonic() - self.born.get(index, 0.0)
            if code in (EXIT_CANNOT_START, EXIT_CONFIG):  # it said why on stderr: no use retrying
                self.log.error("worker_cannot_start", worker_pid=pid, worker_index=index, exit_code=code)
                self.exit_code = 1
                self.stopping = True
                self.forward(signal.SIGTERM)
                continue
            self.quick_deaths[index] = self.quick_deaths.get(index, 0) + 1 if lived < QUICK_DEATH else 0
            delay = min(BACKOFF_MAX, 0.1 * 2 ** self.quick_deaths[index]) if self.quick_deaths[index] else 0.0
            self.log.error("worker_died", worker_pid=pid, worker_index=index, exit_code=code,
                           lived=round(lived, 1), restart_in=delay)
            self.restart_at[index] = time.monotonic() + delay


def supervise(config_path: str | Path, run: Callable[[Coroutine[Any, Any, None]], Any]) -> int:
    """`relay serve` with workers > 1: the exit code of the whole (0: stopped by a signal)."""
    return Supervisor(config_path, run).serve()
