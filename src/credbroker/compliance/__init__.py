"""The daily compliance check and the access report: use cases over ports."""
