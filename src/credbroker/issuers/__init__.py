"""Object-store issuers: mint temporary credentials and presigned URLs."""
