#!/usr/bin/env bash
# Mutation testing of the vend path's centre: mutmut mutates the modules named in setup.cfg
# [mutmut] (policy, vend, callers/tokens, parent_key) and runs the fast unit tests against each
# mutant. Prints the kill rate per module, then every surviving mutant (`mutmut show NAME`).
#
#   scripts/mutation.sh            a clean run (mutants/ is rebuilt), a few minutes on 2 cores
#   scripts/mutation.sh --report   only the figures of the last run
set -euo pipefail
cd "$(dirname "$0")/.."
MUTMUT=${MUTMUT:-.venv/bin/mutmut}
PYTHON=${PYTHON:-.venv/bin/python}

if [[ "${1:-}" != "--report" ]]; then
  rm -rf mutants
  timeout "${MUTATION_TIMEOUT:-1800}" "$MUTMUT" run --max-children "$(nproc)" >mutants.log 2>&1 || {
    echo "mutmut run failed (see mutants.log):" >&2
    tail -n 20 mutants.log >&2
    exit 1
  }
  mv mutants.log mutants/run.log
fi

"$MUTMUT" results --all true | "$PYTHON" -c '
import collections, re, sys

counts = collections.defaultdict(collections.Counter)
survivors = []
for line in sys.stdin:
    name, sep, status = line.strip().rpartition(": ")
    if not sep:
        continue
    module = re.sub(r"\.(x_|xǁ).*$", "", name)
    counts[module][status] += 1
    if status != "killed":
        survivors.append(f"{status:>10}  {name}")

row = "{:<28} {:>8} {:>8} {:>7}"
print(row.format("module", "mutants", "killed", "rate"))
total = collections.Counter()
for module in sorted(counts):
    c = counts[module]
    n, k = sum(c.values()), c["killed"]
    total.update(c)
    print(row.format(module, n, k, f"{100 * k / n:.1f}%"))
n, k = sum(total.values()), total["killed"]
print(row.format("all", n, k, f"{100 * k / max(n, 1):.1f}%"))
if survivors:
    print("\nnot killed:")
    print("\n".join(survivors))
'
