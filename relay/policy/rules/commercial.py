"""commercial: advertising or commercial offers need approval before they go out.

Circular 004 de 2021 (Pasto), lineamiento 4: institutional mail is not for "publicidad exterior o
información comercial sin consentimiento del Despacho del Alcalde o la Oficina de Comunicación
Social" — so the default is moderation by those offices, who may approve. Lineamientos 4-5 also
route information from other public entities and partners (convenios) through that office, and the
entity's own contracting is not advertising.

The rule judges, as a reader would, whether the text is **an offer made to the reader** (products,
prices, discounts, a call to buy or to get in touch, limited time, unsubscribe footers) rather
than **procurement or institutional communication** (a tender, SECOP, requests for quotations,
contracts, payroll deductions, a health-promotion campaign, an inter-entity agreement). It fires
when offer >= threshold and offer - institutional >= margin; the finding lists every term.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from relay.directory import address_key
from relay.message import ParsedMessage
from relay.policy.lexicon import Balance, Lexicon, balanced, check_extra, check_groups, merged
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Evidence, Explanation, Finding

OFFER: dict[str, float] = {
    "promoción": 2, "oferta": 1.5, "ofertas especiales": 2, "descuento": 1.5,
    r"re:%\s*(?:de\s+)?(?:dcto|descuento|off)": 2, "precio especial": 2, "precio": 1, "mejor precio": 2,
    "precios bajos": 2, "por tiempo limitado": 2.5, "hasta agotar existencias": 2.5, "últimas unidades": 2.5,
    "=aproveche": 2, "=aprovecha": 1.5, "=aprovechen": 2, "=adquiera": 2, "=adquiere": 1.5, "=compre": 2,
    "=compra ya": 2, "=vendo": 2, "=vendemos": 2, "venta": 1.5, "gratis": 1.5, "envío gratis": 2,
    "=catalogo": 1.5, "=catalogos": 1.5, "=cotice": 1, "cotización sin compromiso": 2.5, "cupos limitados": 1.5,
    "financiación": 1, "cuotas sin interés": 2.5, "sin cuota de manejo": 2, "tasa preferencial": 2,
    "llame ya": 2, "=escribanos": 1.5, "=escribame": 1.5, "=contactenos": 1, "whatsapp": 0.5, "rifa": 1.5,
    "sorteo": 1, "emprendimiento": 1, "nuestros productos": 2, "nuestros servicios": 1, "portafolio": 1.5,
    "=clientes": 1, "black friday": 2.5, "obsequio": 1.5, "código promocional": 2.5, "cupón": 2,
    "compra mínima": 2, "darse de baja": 1.5, "cancelar suscripción": 1.5,
    "=publicidad": 2, "=publicitario": 2, "=publicitaria": 2,
    "patrocinado": 1.5, "=exclusivo": 1, "=exclusiva": 1, "=exclusivos": 1, "=exclusivas": 1,
    "para usted": 1, "para ti": 1, "domicilio": 1, "=pedidos": 1, "visítenos": 1.5, "nuestra tienda": 2,
    "=tienda": 1, "lanzamiento": 1, "nuevo producto": 2, "=ahorre": 2, "=ahorra": 1.5, "no se lo pierda": 2,
    "no te lo pierdas": 2, r"re:\$\s?\d{1,3}(?:[.,]\d{3})+": 1.5,  # a price
    # a price pitched at the reader: "desde $15.900", "por solo $9.000", "inversión: $980.000"
    r"re:(?:desde|solo|apenas|antes|ahora|inversion|precio|tarifa)\W{0,3}(?:de\s+|es\s+)?\$\s?\d": 2,
    "=pedido": 1, "por encargo": 2, "=encargos": 1.5, "=preventa": 2.5, "=boletas": 1.5, "boletería": 1.5,
    "=adquierelo": 2, "=adquieralo": 2, "=compralo": 2, "=afiliese": 2, "=afiliate": 2, "planes desde": 2,
    "=poliza": 1, "=asesor": 0.5, "=matricula": 1.5, "valor de la inscripción": 2, "=inscribete": 1,
    "=obten": 1.5, "pide ya": 2, "reserva ya": 2, "=promo": 2, "precio de lanzamiento": 2.5, "=suscribete": 1,
    "=cotiza": 1, "=llamanos": 1.5, "=escribenos": 1.5, "=visitanos": 1.5, "tienda virtual": 1.5,
    "compra en línea": 2, "pago contra entrega": 2.5, "envíos a todo el país": 2, "=dcto": 1.5,
    r"re:2\s?x\s?1\b": 2, "hot sale": 2.5, "cyber lunes": 2.5, "precio normal": 2, "iva incluido": 1.5,
    "bono de regalo": 2, "crédito preaprobado": 3, "preaprobado": 2.5, "sin codeudor": 2.5,
    "aprobación inmediata": 2, "tasa desde": 2, "desembolso inmediato": 2.5, "oferta válida": 2,
    "aplican condiciones": 2, "unidades disponibles": 2, "se vende": 2, "=arriendo": 1.5, "precio negociable": 2,
    "=interesados": 1, "=interesado": 1, "=interesada": 1,
    # how colleagues sell to each other: a price per unit of sale ("la docena a $18.000", "$7.000 la
    # porción", "a 9mil", "mensualidad $120.000", "$600.000 cada uno"), where to order or pay, what
    # the seller does ("estoy rifando", "traje café", "tengo cachorros") and the reader's cue to buy
    r"re:\b(?:docena|libra|media libra|porcion|unidad|boleta|kilo|combo|paquete|caja|mensualidad|canon|cada una?|"
    r"c/u|la hora|la clase|el par|el set)\W{0,3}(?:a|en|de|por|vale|cuesta|:)?\s*(?:solo\s+)?\$?\s?\d[\d.,]*": 2.5,
    r"re:\$?\s?\d[\d.,]*\s*(?:mil\s+)?(?:pesos\s+)?(?:c/u|cada una?|la (?:docena|libra|unidad|porcion|boleta|caja)|"
    r"el (?:kilo|par|combo|paquete)|mensual(?:es)?\b|al mes\b)": 2.5,
    r"re:\b\d+(?:[.,]\d+)?\s?(?:g|gr|kg|ml|lb|libras?|onzas?)\s(?:a|por|en)\s\$?\s?\d": 2.5,  # "500 g a $32.000"
    # "la botella está a $25.000", "queda en 20 mil"
    r"re:\b(?:esta|queda|vale|cuesta)\s+(?:en\s+|a\s+)?(?:solo\s+)?"
    r"(?:\$\s?\d|\d{1,3}(?:[.,]\d{3})+|\d{1,3}\s?mil\b)": 2,
    r"re:\ba\s\d{1,3}\s?(?:mil|k)\b": 2, r"re:\b\d{1,3}\s?mil\s(?:pesos|la|el|cada|c/u)\b": 2,
    "=nequi": 2, "=daviplata": 2, "pedidos whatsapp": 2, "pedidos al": 1.5, "=encargo": 1, "recibiendo encargos": 2.5,
    "estoy vendiendo": 2.5, "estoy rifando": 2.5, "=rifando": 2, "=vendiendo": 2, "=entrego": 1,
    "se arrienda": 2.5, "=arrienda": 1.5,
    "=negociable": 1.5, "me escriben": 1, "me escribe": 1, "me avisan": 1, "me avisa": 1, "me confirman": 0.5,
    "me dicen cuantos": 2, "el que quiera": 1, "quien esté interesado": 1.5, "separa la tuya": 2, "=separa": 1,
    "=apartalo": 2, "ingresos extra": 2.5, "oportunidad de negocio": 2.5, "ganar dinero": 2, "gana dinero": 2,
    "te reservo": 1, "=emprendimiento": 1, "mi emprendimiento": 1.5, "sin compromiso": 1, "=cotizacion": 0.5,
    "=traje": 0.5, "se las traigo": 1.5, "se los traigo": 1.5, "=vacunados": 1,
    "=mensualidad": 1, "tarifas especiales": 1.5,
    # English, as international vendors write
    "=limited time": 2.5, "=buy now": 2.5, "=discount": 1.5, "=free shipping": 2, "=unsubscribe": 1.5,
    "=special offer": 2, "=order now": 2,
}
# A price and a sale in the same message make an offer even when neither is strong alone:
# "combo pequeño 25 mil ... hagan su pedido", "desde 35 mil ... recibo pagos por Nequi", "el bono
# vale $20.000 ... estamos vendiendo". Each group counts once, as `pair_weight`, and only together.
PRICE: dict[str, float] = {
    r"re:\$\s?\d{1,3}(?:[.,]\d{3})+": 1, r"re:\$\s?\d{4,}": 1,
    # "25 mil", "35k" — not a count ("12 mil habitantes")
    r"re:\b\d{1,3}(?:[.,]\d{3})?\s?(?:mil|k)\b(?!\s+(?:millones|habitantes|personas|servidores|usuarios|"
    r"contribuyentes|ciudadanos|votos|vistas|metros|km))": 1,
    r"re:\b(?:a|por|en|vale|cuesta|desde)\s\d{1,3}\.\d{3}\b": 1,  # "el paquete a 12.000"
    "=vale": 0.5, "=cuesta": 0.5,
}
SALE: dict[str, float] = {  # Spanish forms only ("vendor", "encargado", "arrendamiento" are not sales)
    "=vendo": 1, "=vende": 1, "=venden": 1, "=vender": 1, "=vendemos": 1, "=vendiendo": 1, "se vende": 1,
    "=venta": 1, "=ventas": 1, "=pedido": 1, "=pedidos": 1, "=encargo": 1, "=encargos": 1, "=encarguen": 1,
    "=nequi": 1, "=daviplata": 1, "=combo": 1, "=combos": 1, "=catalogo": 1, "=coleccion": 1, "=boleta": 1,
    "=boletas": 1, "=rifa": 1, "=arriendo": 1, "=arrienda": 1, "=arrendo": 1, "=interesado": 1, "=interesada": 1,
    "=domicilio": 1, "=domicilios": 1, "=entrego": 1, "recibo pagos": 1, "hagan su pedido": 1, "=separa": 1,
    "=separe": 1, "=aparta": 1, "=pidan": 1, "=compren": 1, "=compre": 1, "=negociable": 1,
    "me escribe": 1, "me escriben": 1, "se la llevo": 1, "se lo llevo": 1, "se los llevo": 1, "se las llevo": 1,
}
GROUPS = ("offer", "institutional", "price", "sale")
INSTITUTIONAL: dict[str, float] = {  # procurement, payroll, campaigns, approved inter-entity mail
    "licitación": 3, "secop": 3, "proceso de contratación": 3, "presentación de ofertas": 3,
    "evaluación de ofertas": 3, "invitación pública": 2.5, "invitación a cotizar": 2.5, "estudios previos": 2,
    "pliego de condiciones": 3, "mínima cuantía": 3, "selección abreviada": 3, "concurso de méritos": 3,
    "contratación directa": 2.5, "solicitud de cotización": 2.5, "estudio de mercado": 2.5,
    "orden de compra": 2, "adenda": 2.5, "proponente": 2.5, "oferente": 2.5, "supervisor del contrato": 2,
    "contrato interadministrativo": 2.5, "convenio interadministrativo": 2.5, "convenio": 1.5,
    "plan anual de adquisiciones": 3, "colombia compra eficiente": 3, "acuerdo marco": 2.5,
    "cuenta de cobro": 2, "descuento por nómina": 3, "oferta institucional": 2, "oferta de empleo": 2,
    "oferta laboral": 2, "oferta académica": 1.5, "convocatoria": 1, "promoción y prevención": 3,
    "promoción de la salud": 3, "oficina de comunicación social": 2, "con autorización": 1.5,
    "despacho del alcalde": 1.5, "bienestar": 1, "talento humano": 1, "propuesta económica": 2,
    "acta de liquidación": 2, "interventoría": 2, "disponibilidad presupuestal": 2.5, "registro presupuestal": 2.5,
    "=cdp": 2, "factura electrónica": 1, "=factura": 1, "=nit": 1, "orden de servicio": 2,
    "=contrato": 1, "impuesto predial": 2, "=impuesto": 1, "contribuyente": 2, "predial": 2,
    "secretaría de hacienda": 1.5, "estatuto tributario": 2, "beneficio tributario": 2, "pronto pago": 1,
}


class Config(RuleBase):
    kind: Literal["commercial"]
    action: Action = Action.MODERATE
    offer: dict[str, float] = Field(default_factory=lambda: dict(OFFER),
                                    description="signals of an offer made to the reader")
    institutional: dict[str, float] = Field(default_factory=lambda: dict(INSTITUTIONAL),
                                            description="procurement and institutional communication")
    price: dict[str, float] = Field(default_factory=lambda: dict(PRICE), description="an amount asked for")
    sale: dict[str, float] = Field(default_factory=lambda: dict(SALE), description="a sale, an order, a payment")
    pair_weight: float = Field(default=3.0, ge=0, description="offer weight of a price and a sale together")
    extra_terms: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="{offer|institutional|price|sale: {term: weight}}; weight 0 removes")
    threshold: float = Field(default=4.0, gt=0)
    margin: float = Field(default=2.0, description="offer - institutional needed")
    subject_weight: float = Field(default=2.0, ge=1)
    exempt_senders: tuple[str, ...] = ()
    exempt_roles: tuple[str, ...] = ()
    moderators: tuple[str, ...] = ()
    ROLE_FIELDS: ClassVar[tuple[str, ...]] = ("exempt_roles",)
    ADDRESS_FIELDS: ClassVar[tuple[str, ...]] = ("exempt_senders", "moderators")
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"moderators"})
    DEFAULT_REPLY: ClassVar[str] = "Contenido comercial o publicitario: requiere aprobacion previa"

    @field_validator("offer", "institutional", "price", "sale")
    @classmethod
    def _terms(cls, value: dict[str, float]) -> dict[str, float]:
        check_groups({"terms": value})
        return value

    @field_validator("extra_terms")
    @classmethod
    def _extra(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return check_extra(value, GROUPS)

    @field_validator("exempt_senders", "moderators")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(address_key(a) for a in value)

    @model_validator(mode="after")
    def _moderated(self) -> Config:
        if self.action is Action.MODERATE and not self.moderators:
            raise ValueError("action 'moderate' needs moderators: list who approves")
        return self

    @cached_property
    def lexicon(self) -> Lexicon:
        return Lexicon(merged({"offer": self.offer, "institutional": self.institutional, "price": self.price,
                               "sale": self.sale}, self.extra_terms))


JUDGEMENT = Balance("offer", "institutional", "no offer", "institutional", "commercial offer")


def judge(rule: Config, message: ParsedMessage) -> tuple[bool, Explanation]:
    """Whether the text is an offer made to the reader, and why."""
    evidence = rule.lexicon.hits_message(message, rule.subject_weight)
    price = next((e for e in evidence if e.group == "price"), None)
    sale = next((e for e in evidence if e.group == "sale"), None)
    kept = tuple(e for e in evidence if e.group not in ("price", "sale"))
    if price is not None and sale is not None and rule.pair_weight:
        where = "subject" if "subject" in (price.where, sale.where) else "body"
        kept += (Evidence("offer", "price+sale", rule.pair_weight, where, f"{price.text} … {sale.text}"[:80]),)
    return balanced(kept, JUDGEMENT, rule.threshold, rule.margin)


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if any(a in rule.exempt_senders for a in ctx.sender_addresses) or ctx.sender_roles & set(rule.exempt_roles):
        return
    hit, why = judge(rule, ctx.submission.message)
    if hit:
        finding = rule.finding(ctx, {"moderators": ", ".join(rule.moderators)}, moderators=rule.moderators,
                               detail={"score": dict(why.scores)["offer"], "terms": [e.term for e in why.evidence]})
        yield replace(finding, why=why)


def explain(rule: Config, message: ParsedMessage) -> Explanation:
    """The judgement of the text alone, fired or not (for `relay check`: why a rule did not fire)."""
    return judge(rule, message)[1]
