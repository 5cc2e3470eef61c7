"""A tiny demo service: answers who it is and who called it, and can call other services through its sidecar."""
