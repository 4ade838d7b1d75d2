"""Rotation state stores: SQLite (one host, zero set-up) and PostgreSQL (several replicas)."""
