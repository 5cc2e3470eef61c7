"""Isthmus components: galley, pilot, citadel, proxy, the CLI and the local launcher."""
