"""Benchmark: raw STS AssumeRole against the broker's POST /v1/credentials, in one run.

    .venv/bin/python -m bench.vend_bench [--requests 2000] [--warmup 200] [--concurrency 1,32]
                                         [--rounds 3] [--reuse-rgw DIR/env]
                                         [--broker-loop asyncio|uvloop|asyncio,uvloop]
                                         [--profile-broker FILE] [--keep]

Everything is on loopback and bounded: it starts its own Ceph RGW (scripts/rgw-dev.sh through
support/rgw_server.py) on free ports, or reuses one named by an env file; seeds an embedded
sealed store, a config and a client token in a temp dir (support/seeding.py, shared with
scripts/dev_seed.py); starts the real broker as a separate process (`credbroker serve`); then,
for each concurrency and round, measures

  raw     aiobotocore STS AssumeRole (the issue's baseline): one client, keep-alive pool, the
          broker's parent key, the same role ARN, DurationSeconds and compact session policy
          the broker builds (credbroker.policy), a fresh RoleSessionName per call;
  issuer  the same call through credbroker's own StsIssuer, in this process: the broker's STS
          step with no HTTP front, so broker minus issuer is what the front and vend path add;
  broker  POST /v1/credentials {"space": "ENG", "access": "read"} with an aiohttp keep-alive
          pool, 201 expected;

with the same request count, warm-up excluded. It prints p50/p99/throughput, the ratios and the
targets, CPU per request of each process, and the broker's RSS before and after the load.
Whatever it started is stopped on exit, error, Ctrl-C or SIGTERM. See bench/README.md.

The modules:

  processes    start and stop the broker and the RGW; CPU and memory of processes (/proc)
  seeding      the bench's bucket, config, client token and the broker's key in the store
  measurement  drive a call at a concurrency, time it: Result (one round), Summary (all rounds)
  run          the three targets, the rounds, the optional profiled run
  profile      the broker under py-spy, and a summary of its stacks by part of the vend path
  report       the tables, ratios, targets and memory
  cli          the flags, and main(): everything started is stopped whatever happens
"""
