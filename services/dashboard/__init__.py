"""The mesh dashboard: a small aiohttp service drawing the live service graph from the sidecars' own metrics."""
