"""Peers for bench/smtp_load.py --peers (issue 22): other software doing the relay's job, measured
in the same series as the relay.

- Haraka (npm `Haraka`, pinned) as an SMTP proxy: `queue/smtp_forward` to the same `smtp-sink`,
  with nodes=1 and nodes=2 (its cluster mode). Installed on demand with npm into
  ~/.cache/policy-relay-bench/haraka, never into the repository.
- Postfix + Rspamd (Debian `rspamd`) as a milter peer: rspamd's proxy worker in milter mode
  (self-scan), network modules off, with a `multimap` rule equivalent to the relay's mass-list rule
  (a recipient or a To/Cc header that is one of the institution's lists is rejected).

Config files are generated into the bench's temporary folder. A peer that cannot be installed or
started raises PeerUnavailable with the reason, which the bench prints in one line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import smtplib
import statistics
import subprocess
import time
from pathlib import Path

import yaml

from bench.smtp_load import INSTITUTIONS, cpu_tree, free_port, source, wait_port

HARAKA_VERSION = "3.3.4"  # the version the npm registry offers here (see /work/.library/env/packages/npm.tsv)
HARAKA_CACHE = Path.home() / ".cache" / "policy-relay-bench" / "haraka"
SINK_COUNTER = re.compile(rb"mesg=(\d+)")


class PeerUnavailable(Exception):
    """A peer that could not be installed or started; str() says why."""


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL of the process group if it does not go within `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # every peer is started in its own session
        proc.wait(5)


def sink_messages(path: Path) -> int:
    """Messages `smtp-sink -c` has counted so far (its last `mesg=N`), from its stdout file."""
    found = SINK_COUNTER.findall(path.read_bytes()) if path.exists() else []
    return int(found[-1]) if found else 0


def mass_lists(pack: str) -> list[str]:
    """The institution's lists (every list is a mass list for the relay's rules)."""
    directory = yaml.safe_load((INSTITUTIONS / f"{pack}.yaml").read_text(encoding="utf-8"))
    return sorted(str(entry["address"]).lower() for entry in directory.get("lists", []))


# --- Haraka ----------------------------------------------------------------------------------------

def haraka_bin() -> Path:
    """Haraka's executable, installed with npm into the cache folder if it is not there yet."""
    exe = HARAKA_CACHE / "node_modules" / "Haraka" / "bin" / "haraka"
    package = HARAKA_CACHE / "node_modules" / "Haraka" / "package.json"
    if exe.exists() and f'"version": "{HARAKA_VERSION}"' in package.read_text(encoding="utf-8"):
        return exe
    if not shutil.which("npm") or not shutil.which("node"):
        raise PeerUnavailable("node/npm are not installed (apt-get install nodejs npm)")
    HARAKA_CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(HARAKA_CACHE),
                           f"Haraka@{HARAKA_VERSION}"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not exe.exists():
        raise PeerUnavailable(f"npm install Haraka@{HARAKA_VERSION} failed: {done.stderr.strip()[-300:]}")
    return exe


def write_haraka_config(folder: Path, port: int, nodes: int, sink_port: int, domain: str) -> None:
    """An instance folder: listen on loopback, accept `domain` from anyone (the bench's recipients),
    forward every message to the sink; nothing that does DNS (no rDNS, no resolvable checks)."""
    config, plugins = folder / "config", folder / "plugins"
    # Haraka's own defaults first (connection.ini etc. are read from the instance only), then ours.
    shutil.copytree(HARAKA_CACHE / "node_modules" / "Haraka" / "config", config)
    plugins.mkdir()
    (config / "smtp.ini").write_text(f"listen=127.0.0.1:{port}\nnodes={nodes}\nforce_shutdown_timeout=5\n"
                                     "inactivity_timeout=60\n")
    (config / "me").write_text("haraka.bench\n")
    (config / "host_list").write_text(f"{domain}\n")
    (config / "plugins").write_text("bench_no_rdns\nrcpt_to.in_host_list\nqueue/smtp_forward\n")
    (config / "smtp_forward.ini").write_text(f"host=127.0.0.1\nport={sink_port}\nenable_outbound=false\n")
    (config / "log.ini").write_text("[main]\nlevel=notice\ntimestamps=false\nformat=default\n")
    # Haraka looks up the client's reverse DNS before the connect hook unless a plugin answers it.
    (plugins / "bench_no_rdns.js").write_text(
        "'use strict'\n// bench: answer the rDNS lookup locally (loopback only, no DNS)\n"
        "exports.hook_lookup_rdns = function (next) { next(OK, 'localhost') }\n")


def start_haraka(folder: Path, nodes: int, sink_port: int, domain: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    exe = haraka_bin()
    port = free_port()
    write_haraka_config(folder, port, nodes, sink_port, domain)
    log = folder / "haraka.log"
    proc = subprocess.Popen(["node", str(exe), "-c", str(folder)], cwd=folder, stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, timeout=30)
    except TimeoutError:
        stop(proc)
        raise PeerUnavailable(f"Haraka (nodes={nodes}) did not listen: "
                              f"{log.read_text(errors='replace')[-300:]}") from None
    return proc, port, log


def haraka_accepted(log: Path) -> int:
    """Messages Haraka's disconnect lines say it accepted (msgs=accepted/tempfailed/rejected)."""
    return sum(int(m) for m in re.findall(r"msgs=(\d+)/", log.read_text(errors="replace")))


def start_smtp_peers(folder: Path, sink_port: int, domain: str
                     ) -> tuple[dict[str, tuple[subprocess.Popen[bytes], int, Path]], list[str]]:
    """Haraka with nodes=1 and nodes=2; (name -> (process, port, log)), lines saying why one is missing."""
    started: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    missing: list[str] = []
    for nodes in (1, 2):
        name = f"haraka x{nodes}" if nodes > 1 else "haraka"
        try:
            sub = folder / name.replace(" ", "")
            started[name] = start_haraka(sub, nodes, sink_port, domain)
        except (PeerUnavailable, OSError, subprocess.SubprocessError) as exc:
            missing.append(f"peer {name} (nodes={nodes}) skipped: {exc}")
    return started, missing


# --- Rspamd ----------------------------------------------------------------------------------------

# Modules that query DNS, HTTP, Redis or a remote service: off (there is no network here but loopback).
RSPAMD_OFF = ("rbl", "surbl", "emails", "fuzzy_check", "neural", "asn", "dmarc", "spf", "dkim", "arc", "mx_check",
              "dcc", "rspamd_update", "reputation", "ratelimit", "greylist", "history_redis", "replies",
              "url_redirector", "bimi", "hfilter", "p0f", "clickhouse", "elastic", "antivirus", "external_services",
              "metadata_exporter", "metric_exporter", "phishing", "whitelist", "dkim_signing", "known_senders",
              "url_reputation", "spamtrap", "maillist", "aws_s3")


def rspamd_bin() -> str:
    found = shutil.which("rspamd")
    if found:
        return found
    if os.geteuid() != 0:
        raise PeerUnavailable("rspamd is not installed and this is not root (apt-get install -y rspamd)")
    done = subprocess.run(["apt-get", "install", "-y", "rspamd"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("rspamd")
    if done.returncode != 0 or not found:
        raise PeerUnavailable(f"apt-get install -y rspamd failed: {done.stderr.strip()[-300:]}")
    return found


def write_rspamd_config(folder: Path, milter_port: int, controller_port: int, lists: list[str]) -> None:
    """Debian's /etc/rspamd/rspamd.conf with LOCAL_CONFDIR (and run/db/log folders) in `folder`:
    only the proxy worker (milter mode, scanning itself) and a controller for `rspamc stat`."""
    local, override = folder / "local.d", folder / "override.d"
    for sub in (local, override, folder / "db", folder / "run"):
        sub.mkdir(parents=True, exist_ok=True)
    (folder / "mass_lists.map").write_text("".join(f"{address}\n" for address in lists))
    (override / "worker-proxy.inc").write_text(
        f'bind_socket = "127.0.0.1:{milter_port}";\nmilter = yes;\ntimeout = 120s;\ncount = 1;\n'
        'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n'
        'reject_message = "Las comunicaciones masivas solo se envian desde intranet@pasto.gov.co";\n')
    (override / "worker-normal.inc").write_text("enabled = false;\n")  # the proxy scans itself
    (override / "worker-controller.inc").write_text(
        f'bind_socket = "127.0.0.1:{controller_port}";\ncount = 1;\nsecure_ip = "127.0.0.1";\n')
    (local / "options.inc").write_text(
        'dns {\n  nameserver = ["127.0.0.1:1"];\n  timeout = 0.1s;\n  retransmits = 1;\n}\n'
        "check_all_filters = false;\n")
    (override / "logging.inc").write_text(f'type = "file";\nfilename = "{folder}/rspamd.log";\nlevel = "info";\n')
    (override / "redis.conf").write_text("enabled = false;\n")
    (override / "statistic.conf").write_text("")  # bayes needs Redis: no classifier
    for module in RSPAMD_OFF:
        (override / f"{module}.conf").write_text("enabled = false;\n")
    mapfile = folder / "mass_lists.map"
    (local / "multimap.conf").write_text(
        "# The relay's mass-list rule: a recipient, To or Cc that is one of the institution's lists.\n"
        f'MASS_LIST_RCPT {{\n  type = "rcpt";\n  filter = "email:addr";\n  map = "{mapfile}";\n'
        '  action = "reject";\n  description = "recipient is a mass list";\n}\n'
        f'MASS_LIST_TO {{\n  type = "header";\n  header = "To";\n  filter = "email:addr";\n  map = "{mapfile}";\n'
        '  action = "reject";\n  description = "To is a mass list";\n}\n'
        f'MASS_LIST_CC {{\n  type = "header";\n  header = "Cc";\n  filter = "email:addr";\n  map = "{mapfile}";\n'
        '  action = "reject";\n  description = "Cc is a mass list";\n}\n')


def start_rspamd(folder: Path, lists: list[str]) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    exe = rspamd_bin()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    milter_port, controller_port = free_port(), free_port()
    write_rspamd_config(folder, milter_port, controller_port, lists)
    out = folder / "rspamd.out"
    variables = [f"--var=LOCAL_CONFDIR={folder}", f"--var=RUNDIR={folder / 'run'}", f"--var=DBDIR={folder / 'db'}",
                 f"--var=LOGDIR={folder}"]
    user = ["-i"] if os.geteuid() == 0 else []  # root: workers stay root in the bench's private folder
    proc = subprocess.Popen([exe, "-f", *user, "-c", "/etc/rspamd/rspamd.conf", *variables], cwd=folder,
                            stdout=open(out, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    try:
        wait_port(milter_port, timeout=60)
        wait_port(controller_port, timeout=30)
    except TimeoutError:
        stop(proc)
        log = folder / "rspamd.log"
        text = (log.read_text(errors="replace") if log.exists() else "") + out.read_text(errors="replace")
        raise PeerUnavailable(f"rspamd did not listen: {text[-400:]}") from None
    return proc, milter_port, controller_port, folder / "rspamd.log"


def rspamd_scanned(controller_port: int) -> int:
    """Messages rspamd says it scanned (`rspamc stat`), -1 if it does not answer."""
    done = subprocess.run(["rspamc", "-h", f"127.0.0.1:{controller_port}", "stat"], capture_output=True, text=True,
                          timeout=30)
    found = re.search(r"Messages scanned:\s*(\d+)", done.stdout)
    return int(found.group(1)) if found else -1


def refused(port: int, sender: str, rcpt: str, to: str, cc: str = "") -> str:
    """Send one message through Postfix; the reply that refused it, or '' if it was accepted."""
    body = (f"From: {sender}\r\nTo: {to}\r\n" + (f"Cc: {cc}\r\n" if cc else "")
            + "Subject: Comunicado para todos los servidores\r\nMessage-ID: <masiva@bench.test>\r\n\r\n"
            "Cordial saludo a todos los servidores.\r\n")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail(sender, [rcpt], body)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return f"{code} {text.decode(errors='replace')}"
    except smtplib.SMTPResponseException as exc:
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    return ""


def milter_peer_rows(args: argparse.Namespace, folder: Path, msg: Path, sender: str, rcpt: str,
                     sink_port: int) -> None:
    """Postfix + Rspamd milter beside Postfix alone (measured again in the same loop) and the relay
    milter's rows above; then the checks that rspamd scanned and that the mass-list rule fires."""
    from tests.e2e.postfix import Postfix

    domain = rcpt.split("@")[1]
    try:
        rspamd, milter_port, controller_port, log = start_rspamd(folder / "rspamd", mass_lists(args.pack))
    except (PeerUnavailable, OSError, subprocess.SubprocessError) as exc:
        print(f"peer Postfix + rspamd skipped: {exc}")
        return
    postfix = Postfix(milter_port, sink_port, domain, mode="milter", backoff=60, milter_port=milter_port)
    try:
        postfix.start()
        source(postfix.smtpd_port, 1, 20, sender, rcpt, msg)  # warm up
        scanned_before = rspamd_scanned(controller_port)
        version = subprocess.run(["rspamd", "-v"], capture_output=True, text=True, timeout=30).stdout.split()[-1]
        print(f"\npeer: Postfix + rspamd {version}"
              " milter (proxy worker, self_scan, network modules off, multimap mass-list rule)")
        print(f"{'sessions':>8} {'Postfix msg/s':>14} {'+rspamd msg/s':>14} {'ratio':>6} {'rspamd CPU s/1000':>18}")
        sent = 0
        for sessions in (int(s) for s in args.sessions.split(",")):
            count = args.messages if sessions > 1 else max(args.messages // 4, 100)
            alone, filtered, cpu = [], [], []
            for _ in range(args.runs):
                alone.append(count / source(postfix.reinject_port, sessions, count, sender, rcpt, msg))
                before = cpu_tree(rspamd.pid)
                filtered.append(count / source(postfix.smtpd_port, sessions, count, sender, rcpt, msg))
                cpu.append((cpu_tree(rspamd.pid) - before) / count * 1000)
                sent += count
            a, f = statistics.median(alone), statistics.median(filtered)
            print(f"{sessions:>8} {a:>14,.0f} {f:>14,.0f} {f / a:>6.1%} {statistics.median(cpu):>18.2f}")
        scanned = rspamd_scanned(controller_port) - scanned_before
        print(f"rspamd scanned {scanned} of the {sent} messages sent through Postfix + rspamd (rspamc stat)"
              + ("" if scanned >= sent else "  ** NOT ALL SCANNED **"))
        lists = mass_lists(args.pack)
        if lists:
            to_list = refused(postfix.smtpd_port, sender, lists[0], lists[0])
            cc_list = refused(postfix.smtpd_port, sender, rcpt, rcpt, cc=lists[0])
            print(f"mass-list check, RCPT TO:<{lists[0]}>: " + (f"refused: {to_list}" if to_list else "** ACCEPTED **"))
            print(f"mass-list check, Cc: {lists[0]}: " + (f"refused: {cc_list}" if cc_list else "** ACCEPTED **"))
        fired = log.read_text(errors="replace").count("MASS_LIST_") if log.exists() else 0
        print(f"rspamd log lines naming a MASS_LIST_ symbol: {fired}")
    except (RuntimeError, OSError, subprocess.SubprocessError, smtplib.SMTPException) as exc:
        print(f"peer Postfix + rspamd failed: {exc}")
    finally:
        postfix.stop()
        stop(rspamd)
        time.sleep(0.2)
