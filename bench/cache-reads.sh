#!/bin/bash
# One-off measurement (not the benchmark): what verifying cache reads costs. Pulls an image
# of 8 x 128 MiB incompressible layers from a loopback docker-registry with two ferry
# binaries (built before and after the change), interleaved:
#   cached-file    second pull, cache warm, default archive written to tmpfs (/dev/shm)
#   cached-stdout  second pull, cache warm, -o - to /dev/null
#   fresh          empty cache (what bench/bench.py times): must not change
# and prints medians of wall time and user CPU. Needs docker-registry, skopeo, curl,
# /usr/bin/time and ~4 GiB in /tmp and /dev/shm.
# Usage: bench/cache-reads.sh BEFORE_BIN AFTER_BIN [RUNS]
set -euo pipefail
BEFORE=$1 AFTER=$2 RUNS=${3:-5}
W=$(mktemp -d /tmp/ferry-cache-reads.XXXXXX)
SHM=$(mktemp -d /dev/shm/ferry-cache-reads.XXXXXX)
mkdir -p $W/layout/blobs/sha256
python3 - "$W/layout" <<'PY'
import hashlib, json, os, sys
lay = sys.argv[1]; bd = os.path.join(lay, "blobs", "sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(bd, d), "wb").write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
# Random bytes under a gzip media type: the default archive copies layers, never unpacks them.
layers = [put(os.urandom(128 << 20)) for _ in range(8)]
cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode())
m = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **l} for l in layers]}).encode())
open(os.path.join(lay, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **m}]}, open(os.path.join(lay, "index.json"), "w"))
PY
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/storage\nhttp:\n  addr: 127.0.0.1:%s\n' $W $PORT > $W/registry.yml
docker-registry serve $W/registry.yml > $W/registry.log 2>&1 &
REG=$!
trap 'kill $REG; rm -rf $W $SHM' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/v2/ >/dev/null && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false oci:$W/layout docker://127.0.0.1:$PORT/m/big:1
REF=127.0.0.1:$PORT/m/big:1
for which in before after; do
  BIN=$BEFORE; [ $which = after ] && BIN=$AFTER
  $BIN pull -q --cache-dir $W/cache-$which -o $SHM/first.tar $REF && rm $SHM/first.tar
done
for i in $(seq $RUNS); do
  for which in before after; do
    BIN=$BEFORE; [ $which = after ] && BIN=$AFTER
    T="/usr/bin/time -a -o $W/times -f"
    $T "$which cached-file %e %U" $BIN pull -q --cache-dir $W/cache-$which -o $SHM/out.tar $REF
    rm -f $SHM/out.tar
    $T "$which cached-stdout %e %U" sh -c "$BIN pull -q --cache-dir $W/cache-$which -o - $REF > /dev/null"
    rm -rf $SHM/fresh-cache
    $T "$which fresh %e %U" $BIN pull -q --cache-dir $SHM/fresh-cache -o $SHM/out.tar $REF
    rm -rf $SHM/out.tar $SHM/fresh-cache
  done
done
python3 - $W/times <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    who, what, wall, user = line.split()
    rows[(what, who)].append((float(wall), float(user)))
for (what, who), v in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "before")):
    print(f"{what:14} {who:6} wall {statistics.median(w for w, _ in v):5.2f} s  user CPU {statistics.median(u for _, u in v):5.2f} s  (walls {' '.join(f'{w:.2f}' for w, _ in v)})")
PY
