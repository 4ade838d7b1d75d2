"""The object store (MinIO or Ceph RGW), one folder: STS issuing and presigning (sts.py), the
signed-call key probe (probe.py), the admin APIs that create and delete keys (rgw_admin.py,
minio_admin.py), and one TLS policy for all of them (tls.py)."""
