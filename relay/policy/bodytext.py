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

# family -> a regular expression on folded text; CORE families are what only such notices say
_FAMILIES: dict[str, re.Pattern[str]] = {
    "confidential": re.compile(r"\b(?:confidencial\w*|reservad[oa]s?|clasificad[oa]s?|privilegiad[oa]s?|"
                               r"confidential\w*|privileged)\b"),
    "addressee": re.compile(r"\b(?:destinatari[oa]s?(?:\(s\))?|addressee|intended recipient)\b"),
    "by_error": re.compile(r"\b(?:por error|por equivocacion|in error|by mistake)\b"),
    "delete": re.compile(r"\b(?:elimin\w*|borr[ae]\w*|destru\w*|delete\w*|destroy\w*)\b"),
    "prohibited": re.compile(r"\b(?:prohibid[oa]s?|prohibe|absten\w+|prohibited)\b"),
    "disclosure": re.compile(r"\b(?:divulga\w*|difusion|distribucion|retencion|copia (?:total o parcial|no autorizada)|"
                             r"disclos\w*|distribut\w*|dissemin\w*)\b"),
    "law": re.compile(r"\b(?:ley\s+(?:1581|1712|1273|1266|527)|habeas\s+data|decreto\s+1377|gdpr)\b"),
    "data_policy": re.compile(r"\b(?:tratamiento de (?:sus |los )?datos|politica de (?:privacidad|tratamiento)|"
                              r"proteccion de (?:los )?datos|privacy policy)\b"),
    "exclusive_use": re.compile(r"\b(?:uso exclusivo|exclusivamente para|unicamente a su destinatario|"
                                r"solely for|exclusive use)\b"),
    "sender": re.compile(r"\b(?:al remitente|notifique|informelo|sender)\b"),
    "opinions": re.compile(r"\b(?:opiniones|no representan|posicion de|views expressed)\b"),
    "penalty": re.compile(r"\b(?:(?:acarrear|generar|dar lugar a) (?:sanciones|acciones)|"
                          r"sanciones (?:legales|disciplinarias|penales|previstas))\b"),
    "this_message": re.compile(r"\b(?:aviso legal|nota de confidencialidad|aviso de confidencialidad|"
                               r"este (?:mensaje|correo(?: electronico)?|e-?mail) y (?:sus|la|los)|"
                               r"la informacion (?:contenida|transmitida) en este|this (?:e-?mail|message) and)\b"),
    "environment": re.compile(r"\b(?:medio ambiente|antes de imprimir|no imprima|imprimir este)\b"),
}
CORE = frozenset({"addressee", "by_error", "law", "data_policy", "exclusive_use", "environment"})
MIN_FAMILIES = 3
MAX_GAP = 2  # one sentence without any cue may sit inside a notice (a wrapped line, an address)

_SENT_FROM = re.compile(r"(?im)^[ \t>]*(?:enviado desde mi|sent from my|obtener outlook para|get outlook for)\b.*$")
_SENTENCE = re.compile(r"[^\n.!?]*(?:[.!?]+|\n|$)")


def _families(folded: str) -> set[str]:
    return {name for name, pattern in _FAMILIES.items() if pattern.search(folded)}


@lru_cache(maxsize=32)
def message_text(body: str) -> str:
    """`body` without legal disclaimers and "Enviado desde mi ..." lines (see the module docstring)."""
    text = _SENT_FROM.sub("", body)
    spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.end() > m.start()]
    if not spans:
        return text
    marks = [_families(fold(text[a:b])) for a, b in spans]
    cut: list[tuple[int, int]] = []
    i = 0
    while i < len(spans):
        if not marks[i]:
            i += 1
            continue
        j, gap, found = i, 0, set(marks[i])
        last = i
        while j + 1 < len(spans) and gap <= MAX_GAP:
            j += 1
            if marks[j]:
                found |= marks[j]
                last, gap = j, 0
            elif text[spans[j][0]:spans[j][1]].strip():
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
