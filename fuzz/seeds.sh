#!/usr/bin/env bash
# Writes the seed corpus of every fuzz target under fuzz/corpus/<target>/ (committed; run
# again to regenerate). Seeds are well-formed inputs, so the fuzzer starts from the shapes
# the parsers accept; disk and volume seeds are made by the real mkfs tools.
set -euo pipefail
for t in mkfs.vfat genisoimage mkfs.btrfs mkfs.ext4 openssl python3; do
  command -v "$t" >/dev/null || { echo "fuzz/seeds.sh needs $t (apt-get install dosfstools genisoimage btrfs-progs e2fsprogs openssl python3)" >&2; exit 1; }
done
cd "$(dirname "$0")"
c=corpus
mkdir -p $c/{cmdline,userdata,nocloud_label,nocloud_meta,service_file,hub_frame,certmgr_socket,callout,firewall_socket,storage_socket,storage_probe,dhcp}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

printf 'console=ttyS0 quiet tessera.hostname=n1.example tessera.ca_url=https://10.0.2.2:8443 tessera.ca_fingerprint=sha256:%064d tessera.token=t0k "tessera.modules=a b"' 0 > $c/cmdline/full
printf 'tessera.certmgr_key=ecdsa-p256 tessera.certmgr_child_key=kernel-rsa tessera.log=debug' > $c/cmdline/keys

cat > $c/userdata/full.toml <<'TOML'
version = 1
[node]
hostname = "node1.example"
cluster = "prod"
[ca]
url = "https://ca.example:8443"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
token = "abc"
[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA user@host"]
[storage]
backend = "btrfs"
device = "/dev/vdb"
wipe = false
[firewall]
cluster_cidrs = ["192.168.77.0/24"]
[hub]
seeds = ["node2.example", "10.0.0.2:7442"]
[network]
interface = "eth0"
address = "192.168.77.10/24"
gateway = "192.168.77.1"
dns = ["192.168.77.1"]
[container_network]
subnet = "10.88.0.0/24"
[[containers]]
name = "web"
image = "http://10.0.2.2:8000/web.tar.zst"
sha256 = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
args = ["/bin/httpd", "-f"]
env = ["A=b"]
memory_max = "64M"
restart = "always"
ports = [{ host = 8080, container = 80, scope = "cluster" }]
identity = { subsystem = "web" }
TOML
printf 'version = 1\n[storage]\nbackend = "lvm-thin"\ndevice = "/dev/vdb"\n' > $c/userdata/lvm.toml

# NoCloud volumes as the tools make them; the probe reads the first 64 KiB at most.
mkdir -p "$tmp/seed"; printf 'version = 1\n' > "$tmp/seed/user-data"; printf 'instance-id: i-1\n' > "$tmp/seed/meta-data"
mkfs.vfat -n CIDATA -C "$tmp/vfat.img" 1440 >/dev/null
head -c 65536 "$tmp/vfat.img" > $c/nocloud_label/vfat
genisoimage -quiet -V cidata -J -r -o "$tmp/seed.iso" "$tmp/seed"
head -c 65536 "$tmp/seed.iso" > $c/nocloud_label/iso9660

printf 'instance-id: i-0123456789\nlocal-hostname: n1.example\n' > $c/nocloud_meta/meta
printf '{"instance-id": "i-1", "local-hostname": "n2"}\n' > $c/nocloud_meta/json

for f in ../image/services/*.toml; do cp "$f" $c/service_file/; done

# Hub frame bodies: u32 header length, JSON header, then u32-prefixed attachments.
frame() { python3 -c 'import struct,sys; h=sys.argv[1].encode(); a=[x.encode() for x in sys.argv[2:]]; sys.stdout.buffer.write(struct.pack(">I",len(h))+h+b"".join(struct.pack(">I",len(x))+x for x in a))' "$@"; }
frame '{"op":"hello","name":"web","type":"web"}' > $c/hub_frame/hello
frame '{"op":"call","corr":5,"target":{"group":"web"},"operation":"get","inputs":{"k":[1,2.5,"x",null]},"selector":"all","expiry_ms":500}' att > $c/hub_frame/call
frame '{"op":"register","corr":1,"groups":["web","api"]}' > $c/hub_frame/register
frame '{"op":"reply","corr":5,"result":{"ok":"x"},"remaining":0}' a b > $c/hub_frame/reply

printf '{"op":"status"}' > $c/certmgr_socket/status
printf '{"op":"child-token","subsystem":"hub","agent_id":"hub"}' > $c/certmgr_socket/child
printf '{"op":"redeem","token":"abc","pid":7}' > $c/certmgr_socket/redeem

printf 'create\x00123456\x000\x000\x000\x0042\x0042' > $c/callout/create

printf '{"op":"expose","protocol":"tcp","port":8080,"scope":"cluster","owner":"web"}' > $c/firewall_socket/expose
printf '{"op":"publish","protocol":"tcp","port":8080,"to":"10.88.0.2:80","scope":"cluster","owner":"container/web"}' > $c/firewall_socket/publish
printf '{"op":"bridge","interface":"tessera0","subnet":"10.88.0.0/24"}' > $c/firewall_socket/bridge

printf '{"op":"create","name":"data","size":1073741824}' > $c/storage_socket/create
printf '{"op":"snapshot","source":"data","name":"s1","readonly":true}' > $c/storage_socket/snapshot

# Disk heads: Btrfs (superblock at 64 KiB), ext4 (1 KiB), an LVM PV label (sector 1), GPT.
truncate -s 128M "$tmp/btrfs.img"; mkfs.btrfs -q "$tmp/btrfs.img" >/dev/null
head -c 69632 "$tmp/btrfs.img" > $c/storage_probe/btrfs
truncate -s 8M "$tmp/ext4.img"; mkfs.ext4 -q -F "$tmp/ext4.img" >/dev/null 2>&1
head -c 4096 "$tmp/ext4.img" > $c/storage_probe/ext4
python3 - "$c/storage_probe/lvm_pv" <<'PY'
import sys
b = bytearray(4096)
b[512:520] = b"LABELONE"; b[512+24:512+32] = b"LVM2 001"
open(sys.argv[1], "wb").write(b)
PY

# A DHCPOFFER: BOOTP header, magic cookie, message type 2, server id, lease, mask, router, DNS.
python3 - "$c/dhcp/offer" <<'PY'
import struct, sys
h = struct.pack(">BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, 0x12345678, 0, 0,
    bytes(4), bytes([10,0,2,15]), bytes([10,0,2,2]), bytes(4),
    bytes([0x52,0x54,0,0x12,0x34,0x56]) + bytes(10), bytes(64), bytes(128))
o = b"\x63\x82\x53\x63" + bytes([53,1,2, 54,4,10,0,2,2, 51,4,0,0,0x0e,0x10, 1,4,255,255,255,0, 3,4,10,0,2,2, 6,4,10,0,2,3, 12,3]) + b"n1x" + b"\xff"
open(sys.argv[1], "wb").write(h + o)
PY
# A P-256 CSR as the node sends it (DER and PEM), and the CA's JSON request bodies.
mkdir -p $c/{ca_csr,ca_body,http_response}
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/k.pem" \
  -subj /CN=n1.example -addext subjectAltName=DNS:n1.example -outform DER -out $c/ca_csr/p256.der 2>/dev/null
openssl req -in $c/ca_csr/p256.der -inform DER -out $c/ca_csr/p256.pem
pem=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' $c/ca_csr/p256.pem)
printf '{"token":"%s","csr_pem":%s,"node":"n1.example","subsystem":"certmgr"}' "$(printf 'a%.0s' {1..43})" "$pem" > $c/ca_body/redeem
printf '{"csr_pem":%s,"subsystem":"hub","agent_id":"hub","capabilities":["hub"],"uris":["spiffe://x/y"]}' "$pem" > $c/ca_body/issue
printf '{"node":"n1.example","subsystem":"certmgr","capabilities":["node"],"ttl_s":600}' > $c/ca_body/token

# HTTP responses as the IMDS client meets them: sized, chunked, an error, a redirect.
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nversion = 1\n' > $c/http_response/sized
printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nversi\r\n7;x=y\r\non = 1\n\r\n0\r\n\r\n' > $c/http_response/chunked
printf 'HTTP/1.0 404 Not Found\r\nConnection: close\r\n\r\nno user-data' > $c/http_response/404
printf 'HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1/x\r\nContent-Length: 0\r\n\r\n' > $c/http_response/301
echo "seeds written under $(pwd)/$c"
