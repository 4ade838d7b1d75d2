"""Rotation of the broker's own object-store keys: the use case (rotate.py), its schedule and
scheduler, and one key driver per object store (rgw.py, minio.py)."""
