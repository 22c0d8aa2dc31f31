"""Scanners: bounded, read-only walks over the host that probes and commands share."""
