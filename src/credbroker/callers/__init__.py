"""Caller authentication adapters: who is asking for a key."""
