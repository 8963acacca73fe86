"""The part of a body the text rules read: boilerplate that is not the message is left out.

Public servants and companies append the same legal notice to every message ("AVISO DE
CONFIDENCIALIDAD: este mensaje ... es de uso exclusivo del destinatario ... Ley 1581 de 2012 ... si
lo recibió por error, elimínelo"), and phones add "Enviado desde mi iPhone". Such a notice speaks
of confidentiality, sanctions and personal data whatever the message says, so the text rules would
read a meeting reschedule as a confidential notice. A notice is told by what it is made of, not by
its wording: a run of consecutive sentences that together touch at least three of the families of
words such notices are built from (confidential, the addressee, received by error, delete or
destroy, prohibited copy or disclosure, a data-protection law, the data policy, printing and the
environment, ...), at least one of them a family only such notices use. One sentence that says
"esta información es confidencial" is part of the message and stays.

Pure and cached: the same body is read by several rules.
"""

from __future__ import annotations

import re
from functools import lru_cache

from relay.message import fold

# The families, as words (exact or by their start) and as pairs of consecutive words (articles and
# prepositions skipped), on folded text. Word lookups keep a 64 KB body to a few milliseconds.
_WORDS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {  # family -> (prefixes, exact words)
    "confidential": (("confidencial", "confidential"), frozenset({
        "reservado", "reservada", "reservados", "reservadas", "clasificado", "clasificada", "privilegiado",
        "privilegiada", "privileged"})),
    "addressee": (("destinatari",), frozenset({"addressee"})),
    "delete": (("elimin", "destru", "borre", "borrar", "delete", "destroy"), frozenset()),
    "prohibited": (("prohib", "absten"), frozenset()),
    "disclosure": (("divulga", "difusion", "distribucion", "retencion", "disclos", "distribut", "dissemin"),
                   frozenset()),
    "sender": ((), frozenset({"remitente", "notifique", "informelo", "sender"})),
    "opinions": ((), frozenset({"opiniones"})),
    "law": ((), frozenset({"gdpr"})),
}
_PAIRS: dict[tuple[str, str], str] = {
    **{("por", w): "by_error" for w in ("error", "equivocacion")}, ("in", "error"): "by_error",
    ("by", "mistake"): "by_error",
    **{("ley", n): "law" for n in ("1581", "1712", "1273", "1266", "527")}, ("habeas", "data"): "law",
    ("decreto", "1377"): "law",
    ("tratamiento", "datos"): "data_policy", ("politica", "privacidad"): "data_policy",
    ("politica", "tratamiento"): "data_policy", ("proteccion", "datos"): "data_policy",
    ("privacy", "policy"): "data_policy",
    ("uso", "exclusivo"): "exclusive_use", ("exclusivamente", "para"): "exclusive_use",
    ("dirigida", "unicamente"): "exclusive_use", ("dirigido", "unicamente"): "exclusive_use",
    ("solely", "for"): "exclusive_use", ("exclusive", "use"): "exclusive_use",
    ("intended", "recipient"): "addressee",
    ("no", "representan"): "opinions", ("views", "expressed"): "opinions",
    **{(a, "sanciones"): "penalty" for a in ("acarrear", "generar")},
    **{("sanciones", b): "penalty" for b in ("legales", "disciplinarias", "penales", "previstas")},
    ("aviso", "legal"): "this_message", ("informacion", "contenida"): "this_message",
    ("informacion", "transmitida"): "this_message",
    ("medio", "ambiente"): "environment", ("antes", "imprimir"): "environment", ("no", "imprima"): "environment",
    ("imprimir", "correo"): "environment",
}
_SKIP = frozenset({"de", "del", "la", "las", "el", "los", "al", "a", "y", "o", "en", "este", "esta", "su", "sus",
                   "the", "of", "this"})
CORE = frozenset({"addressee", "by_error", "law", "data_policy", "exclusive_use", "environment"})
# substrings any word or pair of a family contains: a first, C-speed look at the whole text
_KEYS: dict[str, tuple[str, ...]] = {
    "confidential": ("confidencial", "reservad", "clasificad", "privilegiad", "confidential", "privileged"),
    "addressee": ("destinatari", "addressee", "recipient"),
    "by_error": ("error", "equivocacion", "mistake"),
    "delete": ("elimin", "destru", "borre", "borrar", "delete", "destroy"),
    "prohibited": ("prohib", "absten"),
    "disclosure": ("divulga", "difusion", "distribucion", "retencion", "disclos", "distribut", "dissemin"),
    "sender": ("remitente", "notifique", "informelo", "sender"),
    "opinions": ("opiniones", "representan", "expressed"),
    "law": ("1581", "1712", "1273", "1266", "527", "habeas", "1377", "gdpr"),
    "data_policy": ("tratamiento", "privacidad", "proteccion", "privacy"),
    "exclusive_use": ("exclusiv", "unicamente", "solely"),
    "penalty": ("sanciones",),
    "this_message": ("aviso legal", "contenida", "transmitida"),
    "environment": ("ambiente", "imprim"),
}
MIN_FAMILIES = 3
MAX_GAP = 2  # sentences without any cue that may sit inside a notice (a wrapped line, an address)

_SENT_FROM = re.compile(r"(?im)^[ \t>]*(?:enviado desde mi|sent from my|obtener outlook para|get outlook for)\b.*$")
# a sentence ends at . ! ? or at a line end, unless the next line goes on in lower case or with a
# number (a wrapped line: "para uso\nexclusivo", "la Ley\n1581")
_SENTENCE = re.compile(r"(?:[^\n.!?]|\n(?=[ \t]*[a-záéíóúüñ0-9(]))*(?:[.!?]+|\n|$)")
_TOKEN = re.compile(r"\w+")


@lru_cache(maxsize=65536)
def _word(raw: str) -> tuple[str, str | None]:
    """The folded word and the family it belongs to alone, if any."""
    w = fold(raw)
    for family, (prefixes, exact) in _WORDS.items():
        if w in exact or (prefixes and w.startswith(prefixes)):
            return w, family
    return w, None


def _families(tokens: list[str]) -> set[str]:
    found: set[str] = set()
    prev = ""
    for raw in tokens:
        w, family = _word(raw)
        if w in _SKIP:
            continue
        if family:
            found.add(family)
        pair = _PAIRS.get((prev, w))
        if pair:
            found.add(pair)
        prev = w
    return found


@lru_cache(maxsize=32)
def message_text(body: str) -> str:
    """`body` without legal disclaimers and "Enviado desde mi ..." lines (see the module docstring)."""
    text = _SENT_FROM.sub("", body)
    folded = fold(text)
    core = {family for family in CORE if any(key in folded for key in _KEYS[family])}
    if not core:
        return text  # most messages: not even the letters of a notice
    rough = core | {f for f, keys in _KEYS.items() if f not in CORE and any(key in folded for key in keys)}
    if len(rough) < MIN_FAMILIES:
        return text  # most messages: not even the letters of a notice
    tokens = [(m.start(), m.group()) for m in _TOKEN.finditer(text)]
    whole = _families([t for _, t in tokens])
    if len(whole) < MIN_FAMILIES or not whole & CORE:
        return text  # most messages: no notice in them, one pass over the words
    spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.end() > m.start()]
    words: list[list[str]] = [[] for _ in spans]
    k = 0
    for at, token in tokens:
        while k < len(spans) - 1 and at >= spans[k][1]:
            k += 1
        words[k].append(token)
    marks = [_families(w) for w in words]
    cut: list[tuple[int, int]] = []
    i = 0
    while i < len(spans):
        if not marks[i]:
            i += 1
            continue
        j, gap, found, last = i, 0, set(marks[i]), i
        while j + 1 < len(spans) and gap <= MAX_GAP:
            j += 1
            if marks[j]:
                found |= marks[j]
                last, gap = j, 0
            elif words[j]:
                gap += 1
        if len(found) >= MIN_FAMILIES and found & CORE:
            cut.append((spans[i][0], spans[last][1]))
            i = last + 1
        else:
            i += 1
    if not cut:
        return text
    out, at = [], 0
    for a, b in cut:
        out.append(text[at:a])
        out.append("\n")
        at = b
    out.append(text[at:])
    return "".join(out)
