#!/usr/bin/env bash
# Captures real nvidia-smi output on a GPU machine as parser fixtures for the agent.
# Usage: OUT=/some/dir scripts/device/capture-nvidia-smi.sh
set -u
FINAL=${OUT:-./out}
OUT=$(mktemp -d)
mkdir -p "$FINAL"
F=index,uuid,name,driver_version,temperature.gpu,utilization.gpu,utilization.memory,memory.used,memory.total,power.draw,power.limit,clocks_throttle_reasons.active,ecc.errors.uncorrected.volatile.total,pcie.link.gen.current,pcie.link.width.current,clocks.sm,clocks.max.sm,pstate,fan.speed
F2=index,uuid,name,driver_version,temperature.gpu,utilization.gpu,utilization.memory,memory.used,memory.total,power.draw,power.limit,clocks_event_reasons.active,ecc.errors.uncorrected.volatile.total,pcie.link.gen.current,pcie.link.width.current,clocks.sm,clocks.max.sm,pstate,fan.speed,retired_pages.pending,remapped_rows.pending,remapped_rows.failure,temperature.memory
{
  echo "== which"; command -v node nvidia-smi python3; node --version 2>&1
  echo "== uname"; uname -a
} >"$OUT/env.txt" 2>&1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1; echo "rc=$?" >>"$OUT/nvidia-smi.txt"
nvidia-smi --query-gpu=$F --format=csv,noheader,nounits >"$OUT/query-throttle.csv" 2>&1; echo "rc=$?" >>"$OUT/rc.txt"
nvidia-smi --query-gpu=$F2 --format=csv,noheader,nounits >"$OUT/query-event.csv" 2>&1; echo "rc=$?" >>"$OUT/rc.txt"
nvidia-smi --query-gpu=$F2 --format=csv,nounits >"$OUT/query-event-header.csv" 2>&1; echo "rc=$?" >>"$OUT/rc.txt"
nvidia-smi --query-gpu=index,bogus.field --format=csv,noheader,nounits >"$OUT/query-bogus.txt" 2>&1; echo "bogus rc=$?" >>"$OUT/rc.txt"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits >"$OUT/compute-apps.csv" 2>&1; echo "rc=$?" >>"$OUT/rc.txt"
{ nvidia-smi --help-query-gpu; } >"$OUT/help-query-gpu.txt" 2>&1
{ dmesg 2>&1 | grep -i -E "xid|nvrm" | tail -50; echo "dmesg rc=${PIPESTATUS[0]}"; journalctl -k 2>&1 | grep -i xid | tail -5; } >"$OUT/xid.txt" 2>&1
# Put load on the GPU and sample again, so the fixture has non-idle readings.
if command -v python3 >/dev/null; then
  python3 - <<'PY' >"$OUT/load.txt" 2>&1 &
import time
try:
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = time.time()
    while time.time() - t < 12:
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
    print("load done")
except Exception as e:
    print("no load:", e)
PY
  sleep 8
  nvidia-smi --query-gpu=$F2 --format=csv,noheader,nounits >"$OUT/query-event-load.csv" 2>&1
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits >"$OUT/compute-apps-load.csv" 2>&1
  wait
fi
ls -la "$OUT"
tar -C "$OUT" -czf "$FINAL/nvidia-smi-capture.tar.gz" .
