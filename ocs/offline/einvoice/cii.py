"""EN 16931 in UN/CEFACT Cross Industry Invoice (D16B), the syntax of Factur-X / ZUGFeRD
(profile EN 16931). It always declares plain EN 16931 (``urn:cen.eu:en16931:2017``), the
guideline the ``factur-x`` library reads as the EN 16931 profile; XRechnung is the UBL's.
Element order as the CII schemas require. Credit notes (381) carry
positive amounts, like the UBL ``CreditNote``."""

from __future__ import annotations

from datetime import date
from typing import Final

from lxml import etree

from ocs.offline.einvoice.document import Document, Party, amount, decimal_text
from ocs.offline.einvoice.ubl import EN16931, SEPA_CREDIT_TRANSFER, _notes, payment_terms

RSM: Final = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM: Final = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT: Final = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT: Final = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"


def _el(
    parent: etree._Element, ns: str, name: str, text: str | None = None, **attrs: str
) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ns}}}{name}", attrs)
    if text is not None:
        el.text = text
    return el


def _ram(
    parent: etree._Element, name: str, text: str | None = None, **attrs: str
) -> etree._Element:
    return _el(parent, RAM, name, text, **attrs)


def _date(parent: etree._Element, name: str, day: date, ns: str = UDT) -> None:
    _el(_ram(parent, name), ns, "DateTimeString", day.strftime("%Y%m%d"), format="102")


def to_cii(doc: Document) -> bytes:
    root = etree.Element(
        f"{{{RSM}}}CrossIndustryInvoice", nsmap={"rsm": RSM, "ram": RAM, "udt": UDT, "qdt": QDT}
    )
    sign = doc.sign
    context = _el(root, RSM, "ExchangedDocumentContext")
    _ram(_ram(context, "GuidelineSpecifiedDocumentContextParameter"), "ID", EN16931)
    header = _el(root, RSM, "ExchangedDocument")
    _ram(header, "ID", doc.doc_id)
    _ram(header, "TypeCode", doc.type_code)
    _date(header, "IssueDateTime", doc.issue_date)
    for note in _notes(doc):
        _ram(_ram(header, "IncludedNote"), "Content", note)
    trade = _el(root, RSM, "SupplyChainTradeTransaction")
    for ln in doc.lines:
        item = _ram(trade, "IncludedSupplyChainTradeLineItem")
        _ram(_ram(item, "AssociatedDocumentLineDocument"), "LineID", str(ln.line_no))
        _ram(_ram(item, "SpecifiedTradeProduct"), "Name", ln.description)
        price = _ram(_ram(item, "SpecifiedLineTradeAgreement"), "NetPriceProductTradePrice")
        _ram(price, "ChargeAmount", decimal_text(ln.unit_price / 100))
        delivery = _ram(item, "SpecifiedLineTradeDelivery")
        _ram(delivery, "BilledQuantity", decimal_text(sign * ln.quantity), unitCode=ln.unit_code)
        settle = _ram(item, "SpecifiedLineTradeSettlement")
        tax = _ram(settle, "ApplicableTradeTax")
        _ram(tax, "TypeCode", "VAT")
        _ram(tax, "CategoryCode", ln.category)
        _ram(tax, "RateApplicablePercent", decimal_text(ln.rate))
        summation = _ram(settle, "SpecifiedTradeSettlementLineMonetarySummation")
        _ram(summation, "LineTotalAmount", amount(sign * ln.net))
        if ln.accounting_group:
            account = _ram(settle, "ReceivableSpecifiedTradeAccountingAccount")
            _ram(account, "ID", ln.accounting_group)
    agreement = _ram(trade, "ApplicableHeaderTradeAgreement")
    _ram(agreement, "BuyerReference", doc.buyer.buyer_reference or doc.buyer.account_id)
    _party(agreement, "SellerTradeParty", doc.seller)
    _party(agreement, "BuyerTradeParty", doc.buyer)
    _ram(trade, "ApplicableHeaderTradeDelivery")
    settlement = _ram(trade, "ApplicableHeaderTradeSettlement")
    _ram(settlement, "InvoiceCurrencyCode", doc.currency)
    if doc.seller.iban:
        means = _ram(settlement, "SpecifiedTradeSettlementPaymentMeans")
        _ram(means, "TypeCode", SEPA_CREDIT_TRANSFER)
        _ram(_ram(means, "PayeePartyCreditorFinancialAccount"), "IBANID", doc.seller.iban)
        if doc.seller.bic:
            _ram(_ram(means, "PayeeSpecifiedCreditorFinancialInstitution"), "BICID", doc.seller.bic)
    for part in doc.breakdown:
        tax = _ram(settlement, "ApplicableTradeTax")
        _ram(tax, "CalculatedAmount", amount(sign * part.tax))
        _ram(tax, "TypeCode", "VAT")
        if part.note:
            _ram(tax, "ExemptionReason", part.note)
        _ram(tax, "BasisAmount", amount(sign * part.basis))
        _ram(tax, "CategoryCode", part.category)
        if part.category == "AE":
            _ram(tax, "ExemptionReasonCode", "VATEX-EU-AE")
        _ram(tax, "RateApplicablePercent", decimal_text(part.rate))
    if doc.period_start and doc.period_end:
        period = _ram(settlement, "BillingSpecifiedPeriod")
        _date(period, "StartDateTime", doc.period_start)
        _date(period, "EndDateTime", doc.period_end)
    terms = _ram(settlement, "SpecifiedTradePaymentTerms")
    _ram(terms, "Description", payment_terms(doc))
    if doc.kind != "credit_note":
        _date(terms, "DueDateDateTime", doc.due_date)
    total = _ram(settlement, "SpecifiedTradeSettlementHeaderMonetarySummation")
    _ram(total, "LineTotalAmount", amount(sign * doc.net))
    _ram(total, "TaxBasisTotalAmount", amount(sign * doc.net))
    _ram(total, "TaxTotalAmount", amount(sign * doc.tax), currencyID=doc.currency)
    _ram(total, "GrandTotalAmount", amount(sign * doc.gross))
    _ram(total, "DuePayableAmount", amount(sign * doc.gross))
    if doc.refers_to is not None:
        ref = _ram(settlement, "InvoiceReferencedDocument")
        _ram(ref, "IssuerAssignedID", doc.refers_to_id or str(doc.refers_to))
        if doc.refers_to_date:
            _date(ref, "FormattedIssueDateTime", doc.refers_to_date, QDT)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _party(parent: etree._Element, name: str, party: Party) -> None:
    p = _ram(parent, name)
    _ram(p, "Name", party.name)
    if party.contact_name or party.phone:
        contact = _ram(p, "DefinedTradeContact")
        if party.contact_name:
            _ram(contact, "PersonName", party.contact_name)
        if party.phone:
            _ram(_ram(contact, "TelephoneUniversalCommunication"), "CompleteNumber", party.phone)
        if party.email:
            _ram(_ram(contact, "EmailURIUniversalCommunication"), "URIID", party.email)
    address = _ram(p, "PostalTradeAddress")
    if party.postcode:
        _ram(address, "PostcodeCode", party.postcode)
    if party.street:
        _ram(address, "LineOne", party.street)
    if party.city:
        _ram(address, "CityName", party.city)
    _ram(address, "CountryID", party.country)
    if party.email:
        _ram(_ram(p, "URIUniversalCommunication"), "URIID", party.email, schemeID="EM")
    if party.vat_id:
        _ram(_ram(p, "SpecifiedTaxRegistration"), "ID", party.vat_id, schemeID="VA")
