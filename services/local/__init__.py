"""Runs the mesh as local processes: finds the nats-server and consul binaries, starts and stops them."""
