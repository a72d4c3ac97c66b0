"""EN 16931 in OASIS UBL 2.1: an ``Invoice`` (type 380 invoice, 383 debit note) or a
``CreditNote`` (381), element order as the UBL 2.1 schemas require. Credit notes carry
positive amounts (the document type says they are a credit).

A document is declared XRechnung 3.0 (the German CIUS of EN 16931, ``XRECHNUNG``) when its
data meets what XRechnung asks beyond EN 16931 (:func:`xrechnung_gaps`); otherwise it is
declared plain EN 16931 and says nothing it does not know: no value is made up to fill a
field XRechnung requires."""

from __future__ import annotations

from typing import Any, Final

from lxml import etree

from ocs.offline.einvoice.document import Document, Party, amount, decimal_text

EN16931: Final = "urn:cen.eu:en16931:2017"
XRECHNUNG: Final = f"{EN16931}#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
NS: Final = {
    "Invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "CreditNote": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
}
CAC: Final = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC: Final = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
SEPA_CREDIT_TRANSFER: Final = "58"


def _cbc(parent: etree._Element, name: str, text: str, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{CBC}}}{name}", attrs)
    el.text = text
    return el


def _cac(parent: etree._Element, name: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{CAC}}}{name}")


def xrechnung_gaps(doc: Document) -> list[str]:
    """What ``doc`` lacks of the data XRechnung 3.0 requires beyond EN 16931 (the fatal
    BR-DE rules of KoSIT's Schematron, and the electronic addresses BT-34/BT-49 the CIUS
    makes mandatory); empty when its UBL can be declared XRechnung. The account id that
    stands in for a missing buyer reference in plain EN 16931 documents does not count: a
    buyer reference (Leitweg-ID, purchase order) is the buyer's, not ours."""
    seller, buyer = doc.seller, doc.buyer
    wanted = (
        (buyer.buyer_reference, "buyer reference (BT-10, BR-DE-15)"),
        (buyer.email, "buyer electronic address (BT-49: e-mail)"),
        (buyer.city, "buyer city (BT-52, BR-DE-8)"),
        (buyer.postcode, "buyer post code (BT-53, BR-DE-9)"),
        (seller.email, "seller electronic address and contact e-mail (BT-34, BT-43, BR-DE-7)"),
        (seller.contact_name, "seller contact point (BT-41, BR-DE-5)"),
        (seller.phone, "seller contact telephone (BT-42, BR-DE-6)"),
        (seller.city, "seller city (BT-37, BR-DE-3)"),
        (seller.postcode, "seller post code (BT-38, BR-DE-4)"),
        (seller.vat_id, "seller VAT identifier (BT-31, BR-DE-16)"),
        (seller.iban, "payment instructions: the seller's IBAN (BG-16, BR-DE-1)"),
    )
    return [what for value, what in wanted if not value.strip()]


def customization(doc: Document) -> str:
    """The specification identifier (BT-24) ``doc``'s UBL declares."""
    return EN16931 if xrechnung_gaps(doc) else XRECHNUNG


def to_ubl(doc: Document) -> bytes:
    root_name = "CreditNote" if doc.kind == "credit_note" else "Invoice"
    nsmap: Any = {None: NS[root_name], "cac": CAC, "cbc": CBC}  # None: the default namespace
    root = etree.Element(f"{{{NS[root_name]}}}{root_name}", nsmap=nsmap)
    cur = {"currencyID": doc.currency}
    sign = doc.sign
    _cbc(root, "CustomizationID", customization(doc))
    _cbc(root, "ID", doc.doc_id)
    _cbc(root, "IssueDate", doc.issue_date.isoformat())
    if root_name == "Invoice":
        _cbc(root, "DueDate", doc.due_date.isoformat())
        _cbc(root, "InvoiceTypeCode", doc.type_code)
    else:
        _cbc(root, "CreditNoteTypeCode", doc.type_code)
    for note in _notes(doc):
        _cbc(root, "Note", note)
    _cbc(root, "DocumentCurrencyCode", doc.currency)
    _cbc(root, "BuyerReference", doc.buyer.buyer_reference or doc.buyer.account_id)
    if doc.period_start and doc.period_end:
        period = _cac(root, "InvoicePeriod")
        _cbc(period, "StartDate", doc.period_start.isoformat())
        _cbc(period, "EndDate", doc.period_end.isoformat())
    if doc.refers_to is not None:
        ref = _cac(_cac(root, "BillingReference"), "InvoiceDocumentReference")
        _cbc(ref, "ID", doc.refers_to_id or str(doc.refers_to))
        if doc.refers_to_date:
            _cbc(ref, "IssueDate", doc.refers_to_date.isoformat())
    _party(_cac(root, "AccountingSupplierParty"), doc.seller)
    _party(_cac(root, "AccountingCustomerParty"), doc.buyer)
    if doc.seller.iban:
        means = _cac(root, "PaymentMeans")
        _cbc(means, "PaymentMeansCode", SEPA_CREDIT_TRANSFER)
        if root_name == "CreditNote":
            _cbc(means, "PaymentDueDate", doc.due_date.isoformat())
        _cbc(means, "PaymentID", doc.doc_id)
        account = _cac(means, "PayeeFinancialAccount")
        _cbc(account, "ID", doc.seller.iban)
        if doc.seller.bic:
            _cbc(_cac(account, "FinancialInstitutionBranch"), "ID", doc.seller.bic)
    _cbc(_cac(root, "PaymentTerms"), "Note", payment_terms(doc))
    total = _cac(root, "TaxTotal")
    _cbc(total, "TaxAmount", amount(sign * doc.tax), **cur)
    for part in doc.breakdown:
        sub = _cac(total, "TaxSubtotal")
        _cbc(sub, "TaxableAmount", amount(sign * part.basis), **cur)
        _cbc(sub, "TaxAmount", amount(sign * part.tax), **cur)
        cat = _cac(sub, "TaxCategory")
        _cbc(cat, "ID", part.category)
        _cbc(cat, "Percent", decimal_text(part.rate))
        if part.category == "AE":
            _cbc(cat, "TaxExemptionReasonCode", "VATEX-EU-AE")
        if part.note:
            _cbc(cat, "TaxExemptionReason", part.note)
        _cbc(_cac(cat, "TaxScheme"), "ID", "VAT")
    money = _cac(root, "LegalMonetaryTotal")
    _cbc(money, "LineExtensionAmount", amount(sign * doc.net), **cur)
    _cbc(money, "TaxExclusiveAmount", amount(sign * doc.net), **cur)
    _cbc(money, "TaxInclusiveAmount", amount(sign * doc.gross), **cur)
    _cbc(money, "PayableAmount", amount(sign * doc.gross), **cur)
    line_name, qty_name = (
        ("CreditNoteLine", "CreditedQuantity")
        if root_name == "CreditNote"
        else ("InvoiceLine", "InvoicedQuantity")
    )
    for ln in doc.lines:
        line = _cac(root, line_name)
        _cbc(line, "ID", str(ln.line_no))
        _cbc(line, qty_name, decimal_text(sign * ln.quantity), unitCode=ln.unit_code)
        _cbc(line, "LineExtensionAmount", amount(sign * ln.net), **cur)
        if ln.accounting_group:
            _cbc(line, "AccountingCost", ln.accounting_group)
        item = _cac(line, "Item")
        _cbc(item, "Name", ln.description)
        tax = _cac(item, "ClassifiedTaxCategory")
        _cbc(tax, "ID", ln.category)
        _cbc(tax, "Percent", decimal_text(ln.rate))
        _cbc(_cac(tax, "TaxScheme"), "ID", "VAT")
        price = _cac(line, "Price")
        _cbc(price, "PriceAmount", decimal_text(ln.unit_price / 100), **cur)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _notes(doc: Document) -> list[str]:
    out = []
    if doc.refers_to is not None:
        kind = "Credit note" if doc.kind == "credit_note" else "Debit note"
        out.append(f"{kind} for invoice {doc.refers_to_id or doc.refers_to}: {doc.reason}")
    return out + doc.notes


def payment_terms(doc: Document) -> str:
    if doc.kind == "credit_note":
        return "The credited amount is refunded or set off against the next invoice."
    iban = f" to IBAN {doc.seller.iban}" if doc.seller.iban else ""
    return (
        f"Payable within {doc.seller.payment_days} days, by {doc.due_date.isoformat()},"
        f" by credit transfer{iban}, reference {doc.doc_id}."
    )


def _party(parent: etree._Element, party: Party) -> None:
    p = _cac(parent, "Party")
    if party.email:
        _cbc(p, "EndpointID", party.email, schemeID="EM")
    _cbc(_cac(p, "PartyName"), "Name", party.name)
    address = _cac(p, "PostalAddress")
    if party.street:
        _cbc(address, "StreetName", party.street)
    if party.city:
        _cbc(address, "CityName", party.city)
    if party.postcode:
        _cbc(address, "PostalZone", party.postcode)
    _cbc(_cac(address, "Country"), "IdentificationCode", party.country)
    if party.vat_id:
        scheme = _cac(p, "PartyTaxScheme")
        _cbc(scheme, "CompanyID", party.vat_id)
        _cbc(_cac(scheme, "TaxScheme"), "ID", "VAT")
    _cbc(_cac(p, "PartyLegalEntity"), "RegistrationName", party.name)
    if party.contact_name or party.phone or party.email:
        contact = _cac(p, "Contact")
        if party.contact_name:
            _cbc(contact, "Name", party.contact_name)
        if party.phone:
            _cbc(contact, "Telephone", party.phone)
        if party.email:
            _cbc(contact, "ElectronicMail", party.email)
