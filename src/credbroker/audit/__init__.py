"""Audit sinks: one record per decision, never a secret."""
