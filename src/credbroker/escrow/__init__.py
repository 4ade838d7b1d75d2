"""The break-glass escrow of the broker's service key (escrow/file.py)."""
