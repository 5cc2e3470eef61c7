"""The control-plane bus: NATS subjects, JetStream KV bucket names and the JSON codec."""
