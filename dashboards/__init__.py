"""Grafana dashboards as code (doctor and fleet views) and their provisioning."""
