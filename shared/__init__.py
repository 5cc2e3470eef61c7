"""Isthmus shared package: config model, wire names, identity helpers used by every component."""
