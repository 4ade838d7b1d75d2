"""Secret store adapters: Vault KV v2, CyberArk CCP, and the embedded sealed file."""
