"""Galley: validates Istio-style config and stores accepted resources in the config KV bucket."""
