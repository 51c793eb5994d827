#!/usr/bin/env bash
# `promtool check metrics` (Debian package prometheus) on the live /metrics of
# the gateway cluster.py started, after a job so every family has samples.
set -euo pipefail
: "${TG_GATEWAY_URL:?run through cluster.py}"
PROMTOOL=${PROMTOOL:-$(command -v promtool || echo /usr/bin/promtool)}
PY=${PYTHON:-/usr/bin/python3}
# Some traffic first: a small job, a bad token, an unknown command.
$PY - <<'PY'
import asyncio
from gwlib import TOKEN, Client, leibniz_job
async def main():
    c = await Client.connect(TOKEN)
    jid = (await c.ok("submit", job=leibniz_job(10000)))["job_id"]
    while (await c.ok("job.status", job_id=jid))["state"] == "running":
        await asyncio.sleep(0.05)
    await c.call("nope")
    await c.call("hello", token="wrong")
asyncio.run(main())
PY
out=$(curl -sf "$TG_GATEWAY_URL/metrics" | "$PROMTOOL" check metrics 2>&1) && rc=0 || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "promtool check metrics FAILED:"
  echo "$out"
  exit 1
fi
# Lint warnings are printed but only errors fail (promtool exits non-zero on either in 2.42:
# we get here only when it exits 0).
[[ -n $out ]] && echo "$out"
echo "promtool check metrics: ok"
