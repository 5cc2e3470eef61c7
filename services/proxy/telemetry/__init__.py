"""Sidecar telemetry around both listeners: Istio-standard metrics, access logs, trace spans; it fails open."""
