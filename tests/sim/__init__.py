"""Deterministic simulation of zkv clusters (see harness.py)."""
