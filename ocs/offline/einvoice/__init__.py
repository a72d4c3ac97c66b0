"""EN 16931 e-invoices of issued documents: UBL 2.1, UN/CEFACT CII and Factur-X PDF/A-3."""
