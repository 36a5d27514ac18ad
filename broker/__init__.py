"""Mosquitto configuration, ACL, certificate tooling and a local launcher for tests, demo and benches."""
