"""What one account owes for one bill period: pure functions from loaded rows to draft
invoices (no I/O). ``billrun`` loads the rows and issues the drafts.

Money is integer minor units. Pro rata and taxes are exact fractions rounded half up once
per line. A subscription's state changes (``subscription_events``: active, suspended,
terminated, moved to another account) split the period: a recurring fee is charged for the
seconds the SIM was active on this account, ``fee x active / period``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Final

from ocs.offline.line_words import count, words
from ocs.offline.line_words import sims as sim_count
from ocs.rating import subscription_fees
from ocs.rating.catalogue import Catalogue
from ocs.rating.errors import RatingError

FEE_PERIOD_FACTOR: Final = {"month": Fraction(1), "year": Fraction(1, 12)}
TENANT_ISSUER_PREFIX: Final = "tenant:"


def round_half_up(value: Fraction | Decimal | int) -> int:
    """Round to an integer, halves away from zero (exact for fractions)."""
    frac = Fraction(value)
    sign = -1 if frac < 0 else 1
    num, den = abs(frac.numerator), frac.denominator
    return sign * ((2 * num + den) // (2 * den))


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    name: str
    parent_id: str | None
    kind: str
    payment: str
    currency: str
    tax_profile: str | None
    country: str
    accounting_group: str
    template: str
    language: str = "en"  # the words of the documents: en | de


@dataclass(frozen=True, slots=True)
class SubRow:
    sub_id: int
    imsi: str
    twin: str
    account_id: str
    activated_at: datetime
    events: tuple[tuple[datetime, str, str], ...]  # (from, status, account), sorted


@dataclass(frozen=True, slots=True)
class TaxRule:
    rate_percent: Decimal
    treatment: str
    note: str = ""  # the legal note (exemption reason, reverse charge), printed per category


@dataclass(slots=True)
class Line:
    issuer: str
    currency: str
    kind: str  # recurring | one_time | usage | pool | overage | topoff | renewal
    description: str
    product_class: str
    quantity: Decimal
    unit: str
    net: int
    accounting_group: str = ""
    tax_rate: Decimal = Decimal(0)
    tax_treatment: str = "standard"
    tax: int = 0
    unit_price: int | None = None  # minor units per unit, when the line has one price
    tax_note: str = ""


@dataclass(slots=True)
class DraftInvoice:
    account_id: str
    issuer: str
    currency: str
    level: str
    template: str
    lines: list[Line] = field(default_factory=list)

    @property
    def net(self) -> int:
        return sum(line.net for line in self.lines)

    @property
    def tax(self) -> int:
        return sum(line.tax for line in self.lines)

    @property
    def gross(self) -> int:
        return self.net + self.tax

    @property
    def notes(self) -> list[str]:
        treatments = {line.tax_treatment for line in self.lines}
        out = []
        if "reverse_charge" in treatments:
            out.append("Reverse charge: VAT to be accounted for by the recipient.")
        if "exempt" in treatments:
            out.append("Exempt from VAT.")
        return out


def issuer_of(seller: str | None, tenant: str) -> str:
    """Invoices are issued by the seller account, or by the tenant itself."""
    return seller if seller else TENANT_ISSUER_PREFIX + tenant


def active_seconds(sub: SubRow, account_id: str, period: Period) -> int:
    """Seconds of ``period`` the SIM was active and owned by ``account_id``."""
    total = 0
    events = sub.events
    for i, (at, status, owner) in enumerate(events):
        until = events[i + 1][0] if i + 1 < len(events) else period.end
        lo, hi = max(at, period.start), min(until, period.end)
        if status == "active" and owner == account_id and hi > lo:
            total += int((hi - lo).total_seconds())
    return total


def pro_rata(amount: int, part: int, whole: int) -> int:
    return round_half_up(Fraction(amount * part, whole)) if whole else 0


def _counted(catalogue: Catalogue, plan_id: str, fee_id: str) -> str:
    """What a property fee counts (its ``count_property``, e.g. sensors); "" for others."""
    plan = catalogue.plans.get(plan_id)
    for version in plan.versions if plan is not None else ():
        for fee in version.spec.property_fees:
            if fee.id == fee_id:
                return fee.count_property
    return ""


def fee_lines(
    catalogue: Catalogue, account: AccountRow, subs: Iterable[SubRow], period: Period
) -> list[Line]:
    """Recurring fees (pro rata) and activation fees of the account's subscriptions."""
    tenant = catalogue.tenant.id
    issuer = issuer_of(account.parent_id, tenant)
    grouped: dict[tuple[str, str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    one_time: dict[tuple[str, str, str, int], int] = defaultdict(int)
    # the SIMs (IMSIs) and SIM twins behind each line, for its words
    sims: dict[tuple[str, str, str, int], set[str]] = defaultdict(set)
    twins: dict[tuple[str, str, str, int], set[tuple[str, str]]] = defaultdict(set)
    once_sims: dict[tuple[str, str, str, int], set[str]] = defaultdict(set)
    fee_kind: dict[tuple[str, str, str, int], tuple[str, str]] = {}  # (period, per what)
    for sub in subs:
        active = active_seconds(sub, account.account_id, period)
        if active <= 0:
            continue
        at = max(period.start, sub.activated_at)
        try:
            plan_id, currency, fees = subscription_fees(catalogue, sub.imsi, sub.twin, at)
        except RatingError:
            continue
        for fee in fees:
            factor = FEE_PERIOD_FACTOR.get(fee.period)
            if factor is None:  # day / week fees: per day of the period
                per_day = Fraction(fee.amount, 7 if fee.period == "week" else 1)
                factor_amount = per_day * Fraction(period.seconds, 86400)
            else:
                factor_amount = fee.amount * factor
            if fee.amount == 0:
                continue
            amount = round_half_up(factor_amount * Fraction(active, period.seconds))
            key = (plan_id, currency, fee.fee_id, fee.amount)
            grouped[key][0] += 1 if active == period.seconds else 0
            grouped[key][1] += amount
            fee_kind[key] = (fee.period, _counted(catalogue, plan_id, fee.fee_id))
            sims[key].add(sub.imsi)
            twins[key].add((sub.imsi, sub.twin))
        plan = catalogue.plans.get(plan_id)
        version = None if plan is None else plan.version_at(sub.activated_at)
        if version is not None and period.contains(sub.activated_at):
            for otf in version.spec.one_time_fees:
                if otf.charged_on == "activation" and otf.amount:
                    one_time[(plan_id, currency, otf.id, otf.amount)] += 1
                    once_sims[(plan_id, currency, otf.id, otf.amount)].add(sub.imsi)
    lang = account.language

    def plan_name(plan_id: str) -> str:
        plan = catalogue.plans.get(plan_id)
        return (plan.name or plan_id) if plan is not None else plan_id

    out = []
    for key, (_full, net) in sorted(grouped.items()):
        plan_id, currency, _fee_id, unit_amount = key
        every, what = fee_kind[key]
        fee_words = words(f"fee_{every}", lang)
        if what:
            fee_words = words("fee_per", lang, fee=fee_words, what=what)
        text = words(
            "fee",
            lang,
            fee=fee_words,
            plan=plan_name(plan_id),
            sims=sim_count(len(sims[key]), lang),
            twins=count(len(twins[key]), lang),
        )
        out.append(
            Line(
                issuer,
                currency,
                "recurring",
                text,
                "subscription",
                Decimal(net) / Decimal(unit_amount),
                "period",
                net,
                unit_price=unit_amount,
            )
        )
    for key, twins_n in sorted(one_time.items()):
        plan_id, currency, _fee_id, unit_amount = key
        text = words(
            "activation_fee",
            lang,
            plan=plan_name(plan_id),
            sims=sim_count(len(once_sims[key]), lang),
            twins=count(twins_n, lang),
        )
        out.append(
            Line(
                issuer,
                currency,
                "one_time",
                text,
                "service",
                Decimal(twins_n),
                "each",
                twins_n * unit_amount,
                unit_price=unit_amount,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class PoolRow:
    pool_id: str
    kind: str
    currency: str
    fee: int
    size: int
    per_sim: int
    overage_per: int
    overage_price: int
    ladder: tuple[tuple[int, int], ...]  # (up_to, fee), ascending
    name: str = ""  # the catalogue's name of the pool for people; "" when it gives none

    @property
    def shown(self) -> str:
        """What the invoice calls the pool: its name, else its id."""
        return self.name or self.pool_id


def pool_lines(
    pool: PoolRow,
    issuer: str,
    used: int,
    member_fraction: Fraction,
    reached: int = 0,
    lang: str = "en",
) -> list[Line]:
    """Pool fee and overage. static: ``fee`` for ``size``; flexible: ``fee`` and ``per_sim``
    units per active SIM (pro rata: ``member_fraction`` = sum of active fractions);
    adaptive: the fee of the first ladder step that holds the usage and the tier size the
    pool reached in real time (``reached``, docs/lifecycle.md), overage beyond the last
    step. Overage is priced per started ``overage_per`` units."""
    out: list[Line] = []
    if pool.kind == "flexible":
        size = round_half_up(pool.per_sim * member_fraction)
        fee = round_half_up(pool.fee * member_fraction)
        sims = f"{float(member_fraction):,.2f}"
        if lang == "de":
            sims = sims.replace(",", "_").replace(".", ",").replace("_", ".")
        desc = words("pool_flexible", lang, pool=pool.shown, size=count(size, lang), sims=sims)
    elif pool.kind == "adaptive" and pool.ladder:
        need = max(used, reached)
        step = next((s for s in pool.ladder if need <= s[0]), pool.ladder[-1])
        size, fee = step
        desc = words("pool_adaptive", lang, pool=pool.shown, size=count(size, lang))
    else:
        size, fee = pool.size, pool.fee
        desc = words("pool_static", lang, pool=pool.shown, size=count(size, lang))
    if fee:
        out.append(
            Line(
                issuer,
                pool.currency,
                "pool",
                desc,
                "telecom",
                Decimal(1),
                "period",
                fee,
                unit_price=fee,
            )
        )
    over = max(0, used - size)
    if over and pool.overage_price:
        blocks = -(-over // pool.overage_per)
        out.append(
            Line(
                issuer,
                pool.currency,
                "overage",
                words("pool_overage", lang, pool=pool.shown),
                "telecom",
                Decimal(over),
                "units",
                blocks * pool.overage_price,
            )
        )
    return out


def lookup_tax(
    rules: dict[tuple[str, str, str], TaxRule], profile: str | None, country: str, cls: str
) -> TaxRule:
    if profile is None:
        return TaxRule(Decimal(0), "standard")
    for key in (
        (profile, country, cls),
        (profile, country, "*"),
        (profile, "*", cls),
        (profile, "*", "*"),
    ):
        rule = rules.get(key)
        if rule is not None:
            return rule
    return TaxRule(Decimal(0), "standard")


def apply_tax(
    lines: Sequence[Line], rules: dict[tuple[str, str, str], TaxRule], account: AccountRow
) -> None:
    for line in lines:
        rule = lookup_tax(rules, account.tax_profile, account.country, line.product_class)
        line.tax_treatment = rule.treatment
        line.tax_note = rule.note
        line.tax_rate = rule.rate_percent if rule.treatment == "standard" else Decimal(0)
        line.tax = round_half_up(Decimal(line.net) * line.tax_rate / 100)
        line.accounting_group = account.accounting_group


def assemble(account: AccountRow, lines: Iterable[Line]) -> list[DraftInvoice]:
    """One draft per (issuer, currency); wholesale when the buyer is a reseller."""
    level = "wholesale" if account.kind == "reseller" else "retail"
    drafts: dict[tuple[str, str], DraftInvoice] = {}
    for line in lines:
        key = (line.issuer, line.currency)
        if key not in drafts:
            drafts[key] = DraftInvoice(
                account.account_id, line.issuer, line.currency, level, account.template
            )
        drafts[key].lines.append(line)
    order = {
        "recurring": 0,
        "one_time": 1,
        "pool": 2,
        "overage": 3,
        "usage": 4,
        "topoff": 5,
        "renewal": 6,
    }
    for draft in drafts.values():
        draft.lines.sort(key=lambda x: (order.get(x.kind, 9), x.description))
    return [drafts[k] for k in sorted(drafts)]
