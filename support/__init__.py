"""Helpers shared by the tests, the benchmarks and the dev scripts (never imports tests/).

rgw_server  start, reuse and stop the throw-away Ceph RGW (scripts/rgw-dev.sh); botocore clients
seeding     seed a broker instance on that RGW: sealing key, config, the keys in the store
"""
