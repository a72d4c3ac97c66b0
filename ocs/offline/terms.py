"""Billing terms the catalogue does not carry: tax rules by country and product class, pool
fees and overage, adaptive ladders, account country and invoice template. A YAML file
(documented in docs/offline.md); ``demo_terms.yaml`` holds the demo tenant's."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEMO_TERMS: Final = Path(__file__).with_name("demo_terms.yaml")
PRODUCT_CLASSES: Final = ("telecom", "subscription", "service", "goods")


class TermsError(Exception):
    """The terms file is invalid; the message names file, field and reason."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaxRule(_Base):
    profile: str
    country: str = "*"
    product_class: str = "*"
    rate_percent: Decimal = Decimal(0)
    treatment: Literal["standard", "reverse_charge", "exempt"] = "standard"
    note: str = ""  # exempt / reverse charge: the legal note printed on the invoice


class LadderStep(_Base):
    up_to: Annotated[int, Field(ge=0)]  # units included at this step
    fee: Annotated[int, Field(ge=0)]


class PoolTerms(_Base):
    pool: str
    kind: Literal["static", "flexible", "adaptive"] = "static"
    fee: Annotated[int, Field(ge=0)] = 0  # per period (static); per SIM (flexible)
    size: Annotated[int, Field(ge=0)] | None = None  # default: the catalogue's size
    per_sim: Annotated[int, Field(ge=0)] = 0  # flexible: units each active SIM brings
    overage_per: Annotated[int, Field(gt=0)] = 1_000_000
    overage_price: Annotated[int, Field(ge=0)] = 0  # minor units per overage_per units
    ladder: list[LadderStep] = Field(default_factory=list)


class Party(_Base):
    """What an invoice must say about a seller or buyer (EN 16931 BG-4/BG-7): legal name,
    postal address, VAT identification number; a seller also its payment account."""

    legal_name: str = ""
    street: str = ""
    postcode: str = ""
    city: str = ""
    vat_id: str = ""  # with its country prefix, e.g. DE123456789
    email: str = ""
    contact_name: str = ""  # sellers: who answers questions about the invoice (BG-6)
    phone: str = ""
    iban: str = ""  # sellers: where to pay (credit transfer)
    bic: str = ""
    payment_days: Annotated[int, Field(ge=0, le=365)] = 14  # sellers: due date after issue


PARTY_FIELDS: Final = (*Party.model_fields, "buyer_reference")


class SellerTerms(Party):
    country: str = ""  # default: the tenant's home country


class AccountTerms(Party):
    country: str = ""
    template: str = "standard"
    language: Literal["en", "de"] = "en"
    buyer_reference: str = ""  # the buyer's reference or purchase order (BT-10/BT-13)


class BillingTerms(_Base):
    tax_rules: list[TaxRule] = Field(default_factory=list)
    seller: SellerTerms = SellerTerms()  # the tenant as the seller of its invoices
    pools: list[PoolTerms] = Field(default_factory=list)
    accounts: dict[str, AccountTerms] = Field(default_factory=dict)


def load_terms(path: Path | None) -> BillingTerms:
    if path is None:
        return BillingTerms()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return BillingTerms.model_validate(raw)
    except OSError as exc:
        raise TermsError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TermsError(f"{path}: invalid YAML: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise TermsError(f"{path}: {where}: {err['msg']}") from None
