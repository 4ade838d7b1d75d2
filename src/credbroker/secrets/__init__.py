"""Secret store adapters: Vault KV v2 and the embedded sealed file, and the resilient wrapper
(deadline, retries, circuit breaker) around either."""
