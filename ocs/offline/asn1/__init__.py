"""3GPP TS 32.298 CDRs in ASN.1 BER: a small tag-driven decoder (``ber``) and the PGW/SGW
record subset the importer needs (``records``)."""
