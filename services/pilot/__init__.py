"""Pilot: watches accepted config and the Consul catalog, generates each proxy's config and pushes it to NATS KV."""
