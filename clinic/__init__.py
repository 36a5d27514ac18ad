"""The clinic side of thermoscreen: a patient registry kept at the site, an audit log, erasure."""
