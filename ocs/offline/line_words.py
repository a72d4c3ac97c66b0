"""The words of invoice lines in the buyer's language (``language`` of the account: ``en``
or ``de``). A line's description is worded once, when the line is built, and stored as
printed (``invoice_lines.description``), so an issued document never changes."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

# Fees are charged per SIM twin: the line says so in these words (a SIM with two twins on
# fee-carrying plans pays twice) and the document explains it in a note (labels "per_twin").
PER_TWIN: Final = ("per SIM twin", "je SIM-Twin")

LINE_WORDS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "fee": "{fee}, plan {plan}: {sims} (counted per SIM twin: {twins})",
        "fee_month": "Monthly fee",
        "fee_year": "Annual fee",
        "fee_week": "Weekly fee",
        "fee_day": "Daily fee",
        "fee_per": "{fee} per {what}",
        "activation_fee": "Activation fee, plan {plan}: {sims} (counted per SIM twin: {twins})",
        "pool_static": "Pool {pool}: {size} units included",
        "pool_flexible": "Flexible pool {pool}: {size} units included for {sims} SIMs",
        "pool_adaptive": "Adaptive pool {pool}: tier up to {size} units",
        "pool_overage": "Pool {pool}: usage beyond the pool",
        "usage": "{service}, zone {zone}, plan {plan}",
        "late_usage": "Late usage {period}: {text}",
        "data": "Data",
        "sms": "SMS",
        "voice": "Voice calls",
        "event": "Events",
        "note": "{kind}: {reason}",
        "credit": "Credit",
        "debit": "Debit",
        "late": "Late {period}: {text}",
        "topoff": "Top-off {item}",
        "auto_topoff": "Auto top-off {item}",
        "renewal": "Renewal {item}",
        "renewed": "{text} ({period})",
        "item_addon": "{name}",
        "item_pool": "pool {name}",
        "item_plan": "plan {name}",
    },
    "de": {
        "fee": "{fee} Tarif {plan}: {sims} (je SIM-Twin gezählt: {twins})",
        "fee_month": "Grundgebühr",
        "fee_year": "Jahresgebühr",
        "fee_week": "Wochengebühr",
        "fee_day": "Tagesgebühr",
        "fee_per": "{fee} je {what}",
        "activation_fee": "Aktivierungsgebühr Tarif {plan}: {sims} (je SIM-Twin gezählt: {twins})",
        "pool_static": "Pool {pool}: {size} Einheiten inklusive",
        "pool_flexible": "Flexibler Pool {pool}: {size} Einheiten inklusive für {sims} SIMs",
        "pool_adaptive": "Adaptiver Pool {pool}: Stufe bis {size} Einheiten",
        "pool_overage": "Pool {pool}: Nutzung über den Pool hinaus",
        "usage": "{service}, Zone {zone}, Tarif {plan}",
        "late_usage": "Nachberechnung Nutzung {period}: {text}",
        "data": "Daten",
        "sms": "SMS",
        "voice": "Sprachverbindungen",
        "event": "Ereignisse",
        "note": "{kind}: {reason}",
        "credit": "Gutschrift",
        "debit": "Nachbelastung",
        "late": "Nachberechnung {period}: {text}",
        "topoff": "Zusatzpaket {item}",
        "auto_topoff": "Automatisches Zusatzpaket {item}",
        "renewal": "Verlängerung {item}",
        "renewed": "{text} ({period})",
        "item_addon": "{name}",
        "item_pool": "Pool {name}",
        "item_plan": "Tarif {name}",
    },
}


def named(item: object, fallback: str) -> str:
    """What a line calls a catalogue item: its ``name``, or its id when it has none (or is
    not in the catalogue any more)."""
    name = getattr(item, "name", "") if item is not None else ""
    return name if isinstance(name, str) and name else fallback


def lang_of(language: str | None) -> str:
    return language if language in LINE_WORDS else "en"


def count(value: int | Decimal, language: str) -> str:
    """A whole number with the language's thousands separator: 1,001 / 1.001."""
    text = f"{int(value):,}"
    return text.replace(",", ".") if lang_of(language) == "de" else text


def sims(value: int, language: str) -> str:
    """A number of SIMs in words: 1 SIM, 1,001 SIMs."""
    return f"{count(value, language)} SIM{'' if value == 1 else 's'}"


def words(key: str, language: str, **params: str) -> str:
    return LINE_WORDS[lang_of(language)][key].format(**params)
