#!/usr/bin/env python3
"""The mirror's benchmark (issue 9), next to bench.py and reusing its fixtures and helpers.

A docker-registry on 127.0.0.1 holds three images: `base` (4 x 32 MiB random layers), `app`
(the same 4 layers plus one new 16 MiB layer) and bench.py's 8 x 64 MiB image. One
`ferry serve --allow-private REGISTRY` in front of it has all three cached (pulled through it
once before the timed runs: the question is what crosses the slow link between client and
server, not the server's own upstream). A counting TCP proxy sits between client and server.

  second image    the client already has `base` (pulled through the server into its cache);
                  then `app` is pulled, each run with a fresh copy of that cache:
                    mirror   ferry pull --server PROXY -o OUT.tar REGISTRY/bench/app:v1
                    archive  curl PROXY/image?name=REGISTRY/bench/app:v1 -o OUT.tar
                             (DockerImageSave's way: the whole archive every time)
                  bytes crossing the proxy (server -> client) and wall time.
  cached pull     the 8 x 64 MiB image into an empty client cache, through the warm server
                  (ferry pull --server URL) against straight from the registry (ferry pull).
                  Target: within 1.2x.

Writes its figures into docs/BENCHMARKS.md as the `## Mirror` section (only that section is
replaced). Usage: python3 bench/mirror.py [--runs N]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench.py: fixtures, registry, timing)
import serve  # noqa: E402  (serve.py: starting and stopping ferry serve)

MiB = bench.MiB
ROOT = bench.ROOT


class CountingProxy:
    """A TCP forwarder on 127.0.0.1 that counts the bytes sent back to its clients."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.down = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while True:
                b = src.recv(256 * 1024)
                if not b:
                    break
                dst.sendall(b)
                if count:
                    with self.lock:
                        self.down += len(b)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        """Bytes counted since the last call."""
        with self.lock:
            n, self.down = self.down, 0
        return n


def make_shared_images():
    """`base` (4 x 32 MiB) and `app` (base's layers, same bytes, plus one 16 MiB layer)."""
    base = bench.make_image("mirror-base", [32 * MiB] * 4)
    app = os.path.join(bench.OUT, "layouts", "mirror-app")
    if os.path.exists(os.path.join(app, "index.json")):
        return base, app
    shutil.rmtree(app, ignore_errors=True)
    blobdir = os.path.join(app, "blobs", "sha256")
    os.makedirs(blobdir)
    print("  building mirror-app: mirror-base + one 16 MiB layer", flush=True)
    idx = json.load(open(os.path.join(base, "index.json")))
    mdigest = idx["manifests"][0]["digest"].split(":")[1]
    bdir = os.path.join(base, "blobs", "sha256")
    manifest = json.load(open(os.path.join(bdir, mdigest)))
    config = json.load(open(os.path.join(bdir, manifest["config"]["digest"].split(":")[1])))
    for layer in manifest["layers"]:
        h = layer["digest"].split(":")[1]
        shutil.copyfile(os.path.join(bdir, h), os.path.join(blobdir, h))
    new = bench.make_layer(blobdir, 16 * MiB, "mirror-app-top")
    config["rootfs"]["diff_ids"].append(new["diff_id"])
    cfg = bench.write_blob(blobdir, json.dumps(config).encode())
    manifest["config"] = {**manifest["config"], **cfg}
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                               "digest": new["digest"], "size": new["size"]})
    m = bench.write_blob(blobdir, json.dumps(manifest).encode())
    with open(os.path.join(app, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(app, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **m}]}, f)
    return base, app


def run(cmd):
    out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out.stderr}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for tool in ["docker-registry", "skopeo", "curl", "/usr/bin/time"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install docker-registry skopeo curl time")
    print("building ferry (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferry"], cwd=ROOT, check=True)
    ferry = os.path.join(ROOT, "target", "release", "ferry")
    print("fixtures", flush=True)
    base, app = make_shared_images()
    eight = bench.make_image("eight-64mib", [64 * MiB] * 8)
    os.makedirs(bench.OUT, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ferry-mirror-", dir=bench.OUT)
    reg, host = bench.start_registry(work)
    server = None
    try:
        for name, layout in [("base", base), ("app", app), ("eight", eight)]:
            run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                 f"oci:{layout}", f"docker://{host}/bench/{name}:v1"])
        refs = {n: f"{host}/bench/{n}:v1" for n in ["base", "app", "eight"]}
        server, url = serve.start_ferry(ferry, host, os.path.join(work, "server-cache"), 16)
        proxy = CountingProxy(int(url.rsplit(":", 1)[1]))
        purl = f"http://127.0.0.1:{proxy.port}"
        # Warm the server: every blob of the three images in its cache.
        warm = os.path.join(work, "warm-client")
        for r in refs.values():
            run([ferry, "pull", "-q", "--force", "--server", url, "--cache-dir", warm, "-o", os.path.join(work, "w.tar"), r])
        shutil.rmtree(warm)
        # The client's starting point: base pulled through the server.
        seeded = os.path.join(work, "seeded")
        run([ferry, "pull", "-q", "--server", url, "--cache-dir", seeded, "-o", os.path.join(work, "b.tar"), refs["base"]])
        second = {"mirror": [], "archive": []}
        cached = {"through": [], "direct": []}
        for i in range(args.runs):
            d = tempfile.mkdtemp(dir=work)
            cache = os.path.join(d, "cache")
            shutil.copytree(seeded, cache)
            proxy.take()
            t, _ = bench.timed([ferry, "pull", "-q", "--server", purl, "--cache-dir", cache,
                                "-o", os.path.join(d, "app.tar"), refs["app"]])
            second["mirror"].append((t, proxy.take()))
            t, _ = bench.timed(["curl", "-sSf", "-o", os.path.join(d, "app-archive.tar"),
                                f"{purl}/image?name={refs['app']}"])
            second["archive"].append((t, proxy.take()))
            t, _ = bench.timed([ferry, "pull", "-q", "--server", url, "--cache-dir", os.path.join(d, "c1"),
                                "-o", os.path.join(d, "e1.tar"), refs["eight"]])
            cached["through"].append(t)
            t, _ = bench.timed([ferry, "pull", "-q", "--cache-dir", os.path.join(d, "c2"),
                                "-o", os.path.join(d, "e2.tar"), refs["eight"]])
            cached["direct"].append(t)
            shutil.rmtree(d)
            print(f"  run {i + 1}: mirror {second['mirror'][-1][0]:.2f}s {second['mirror'][-1][1] / MiB:.1f} MiB, "
                  f"archive {second['archive'][-1][0]:.2f}s {second['archive'][-1][1] / MiB:.1f} MiB, "
                  f"through {cached['through'][-1]:.2f}s, direct {cached['direct'][-1]:.2f}s", flush=True)
    finally:
        if server:
            serve.stop(server)
        reg.kill()
        shutil.rmtree(work, ignore_errors=True)
    report(args, second, cached)


def report(args, second, cached):
    med = statistics.median
    mt, mb = med(t for t, _ in second["mirror"]), med(b for _, b in second["mirror"])
    at, ab = med(t for t, _ in second["archive"]), med(b for _, b in second["archive"])
    through, direct = med(cached["through"]), med(cached["direct"])
    ok = through <= 1.2 * direct
    load = os.getloadavg()
    section = f"""## Mirror

Produced by `python3 bench/mirror.py --runs {args.runs}` on {time.strftime('%Y-%m-%d')}
({os.cpu_count()} cores; load average {load[0]:.1f} when it finished). A docker-registry and one
`ferry serve --allow-private REGISTRY` on 127.0.0.1, the server's cache warm (what is
measured is the link between client and server); bytes counted by a TCP proxy between them
(server to client); times are medians of {args.runs} runs.

**A second image sharing its base.** The client holds `base` (4 x 32 MiB layers) in its cache
and pulls `app` (the same 4 layers and one new 16 MiB layer):

| way | bytes over the link | time |
|---|---|---|
| `ferry pull --server URL` (the mirror API: only missing blobs) | {mb / MiB:.1f} MiB | {mt:.2f} s |
| `curl URL/image?name=` (the whole archive, DockerImageSave's way) | {ab / MiB:.1f} MiB | {at:.2f} s |

The mirror moves {ab / max(mb, 1):.1f}x fewer bytes; on a link of 1 MiB/s that is
{mb / MiB:.0f} s against {ab / MiB:.0f} s.

**A pull through the warm mirror against one from the registry itself** (8 x 64 MiB, empty
client cache): through the mirror {through:.2f} s, direct {direct:.2f} s:
{through / direct:.2f}x (target: within 1.2x — {'met' if ok else 'missed'}).

Reproduce: `apt-get install docker-registry skopeo curl time`, then `python3 bench/mirror.py`
from the repository root (it builds ferry in release mode, keeps fixtures in bench/out/layouts
like bench.py, and removes everything else it writes).
"""
    print(section)
    path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    old = open(path).read()
    start = old.find("\n## Mirror\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + section
    else:
        rest = old[start + 1:]
        nxt = rest.find("\n## ", len("## Mirror"))
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        new = old[:start + 1] + section + ("\n" + tail if tail else "")
    with open(path, "w") as f:
        f.write(new)
    print("wrote", path)


if __name__ == "__main__":
    main()
