"""sensitive_individual: notices about one person's legal matter, debt, health or other particular
matter go to that person alone.

Circular 004 de 2021 (Pasto), lineamiento 6: "En caso de necesitar notificar a los servidores
públicos sobre el cumplimiento o incumplimiento de algún asunto legal, deudas pendientes, estado de
salud, o algún asunto que sea solo del interés particular, la comunicación se deberá hacer de forma
individual" — confidentiality, Ley 1581 de 2012. Hidden (BCC) recipients still make a group.

The circular is about *notifications to a person about their own matter*, not about every message
that names one of those subjects. So the rule judges two things, the way a reader does:
- the **topic**: legal or disciplinary, debt or credit, health, other particular matters
  (performance evaluation, contract non-renewal, complaints), each a group of weighted terms;
- whether the text **concerns a particular person** — it addresses the reader ("usted", "se le
  notifica", "su crédito"), names someone, carries an ID, case number or amount owed — against the
  signals of a **general communication** (calendars, trainings, campaigns, procedures, "todos los
  servidores", "deben reportar", a summary of a new law).
A message to more than one person is refused when topic >= topic_threshold and person - general >=
person_threshold; or when the topic alone is overwhelming (>= strong_topic) and nothing in it reads
as general (person - general >= 0) and, when nothing points at a person, it is more than one term:
"EMBARGO DE SALARIO ... JUZGADO" needs no "usted" to be about someone; "comparendo" alone is a topic.
The text read is the message's own (relay/policy/bodytext.py): a legal disclaimer that speaks of
confidentiality and sanctions is not the message.
The pack may split the message per recipient instead of refusing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from relay.message import ParsedMessage
from relay.policy.lexicon import Lexicon, check_extra, check_groups, group_scores, merged
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Explanation, Finding, Rewrite

TOPICS: dict[str, dict[str, float]] = {
    "legal": {
        "proceso disciplinario": 3, "investigación disciplinaria": 3, "indagación previa": 3,
        "pliego de cargos": 3, "descargos": 3, "versión libre": 2.5, "falta disciplinaria": 3,
        "auto de apertura": 2.5, "disciplinario": 1.5, "llamado de atención": 3, "amonestación": 3,
        "sanción": 2, "destitución": 3, "suspensión en el ejercicio": 3, "inhabilidad": 2,
        "incumplimiento": 1.5, "embargo": 3, "medida cautelar": 2.5, "notificación judicial": 3,
        "orden judicial": 2.5, "requerimiento judicial": 3, "proceso judicial": 2.5, "demanda": 1.5,
        "tutela": 1.5, "juzgado": 1.5, "fiscalía": 1.5, "denuncia": 1.5, "querella": 2,
        "citación a audiencia": 2.5, "asunto legal": 3, "acción de tutela": 2.5, "=accionante": 2.5,
        "fallo de tutela": 2.5, "inasistencia": 2, "recurso de reposición": 1.5, "ausencia injustificada": 3,
        "abandono del cargo": 3,
        "llegadas tarde": 2, "comparendo": 3, "multa": 2, "infracción": 1.5, "cuota alimentaria": 3,
        "proceso de alimentos": 3, "comisaría de familia": 2.5, "violencia intrafamiliar": 3, "custodia": 2,
        "hallazgo": 1.5, "responsabilidad fiscal": 3, "procuraduría": 1.5, "contraloría": 1,
    },
    "debt": {
        "deuda": 2.5, "adeuda": 3, "=mora": 2.5, "intereses de mora": 2.5, "saldo pendiente": 2.5,
        "saldo a cargo": 2.5, "saldo vencido": 3, "cuota vencida": 3, "cuota atrasada": 3,
        "obligación pendiente": 2.5, "obligación vencida": 3, "pago pendiente": 2, "cobro jurídico": 3,
        "cobro prejurídico": 3, "cobro coactivo": 3, "cobro": 1.5, "libranza": 2, "crédito": 1,
        "préstamo": 1, "centrales de riesgo": 3, "reporte negativo": 3, "datacrédito": 3,
        "acuerdo de pago": 2.5, "normalizar": 1.5, "paz y salvo": 1, "fondo de empleados": 1,
        "=cooperativa": 1, "cartera": 1, "descuento por nómina": 1.5, "pendiente de pago": 2.5,
        "valor a pagar": 2, "cancelar el valor": 2, "cancelar el saldo": 2, "consignar": 1.5, "consignación": 1.5,
        "abono": 1.5, "atraso": 2, "vencido": 1.5, "factura vencida": 3, "=saldo": 1, "reintegro": 2,
        "reintegrar": 2, "mayor valor pagado": 2.5, "pago en exceso": 2.5, "pago de lo no debido": 3,
        "descontar": 1.5, "anticipo": 1.5, "legalizar": 1.5, "legalización": 1.5,
    },
    "health": {
        "estado de salud": 3, "examen médico": 2.5, "resultados de laboratorio": 3, "diagnóstico": 2,
        "incapacidad": 2.5, "historia clínica": 3, "tratamiento médico": 2.5, "valoración médica": 2.5,
        "concepto médico": 2.5, "recomendaciones médicas": 2.5, "restricciones médicas": 2.5,
        "medicina laboral": 2, "pérdida de capacidad laboral": 3, "calificación de origen": 2.5,
        "reubicación laboral": 2.5, "discapacidad": 2, "embarazo": 2.5, "enfermedad": 1.5,
        "positivo para covid": 3, "prueba positiva": 2.5, "licencia de maternidad": 2,
        "licencia de paternidad": 2, "psicología": 2, "salud mental": 2, "accidente de trabajo": 2,
        "cita médica": 2, "hospitalización": 2, "cirugía": 2, "aislamiento": 2, "contacto estrecho": 2.5,
        "síntomas": 1.5, "prueba pcr": 2.5, "prueba de antígeno": 2.5, "=covid": 1, "resultado positivo": 2.5,
        "contagio": 2, "psicológica": 2, "psicológico": 2, "evaluación psicológica": 2.5, "prueba psicotécnica": 2,
        "médico tratante": 2.5, "fórmula médica": 2.5, "medicamentos": 1.5, "urgencias": 1.5, "eps": 1,
        # the clinical words people use for one person's case (stems: incapacitado/a, diagnosticó ...)
        "incapacitado": 2.5, "incapacitada": 2.5, "psiquiatra": 2.5, "psiquiatría": 2.5, "depresión": 2,
        "depresivo": 2, "ansiedad": 1.5, "medicación": 1.5, "ortopedista": 2, "ginecólogo": 2,
        "hernia": 2, "fractura": 2, "reposo": 1.5, "terapia": 1, "=uci": 2, "hospitalizado": 2,
        "hospitalizada": 2, "resultados de exámenes": 3, "examen ocupacional": 2.5, "apto con restricciones": 3,
        "glicemia": 2, "colesterol": 2, "audiometría": 2, "hipoacusia": 2, "hipertensión": 2, "diabetes": 2,
        "oncológico": 2.5, "cáncer": 2.5, "quimioterapia": 2.5, "en tratamiento": 1.5, "=positiva": 1,
        "=positivo": 1,
    },
    "personal": {
        "asunto personal": 2.5, "situación personal": 2.5, "interés particular": 2.5,
        "información confidencial": 2, "confidencial": 1, "evaluación de desempeño": 2.5,
        "calificación de desempeño": 2.5, "calificación no satisfactoria": 3, "periodo de prueba": 1.5,
        "no superó": 1.5, "no renovación": 3, "terminación del contrato": 2.5,
        "terminación anticipada": 2.5, "insubsistencia": 3, "retiro del servicio": 2,
        "plan de mejoramiento individual": 2.5, "acoso laboral": 2.5, "queja": 1.5, "datos personales": 1,
        "no apto": 2.5, "aptitud": 1.5, "licencia no remunerada": 2.5, "calamidad doméstica": 3,
        "situación familiar": 2.5, "no satisfactoria": 2.5, "no satisfactorio": 2.5,
        "acto administrativo de retiro": 2.5, "malos tratos": 2, "maltrato": 2, "hostigamiento": 2,
        "persecución laboral": 2.5, "queja contra": 2, "encargo": 1, "traslado": 1, "no continuidad": 3,
        "desvinculación": 2.5,
    },
}

PERSON: dict[str, float] = {  # the text concerns a particular person
    "usted": 1.5, "le informamos": 2, "les informamos": 1, "le notificamos": 2.5, "les notificamos": 2.5,
    "le comunicamos": 2, "se le cita": 3, "se les cita": 3, "comparecer": 2, "en su contra": 2.5,
    "a su nombre": 2, "su crédito": 2, "su obligación": 2, "su deuda": 2, "su saldo": 2, "su caso": 2,
    "su situación": 2, "su incapacidad": 2, "su examen": 2, "su resultado": 2, "sus resultados": 2,
    "su estado": 1.5, "su contrato": 2, "su desempeño": 2, "su evaluación": 2, "su expediente": 2,
    "presenta un saldo": 2, "servidores relacionados": 2, "personas relacionadas": 2, "se relacionan": 1.5,
    "siguientes servidores": 2, "siguientes funcionarios": 2, "siguientes personas": 2, "no han presentado": 1.5,
    "se le requiere": 2.5, "le solicitamos": 1.5, "=justifique": 1.5, "=allegue": 1.5, "=acerquese": 1.5,
    "=presentese": 1.5, "su periodo": 2, "su licencia": 2, "su salario": 1.5, "su proceso": 2,
    "su reubicación": 2, "su retiro": 2, "su calificación": 2, "su nómina": 1.5, "su cita": 2, "su tratamiento": 2,
    "su diagnóstico": 2, "su embargo": 2, "su libranza": 2, "su cuota": 2, "a su cargo": 1,
    # a clitic "le" before what was done to or found in someone: "le diagnosticó", "le ordenaron reposo"
    r"re:\ble\s(?:diagnostic|ordenar|ordeno|dieron|dio\b|cambiaron|realizaron|detectaron|practicaron|encontraron|"
    r"formular|recetar|prescrib|descont|aplic|embarg|negaron|pagaron|pago\b|adeud|cobr|notific|comunic|inform|"
    r"impus|impone|requier|cit[ao]\b)\w*": 1.5,
    "el servidor": 1, "la servidora": 1, "el funcionario": 1,
    "la funcionaria": 1, "el contratista": 1, "la contratista": 1, "el trabajador": 1, "la trabajadora": 1,
    # a role or title followed by a name as written: "servidora Lucía Ortega", "señor JORGE BENAVIDES"
    # (the lookahead on the first letters lets re skip most positions: ~3x faster)
    r"raw:(?=[SsFfCcTtDdIi])\b(?:[Ss]eñora?|SEÑORA?|[Ss]eñor\(a\)|[Ss]ervidora?|[Ff]uncionari[oa]|[Cc]ontratista|"
    r"[Tt]rabajadora?|[Dd]octora?|[Ii]ngenier[oa]|[Dd]oña|[Dd]on|Sra?\.|Dra?\.|SRA?|[Cc]ompañer[oa]|[Ii]ng\.|"
    r"[Aa]rquitect[oa]|[Aa]bogad[oa])[ \t]+"
    r"(?!P[úu]blic|Alcald|Secretari|Jefe|Director)"
    r"(?:[A-ZÁÉÍÓÚÑ][a-záéíóúñ]+|[A-ZÁÉÍÓÚÑ]{2,})"
    r"(?:[ \t]+(?:de[ \t]+)?(?:[A-ZÁÉÍÓÚÑ][a-záéíóúñ]+|[A-ZÁÉÍÓÚÑ]{2,}))+": 2,
    # a named person as the subject of what happened to them: "Eduardo va a estar incapacitado",
    # "Carolina tiene 7 meses de embarazo", "Mario Rosero solicitó licencia"
    r"raw:(?<![\w.])(?!(?:La|El|Los|Las|Lo|Quien|Quienes|Todo|Toda|Todos|Todas|Cada|Nadie|Esta|Este|Esto|Hoy|Usted|"
    r"Ustedes|Se|No|Si|Sí|Ya|Que|Qué|Él|Ella|Ellos|Nuestra|Nuestro|Su|Sus|Mi|Tu|Ninguno|Alguien|Cualquier|Toda|"
    # institutions and things are subjects too, not persons
    r"Hospital|Banco|Alcald[íi]a|Secretar[íi]a|Subsecretar[íi]a|Oficina|Comit[ée]|Juzgado|Fondo|Direcci[óo]n|"
    r"Programa|Sistema|Plataforma|Centro|Comisar[íi]a|Contralor[íi]a|Procuradur[íi]a|Cooperativa|Entidad|Equipo|"
    r"[ÁA]rea|Grupo|Despacho|Concejo|Gobierno|Ministerio|Empresa|Servicio|Portal|Proceso|Contrato|Nómina|Nomina)\b)"
    r"[A-ZÁÉÍÓÚÑ][a-záéíóúñ]{2,}(?:[ \t][A-ZÁÉÍÓÚÑ][a-záéíóúñ]{2,})?[ \t]+(?:va a estar|estará|está|tiene|salió|"
    r"sale|solicitó|pidió|fue|quedó|queda|debe|adeuda|presenta|registra|no superó|no asistió|sigue|se encuentra|"
    r"estuvo|tendrá|no vendrá|no viene|ingresó|perdió|recibió)\b": 1.5,
    r"re:rles?\b": 1,  # informarle, notificarle, comunicarles (an infinitive addressed to someone)
    # an ID: "C.C. 12.345.678", "cédula de ciudadanía No. 1085..."
    # (each pattern starts with a literal: Python's re then scans a 5 KB body in microseconds)
    r"re:c\.?\s?c\.?\s*(?:no\.?|n[°o.]+|numero|#)?\s*\d[\d.\s]{5,}": 2.5,
    r"re:cedula(?: de ciudadania)?\s*(?:no\.?|n[°o.]+|numero|#)?\s*\d[\d.\s]{5,}": 2.5,
    r"re:identificad[oa] con\D{0,40}\d[\d.\s]{5,}": 2.5,
    r"re:\$\s?\d{1,3}(?:[.,]\d{3})+": 1.5,  # an amount: "$ 1.234.567"
    # a case, credit or file number: "expediente No. 045-2026", "crédito de libranza N° 45821"
    r"re:\b(?:radicado|expediente|proceso|obligacion|credito|libranza|prestamo|pagare|caso|auto)\b"
    r"(?:[^\n\d]{0,25}?(?:no\.?|n[°o.]+|numero|#)\s*|\s+)[a-z]{0,4}-?\d[\d-]{2,}": 2,
    # a salutation with a name (not "Estimados servidores"): "Señora Lucía", "Doctor Ortega"
    r"re:(?m)^\W*(?:senor|senora|senor\(a\)|sr\.|sra\.|doctor|doctora|dr\.|dra\.|estimad[oa]|apreciad[oa]|"
    r"respetad[oa])\s+(?!(?:servidor|funcionari|colaborador|companer|contratist|tod[oa]s|usuari|ciudadan|equipo|"
    r"jefe|directiv|secretari|comunidad|public|senor|senora|doctor|doctora)\w*)[a-z]{3,}": 1.5,
}

GENERAL: dict[str, float] = {  # signals of a general communication
    "todos servidores": 2, "todos funcionarios": 2, "todos colaboradores": 2, "todo personal": 2,
    "todas dependencias": 2, "funcionarios contratistas": 1.5, "servidores contratistas": 1.5,
    "=estimados": 1.5, "=estimadas": 1.5, "=apreciados": 1.5, "=apreciadas": 1.5, "=respetados": 1.5,
    "=respetadas": 1.5, "=queridos": 1.5,
    "calendario": 2, "cronograma": 2, "fecha límite": 1.5, "fechas de corte": 1.5, "programación": 1,
    "=deben reportar": 2, "=deberan reportar": 2, "reportar novedades": 2, "novedades de nómina": 2,
    "=recuerden": 1.5, "recordamos a todos": 1.5, "invitación": 2, "inscripción": 2, "inscríbase": 2,
    "charla": 2, "conferencia": 2, "conversatorio": 2, "=foro": 1.5, "capacitación": 2, "taller": 2,
    "seminario": 2, "diplomado": 2, "=cursos": 1.5, "curso virtual": 1.5, "webinar": 2, "campaña": 2,
    r"re:jornadas?\s+(?:de\s+(?:vacunacion|salud|capacitacion|sensibilizacion|induccion|reinduccion|bienestar|"
    r"donacion|prevencion|integracion)|deportiva|cultural|pedagogica)": 2,
    "semana de la salud": 2, "brigada": 2, "pausas activas": 1, "socialización": 1.5, "boletín": 2,
    "=procedimiento": 1.5, "=procedimientos": 1.5, "lineamientos": 1.5, "instructivo": 1.5, "guía": 1, "circular": 1,
    "resumen": 1.5, "nueva ley": 2, "reforma": 1.5, "cambios normativos": 1.5, "prevención": 1,
    "promoción y prevención": 2, "bienestar": 1.5, "cupos": 1, "=auditorio": 1.5, "encuesta": 1.5,
    "recomendaciones generales": 2, "información general": 1.5, "estadísticas": 1.5, "=indicadores": 1.5,
    "=informe": 1, "=informes": 1, "consolidado": 1.5, "porcentaje": 1.5, "por dependencia": 2, "=total": 1,
    "comportamiento": 1, "=trimestral": 1, "=indicador": 1, "promedio": 1.5, "=millones": 1,
    "contra la alcaldía": 2.5, "contra el municipio": 2.5, "contra la entidad": 2.5, "contra el distrito": 2.5,
    "un ciudadano": 1.5, "una ciudadana": 1.5, "=ciudadanos": 1, "=contribuyentes": 2, "contestar la tutela": 2,
    "contestación de la tutela": 2, "informe técnico": 1.5, "insumo técnico": 1.5, "=cifras": 1.5, "=estratos": 1,
    r"re:\b(?:el|un)\s\d{1,3}(?:[.,]\d+)?\s?%\s(?:de\s(?:los|las)|corresponde|son\b|fueron|del total)": 1.5,
    "asociados": 1, "a todos los": 1.5, "asamblea": 1.5,
    # a rule for a class of people, not a notice to one: "quienes tengan cuotas atrasadas podrán ..."
    "=quienes": 1.5, "aquellos que": 1.5, "las personas que": 1.5, "podrán acogerse": 1.5, "=acogerse": 1,
    "a sus asociados": 1.5, "el ciudadano": 1.5, "la ciudadana": 1.5, "derecho de petición": 1.5,
    "proyecto de respuesta": 1.5,
    "si usted": 2, "si estás": 2, "si estas": 2, "si tienes": 1.5, "si eres": 1.5, "si presenta": 1.5,
    "conozca": 1.5, "sabía que": 2, "número de": 1.5, "cantidad de": 1.5,
}

NAMES = {"legal": "asuntos legales o disciplinarios", "debt": "deudas", "health": "salud",
         "personal": "asuntos de interés particular"}
OPPOSED = ("person", "general")


class Config(RuleBase):
    kind: Literal["sensitive_individual"]
    action: Action = Action.REJECT
    topics: dict[str, dict[str, float]] = Field(default_factory=lambda: {k: dict(v) for k, v in TOPICS.items()},
                                                description="topic -> {term: weight}")
    person: dict[str, float] = Field(default_factory=lambda: dict(PERSON),
                                     description="signals that the text concerns a particular person")
    general: dict[str, float] = Field(default_factory=lambda: dict(GENERAL),
                                      description="signals of a general communication")
    extra_terms: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="{group: {term: weight}} over the lists above; weight 0 removes")
    topic_names: dict[str, str] = Field(default_factory=lambda: dict(NAMES))
    topic_threshold: float = Field(default=3.0, gt=0)
    person_threshold: float = Field(default=1.0)
    strong_topic: float | None = Field(default=6.0, gt=0, description="topic alone enough if nothing is general")
    subject_weight: float = Field(default=2.0, ge=1)
    max_recipients: int = Field(default=1, ge=1)
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset(
        {Action.REJECT, Action.MODERATE, Action.REWRITE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"topics", "count"})
    DEFAULT_REPLY: ClassVar[str] = "Las notificaciones de asuntos personales se envian de forma individual"

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        if set(value) & set(OPPOSED):
            raise ValueError("'person' and 'general' are reserved group names")
        return check_groups(value)

    @field_validator("extra_terms")
    @classmethod
    def _extra(cls, value: dict[str, dict[str, float]], info: ValidationInfo) -> dict[str, dict[str, float]]:
        return check_extra(value, [*info.data.get("topics", TOPICS), *OPPOSED])

    @field_validator("person", "general")
    @classmethod
    def _terms(cls, value: dict[str, float]) -> dict[str, float]:
        check_groups({"terms": value})
        return value

    @cached_property
    def lexicon(self) -> Lexicon:
        return Lexicon(merged({**self.topics, "person": self.person, "general": self.general}, self.extra_terms))


def judge(rule: Config, message: ParsedMessage) -> tuple[bool, Explanation, list[str]]:
    """Whether the text is a notice about a particular person's sensitive matter, why, and its topics."""
    evidence = rule.lexicon.hits_message(message, rule.subject_weight)
    scores = group_scores(evidence)
    person, general = scores.pop("person", 0.0), scores.pop("general", 0.0)
    topic = round(sum(scores.values()), 3)
    net = round(person - general, 3)
    topics = sorted(scores, key=lambda t: -scores[t])
    # the topic alone is enough only when nothing points at a person if it is more than one term
    # ("comparendo" in a subject is a topic; "EMBARGO ... JUZGADO ... SALARIO" is a notice)
    topic_terms = [e.term for e in evidence if e.group not in OPPOSED]
    if topic >= rule.topic_threshold and net >= rule.person_threshold:
        hit, why = True, f"personal notice: topic {topic:g} >= {rule.topic_threshold:g} and person {person:g} " \
                         f"- general {general:g} >= {rule.person_threshold:g}"
    elif (rule.strong_topic is not None and topic >= rule.strong_topic and net >= 0
          and (person > 0 or len(set(topic_terms)) >= 2)):
        hit, why = True, f"personal notice: topic {topic:g} >= {rule.strong_topic:g} with nothing general " \
                         f"(person {person:g} - general {general:g} >= 0)"
    elif topic < rule.topic_threshold:
        hit, why = False, f"no sensitive topic: topic {topic:g} < {rule.topic_threshold:g}"
    else:
        hit, why = False, f"general communication: topic {topic:g} but person {person:g} - general " \
                          f"{general:g} < {rule.person_threshold:g}"
    explanation = Explanation(
        why, (("topic", topic), ("person", person), ("general", general),
              *((f"topic:{t}", scores[t]) for t in topics)),
        (("topic", rule.topic_threshold), ("person", rule.person_threshold),
         *((("strong_topic", rule.strong_topic),) if rule.strong_topic is not None else ())),
        evidence)
    return hit, explanation, topics


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    others = [r for r in ctx.recipients if r.casefold() not in ctx.own_addresses]
    group = len(others) > rule.max_recipients or bool(ctx.list_recipients)
    if not group:
        return
    hit, why, topics = judge(rule, ctx.submission.message)
    if not hit:
        return
    names = ", ".join(rule.topic_names.get(t, t) for t in topics) or "asuntos personales"
    finding = rule.finding(
        ctx, {"topics": names, "count": str(len(others))}, rewrite=Rewrite(split=True),
        detail={"score": dict(why.scores)["topic"], "terms": [e.term for e in why.evidence],
                "recipients": len(others)},
    )
    yield replace(finding, why=why)


def explain(rule: Config, message: ParsedMessage) -> Explanation:
    """The judgement of the text alone, fired or not (for `relay check`: why a rule did not fire)."""
    return judge(rule, message)[1]
