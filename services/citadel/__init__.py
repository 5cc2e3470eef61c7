"""Citadel: the certificate authority that turns workload CSRs into SPIFFE certificates."""
