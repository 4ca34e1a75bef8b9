#!/bin/sh
# The main job (`make demo`): a local cluster CA on this machine, a one-time token for node1,
# and the image booted in QEMU with that token on its kernel command line, as PXE would give
# it. The node gets its certificate, shows what runs on it and powers off; the CA's ledger
# then shows the certificate it issued. Everything stays under out/demo/.
set -eu
BIN=${BIN:-out/bin/tessera}
STATE=out/demo/ca
NODE=${NODE:-node1.demo}
PORT=${PORT:-18443}

rm -rf "$STATE" && mkdir -p out/demo
echo "[demo] cluster CA in $STATE"
"$BIN" ca init --state "$STATE" --cluster demo >/dev/null
"$BIN" ca serve --state "$STATE" --listen "127.0.0.1:$PORT" 2>out/demo/ca.log &
CA_PID=$!
trap 'kill $CA_PID 2>/dev/null || true' EXIT INT TERM
FP=$("$BIN" ca fingerprint --state "$STATE")
TOKEN=$("$BIN" ca token --state "$STATE" --node "$NODE" --subsystem certmgr)
echo "[demo] CA $FP serving on 127.0.0.1:$PORT (10.0.2.2:$PORT from the VM); token issued for $NODE"

"$BIN" vm run --boot kernel --timeout 5m \
  --append "tessera.ca=https://10.0.2.2:$PORT" --append "tessera.ca_fp=$FP" \
  --append "tessera.token=$TOKEN" --append "tessera.hostname=$NODE" --append "tessera.imds=off" \
  --script "tessera status" --script "tessera identity status" --script "tessera identity keys" \
  --script "tessera logs certmgr" --script "ps | grep -v '\\['" --script "tessera poweroff"

echo "[demo] the CA's ledger:"
"$BIN" ca list --state "$STATE"
