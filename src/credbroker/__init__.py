"""credbroker: scoped, expiring object-store keys for Confluence automations."""

__version__ = "0.1.0"
