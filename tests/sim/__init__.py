"""Deterministic network simulation: many peers in one process on in-memory links under MockClock."""
