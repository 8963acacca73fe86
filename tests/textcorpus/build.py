"""Render the hand-written texts in tests/textcorpus/src/*.yaml into .eml files and labels.yaml.

    python3 tests/textcorpus/build.py          render every source file, then check the result
    python3 tests/textcorpus/build.py --check  only check the committed .eml files and labels.yaml

The texts are written by hand (src/<rule_kind>.yaml, one entry per message); this script only
dresses them in varied MIME forms (plain 8bit, quoted-printable, base64, ISO-8859-1, HTML-only,
multipart/alternative, an attachment, RFC 2047 subjects, CRLF or LF line ends) and writes the
envelope each message travels with into labels.yaml. See README.md for the labelling criteria.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import html
import quopri
import re
import sys
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
INSTITUTIONS = HERE.parent.parent.parent / "shared" / "acceptance" / "institutions"
RULE_KINDS = ("sensitive_individual", "commercial", "social_signup", "mailbox_purpose")
DOMAINS = {"pasto": "pasto.gov.co", "barrancabermeja": "barrancabermeja.gov.co",
           "bogota": "alcaldiabogota.gov.co", "cancilleria": "cancilleria.gov.co"}
FORMS = ("plain", "qp", "b64", "latin1", "html", "html-b64", "alt", "alt-qp", "mixed")
COT = timezone(timedelta(hours=-5))


def _institution_dir() -> Path:
    for candidate in (INSTITUTIONS, Path("/work/shared/acceptance/institutions")):
        if candidate.is_dir():
            return candidate
    raise SystemExit("institution directories not found (../shared/acceptance/institutions)")


def load_directory(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((_institution_dir() / f"{name}.yaml").read_text("utf-8"))
    people = {p["address"].lower(): p for p in data.get("people", [])}
    services = {s["address"].lower(): s for s in data.get("service_mailboxes", [])}
    lists = {x["address"].lower(): x for x in data.get("lists", [])}
    domains = [d.lower() for d in data["domains"]]
    return {"people": people, "services": services, "lists": lists, "domains": domains}


def addr(value: str, inst: str) -> str:
    """A bare local part means an address of the institution's first domain."""
    return value if "@" in value else f"{value}@{DOMAINS[inst]}"


# ---------------------------------------------------------------- encodings

def encode_word(text: str, how: str, charset: str = "UTF-8", split: bool = True) -> str:
    """RFC 2047 encoded words (several, each under 75 characters) for a header value."""
    if how == "none" or text.isascii():
        return text
    limit = (36 if how == "b" else 22) if split else 10_000
    words: list[str] = []
    chunk = ""
    for token in re.findall(r"\S+\s*|\s+", text):  # break between words, never inside one
        if chunk and len((chunk + token).encode(charset, "replace")) > limit:
            words.append(chunk)
            chunk = ""
        chunk += token
    if chunk:
        words.append(chunk)
    out = []
    for w in words:
        raw = w.encode(charset, "replace")
        if how == "b":
            out.append(f"=?{charset}?B?{base64.b64encode(raw).decode()}?=")
        else:
            q = "".join(
                "_" if b == 0x20 else chr(b) if (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122) else f"={b:02X}"
                for b in raw)
            out.append(f"=?{charset}?Q?{q}?=")
    return "\r\n ".join(out)


def display(name: str, address: str, how: str) -> str:
    if not name:
        return address
    if name.isascii():
        quoted = f'"{name}"' if re.search(r'[(),.:;<>@\[\]"]', name) else name
        return f"{quoted} <{address}>"
    return f"{encode_word(name, 'q' if how == 'none' else how, split=False)} <{address}>"


def qp(text: str, charset: str) -> str:
    data = text.replace("\n", "\r\n").encode(charset, "replace")
    return quopri.encodestring(data).decode("ascii").replace("\r\n", "\n").replace("=\r\n", "=\n")


def b64(text: str, charset: str = "utf-8") -> str:
    raw = base64.b64encode(text.replace("\n", "\r\n").encode(charset, "replace")).decode()
    return "\n".join(raw[i:i + 76] for i in range(0, len(raw), 76))


def part(text: str, subtype: str, cte: str, charset: str = "utf-8") -> str:
    head = f"Content-Type: text/{subtype}; charset=\"{charset}\"\nContent-Transfer-Encoding: {cte}\n\n"
    if cte == "quoted-printable":
        return head + qp(text, charset)
    if cte == "base64":
        return head + b64(text, charset)
    return head + text


# ---------------------------------------------------------------- HTML

def inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"(https?://[^\s<]+)", r'<a href="\1" style="color:#1a5fb4">\1</a>', out)


def to_html(body: str, entry: dict[str, Any]) -> str:
    style = entry.get("html_style", "office")
    blocks = re.split(r"\n\s*\n", body.strip("\n"))
    parts: list[str] = []
    for block in blocks:
        lines = block.split("\n")
        if all(re.match(r"\s*[-*•] ", ln) for ln in lines):
            bullet = re.compile(r"^\s*[-*•] ")
            items = "".join("<li>" + inline(bullet.sub("", ln)) + "</li>" for ln in lines)
            parts.append(f'<ul style="margin:0 0 12px 18px;padding:0">{items}</ul>')
        elif all(" | " in ln for ln in lines):
            rows = []
            for i, ln in enumerate(lines):
                tag = "th" if i == 0 else "td"
                cells = "".join(
                    f'<{tag} style="border:1px solid #999;padding:4px 8px;text-align:left">{inline(c.strip())}</{tag}>'
                    for c in ln.split(" | "))
                rows.append(f"<tr>{cells}</tr>")
            parts.append('<table cellpadding="0" cellspacing="0" style="border-collapse:collapse;'
                         f'font-size:13px;margin:0 0 12px 0">{"".join(rows)}</table>')
        elif all(ln.startswith(">") for ln in lines):
            inner = "<br>\n".join(inline(ln.lstrip("> ")) for ln in lines)
            parts.append(f'<blockquote style="margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex">'
                         f"{inner}</blockquote>")
        else:
            # wrapped prose is one flowing paragraph; short lines (addresses, signatures) keep <br>
            sep = " " if max(len(ln) for ln in lines) > 60 and len(lines) > 1 else "<br>\n"
            if block.strip():
                parts.append('<p style="margin:0 0 12px 0">' + sep.join(inline(ln) for ln in lines) + "</p>")
    content = "\n".join(parts)
    button = entry.get("button")
    if button:
        content += (f'\n<table role="presentation" cellpadding="0" cellspacing="0"><tr><td bgcolor="'
                    f'{entry.get("color", "#1877f2")}" style="border-radius:6px;padding:10px 22px">'
                    f'<a href="{html.escape(button["url"])}" style="color:#ffffff;text-decoration:none;'
                    f'font-weight:bold;font-family:Helvetica,Arial,sans-serif">{html.escape(button["text"])}</a>'
                    f"</td></tr></table>")
    footer = entry.get("footer", "")
    if style == "platform":
        brand = html.escape(entry.get("brand", ""))
        foot = "<br>\n".join(inline(ln) for ln in footer.strip().split("\n")) if footer else ""
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
                "content=\"width=device-width\"><title>" + brand + "</title></head>\n"
                '<body style="margin:0;padding:0;background:#f0f2f5">\n'
                '<table width="100%" cellpadding="0" cellspacing="0" style="background:#f0f2f5">'
                '<tr><td align="center">\n'
                '<table width="600" cellpadding="0" cellspacing="0" style="background:#ffffff;'
                'font-family:Helvetica,Arial,sans-serif;font-size:15px;color:#1c1e21">\n'
                f'<tr><td style="padding:16px 24px;border-bottom:1px solid #e5e5e5;font-size:20px;'
                f'font-weight:bold;color:{entry.get("color", "#1877f2")}">{brand}</td></tr>\n'
                f'<tr><td style="padding:20px 24px">\n{content}\n</td></tr>\n'
                f'<tr><td style="padding:16px 24px;font-size:11px;color:#8a8d91">{foot}</td></tr>\n'
                "</table>\n</td></tr></table>\n</body></html>\n")
    if footer:
        content += '\n<p style="font-size:10px;color:#777;margin-top:18px">' + "<br>\n".join(
            inline(ln) for ln in footer.strip().split("\n")) + "</p>"
    font = "Calibri,Arial,sans-serif" if style == "office" else "Verdana,sans-serif"
    return (f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>\n'
            f'<body><div style="font-family:{font};font-size:11pt;color:#222">\n{content}\n</div></body></html>\n')


# ---------------------------------------------------------------- quoting

def quoted(q: dict[str, Any], inst: str) -> str:
    style = q.get("style", "reply")
    body = q["body"].rstrip("\n")
    who = q.get("from", "")
    when = q.get("date", "lunes, 23 de noviembre de 2026 9:14 a. m.")
    if style == "reply":
        head = f"El {when}, {who} escribió:"
        return "\n\n" + head + "\n" + "\n".join("> " + ln if ln else ">" for ln in body.split("\n")) + "\n"
    if style == "fwd":
        return ("\n\n---------- Forwarded message ---------\n" f"De: {who}\nDate: {when}\n"
                f"Subject: {q.get('subject', '')}\nTo: {q.get('to', '')}\n\n{body}\n")
    return ("\n\n________________________________\n" f"De: {who}\nEnviado: {when}\n"
            f"Para: {q.get('to', '')}\nAsunto: {q.get('subject', '')}\n\n{body}\n")


# ---------------------------------------------------------------- messages

def names_of(inst: str) -> dict[str, str]:
    d = load_directory(inst)
    out = {a: p.get("name", "") for a, p in d["people"].items()}
    return out


def render(entry: dict[str, Any], defaults: dict[str, Any], index: int,
           common: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    e = {**defaults, **entry}
    inst = e["institution"]
    names = {**names_of(inst), **{k.lower(): v for k, v in common.get("names", {}).items()}}
    sender = addr(e["from"], inst)
    to = [addr(a, inst) for a in e.get("to", [])]
    cc = [addr(a, inst) for a in e.get("cc", [])]
    bcc = [addr(a, inst) for a in e.get("bcc", [])]
    mail_from = addr(e["mail_from"], inst) if e.get("mail_from") else sender
    if e.get("mail_from") == "":
        mail_from = ""
    rcpt = [addr(a, inst) for a in e["rcpt"]] if e.get("rcpt") else list(dict.fromkeys(to + cc + bcc))
    auth = addr(e["auth"], inst) if e.get("auth") else None
    client_ip = e.get("ip")
    subj_enc = e.get("subj_enc", "auto")
    seed = int(hashlib.sha256(e["name"].encode()).hexdigest()[:8], 16)
    if subj_enc == "auto":
        subj_enc = "none" if e["subject"].isascii() else ("b", "q", "q")[seed % 3]
        if subj_enc != "none" and e.get("form") == "latin1":
            subj_enc = "q1"
    form = e.get("form", "plain")
    if form not in FORMS:
        raise SystemExit(f"{e['name']}: unknown form {form!r}")
    # date: spread over working days of Nov-Dec 2026 (platform mail in UTC)
    day = datetime(2026, 11, 2, tzinfo=COT) + timedelta(days=(index * 3 + seed) % 38)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    when = day.replace(hour=7 + seed % 10, minute=seed % 60, second=(seed >> 6) % 60)
    if e.get("utc"):
        when = when.astimezone(UTC)
    date = email.utils.format_datetime(when)
    msgid_domain = e.get("msgid_domain") or sender.rpartition("@")[2]
    msgid = f"<{e.get('msgid_prefix', '')}{seed:08x}.{index:04d}.{e['name']}@{msgid_domain}>"

    first = to[0] if to else (rcpt[0] if rcpt else "")
    for key in ("body", "footer", "html"):
        if isinstance(e.get(key), str):
            e[key] = e[key].replace("{to}", first)
    body = e["body"]
    if e.get("quote"):
        body = body.rstrip("\n") + "\n" + quoted(e["quote"], inst)
    sig = e.get("sig")
    if sig:
        body = body.rstrip("\n") + "\n\n" + sig.strip("\n") + "\n"
    disc = e.get("disclaimer")
    if disc:
        body = body.rstrip("\n") + "\n\n" + common["disclaimers"][disc].strip() + "\n"
    if e.get("footer") and form not in ("html", "html-b64"):
        pass  # plain part of platform mail carries the footer below
    plain = body if not e.get("footer") else body.rstrip("\n") + "\n\n" + e["footer"].strip() + "\n"
    if e.get("button") and form not in ("html", "html-b64"):
        plain = plain.replace("{button}", f"{e['button']['text']}: {e['button']['url']}")
    body_for_html = body.replace("{button}", "")
    htmltext = e.get("html") or to_html(body_for_html, e)

    hdr_how = {"b": "b", "q": "q", "q1": "q"}.get(subj_enc, "none")
    subject = e["subject"]
    if subj_enc in ("b", "q"):
        subj_hdr = encode_word(subject, subj_enc)
    elif subj_enc == "q1":
        subj_hdr = encode_word(subject, "q", "ISO-8859-1")
    elif subj_enc == "raw":
        subj_hdr = subject  # RFC 6532 style: raw UTF-8 in the header (only with 8bit bodies)
    else:
        subj_hdr = subject
    from_name = e.get("from_name", names.get(sender.lower(), ""))
    headers = [
        ("Date", date),
        ("From", display(from_name, sender, hdr_how if hdr_how != "none" else "q")),
    ]
    if e.get("sender_hdr"):
        headers.append(("Sender", addr(e["sender_hdr"], inst)))
    def fmt(lst: list[str]) -> str:
        return ",\r\n ".join(display(names.get(a.lower(), ""), a, "q") if e.get("to_names", True) else a for a in lst)
    headers.append(("To", fmt(to) if to else "undisclosed-recipients:;"))
    if cc:
        headers.append(("Cc", fmt(cc)))
    headers += [("Subject", subj_hdr), ("Message-ID", msgid)]
    if e.get("in_reply_to"):
        headers.append(("In-Reply-To", e["in_reply_to"]))
    for k, v in (e.get("headers") or {}).items():
        headers.append((k, str(v)))
    headers.append(("MIME-Version", "1.0"))

    boundary = f"=_b{seed:08x}{index:04d}"
    if form == "plain":
        mime = part(plain, "plain", "8bit")
    elif form == "qp":
        mime = part(plain, "plain", "quoted-printable")
    elif form == "b64":
        mime = part(plain, "plain", "base64")
    elif form == "latin1":
        mime = part(plain, "plain", "quoted-printable", "iso-8859-1")
    elif form == "html":
        mime = part(htmltext, "html", "quoted-printable")
    elif form == "html-b64":
        mime = part(htmltext, "html", "base64")
    elif form in ("alt", "alt-qp"):
        cte = "quoted-printable" if form == "alt-qp" else "8bit"
        mime = (f'Content-Type: multipart/alternative; boundary="{boundary}"\n\n'
                f"--{boundary}\n{part(plain, 'plain', cte)}\n--{boundary}\n"
                f"{part(htmltext, 'html', 'quoted-printable')}\n--{boundary}--\n")
    else:  # mixed: text plus an attached document
        fname = e.get("attach", "documento.pdf")
        fake = (f"%PDF-1.4\n% {e['name']}\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n").encode()
        att = b64(fake.decode("latin-1"), "latin-1")
        mime = (f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
                "This is a multi-part message in MIME format.\n\n"
                f"--{boundary}\n{part(plain, 'plain', 'quoted-printable')}\n--{boundary}\n"
                f'Content-Type: application/pdf; name="{fname}"\nContent-Transfer-Encoding: base64\n'
                f'Content-Disposition: attachment; filename="{fname}"\n\n{att}\n--{boundary}--\n')
    text = "".join(f"{k}: {v}\n" for k, v in headers) + mime
    text = text.replace("\r\n", "\n")
    eol = "\n" if seed % 5 == 0 else "\r\n"
    head = "".join(f"{k}: {v}\n" for k, v in headers)
    if not head.isascii() and subj_enc != "raw":
        raise SystemExit(f"{e['name']}: non-ASCII header")
    data = text.replace("\n", eol).encode("utf-8")
    label = {
        "file": f"{e['rule_kind']}/{e['name']}.eml", "rule_kind": e["rule_kind"], "label": e["label"],
        "institution": inst, "mail_from": mail_from, "rcpt": rcpt, "auth": auth, "client_ip": client_ip,
        "note": " ".join(e["note"].split()),
    }
    return data, label


# ---------------------------------------------------------------- checks

def check_entry(label: dict[str, Any], data: bytes) -> list[str]:
    errors: list[str] = []
    f = label["file"]
    msg = BytesParser(policy=policy.default).parsebytes(data)
    for h in ("Date", "From", "Subject", "Message-ID", "MIME-Version"):
        if msg[h] is None:
            errors.append(f"{f}: missing {h}")
    if msg.defects:
        errors.append(f"{f}: defects {msg.defects}")
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is None or not body.get_content().strip():
        errors.append(f"{f}: no readable text part")
    else:
        for p in msg.walk():
            if p.get_content_maintype() == "text":
                p.get_content()
    str(msg["Subject"])
    d = load_directory(label["institution"])
    own = lambda a: a.rpartition("@")[2].lower() in d["domains"]  # noqa: E731
    known = set(d["people"]) | set(d["services"]) | set(d["lists"])
    for a in [label["mail_from"], *label["rcpt"]]:
        if a and own(a) and a.lower() not in known:
            errors.append(f"{f}: {a} is not in the {label['institution']} directory")
    auth = label["auth"]
    if auth:
        if auth.lower() not in d["people"]:
            errors.append(f"{f}: auth {auth} is not a person of the directory")
        mf = label["mail_from"].lower()
        delegates = [x.lower() for x in d["services"].get(mf, {}).get("delegates", [])]
        if mf != auth.lower() and auth.lower() not in delegates:
            errors.append(f"{f}: {auth} may not send as {mf}")
    if label["rule_kind"] == "mailbox_purpose" and "soportetic@barrancabermeja.gov.co" not in \
            [r.lower() for r in label["rcpt"]]:
        errors.append(f"{f}: mailbox_purpose message does not go to soportetic@")
    if label["label"] not in ("positive", "negative") or label["rule_kind"] not in RULE_KINDS:
        errors.append(f"{f}: bad label/rule_kind")
    return errors


def build_folder(here: Path, seed: int, generated_by: str) -> int:
    """Render `here`/src/*.yaml into `here`/<rule kind>/*.eml and `here`/labels.yaml (unless
    --check), then check every labelled file; 1 on any error. `seed` offsets each message's
    rendering choices (the held-out set uses its own, so its messages differ in form too)."""
    src_dir = here / "src"
    common = yaml.safe_load((src_dir / "_common.yaml").read_text("utf-8"))
    if "--check" not in sys.argv:
        labels: list[dict[str, Any]] = []
        seen: set[str] = set()
        for k, kind in enumerate(RULE_KINDS):
            src = src_dir / f"{kind}.yaml"
            if not src.exists():
                continue
            doc = yaml.safe_load(src.read_text("utf-8"))
            defaults = {**doc.get("defaults", {}), "rule_kind": kind}
            out = here / kind
            out.mkdir(exist_ok=True)
            for old in out.glob("*.eml"):
                old.unlink()
            for i, entry in enumerate(doc["messages"]):
                if entry["name"] in seen:
                    raise SystemExit(f"duplicate name {entry['name']}")
                seen.add(entry["name"])
                data, label = render(entry, defaults, i + 100 * k + seed, common)
                if entry.get("automatic"):
                    label["automatic"] = True  # RFC 3834 mail: no notice may answer it
                (out / f"{entry['name']}.eml").write_bytes(data)
                labels.append(label)
        with (here / "labels.yaml").open("w", encoding="utf-8") as fh:
            fh.write(f"# Generated by {generated_by} from src/*.yaml; see README.md. One entry per message.\n")
            yaml.safe_dump(labels, fh, allow_unicode=True, sort_keys=False, width=200)
    labels = yaml.safe_load((here / "labels.yaml").read_text("utf-8"))
    errors: list[str] = []
    counts: dict[tuple[str, str], int] = {}
    for label in labels:
        errors += check_entry(label, (here / label["file"]).read_bytes())
        counts[(label["rule_kind"], label["label"])] = counts.get((label["rule_kind"], label["label"]), 0) + 1
    for (kind, lab), n in sorted(counts.items()):
        print(f"{kind:22} {lab:9} {n}")
    print(f"total {len(labels)}")
    for err in errors:
        print("ERROR", err)
    return 1 if errors else 0


def main() -> int:
    return build_folder(HERE, 0, "build.py")


if __name__ == "__main__":
    sys.exit(main())
