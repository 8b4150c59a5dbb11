#!/usr/bin/env python3
"""ferry's benchmark: ferry vs skopeo vs plain curl against the same loopback docker-registry.

Builds three fixture images (8 layers x 64 MiB, 60 small layers, one 2 GiB layer; random,
incompressible content in real tar+gzip layers), pushes them into a docker-registry started
on 127.0.0.1, then times, with a fresh cache/output every run:

  curl    all blobs of the image (manifest, config, layers), 4 in parallel, to files
  ferry   ferry pull -q --cache-dir FRESH -o OUT.tar   (the default archive)
  warm    the same pull again into a new file, every blob in the cache (each cache read is
          verified while it is copied into the archive)
  skopeo  skopeo copy docker://... oci:FRESH_DIR

then pushes the 8-layer image (ferry push against skopeo copy, from ferry's archive and
from an archive with uncompressed layers) to a fresh registry per run, and reports medians, ratios and peak memory (max RSS from /usr/bin/time) into
docs/BENCHMARKS.md. Usage: python3 bench/bench.py [--runs N] [--quick]
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
MiB = 1024 * 1024


class RandomReader(io.RawIOBase):
    """`size` bytes of pseudo-random (incompressible) data, produced as read."""

    def __init__(self, size, seed):
        self.left = size
        self.state = hashlib.sha256(seed.encode()).digest()
        self.block = os.urandom(4 * MiB)

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left, len(self.block))
        if n <= 0:
            return 0
        # rotate the random block so consecutive blocks differ without calling urandom often
        self.state = hashlib.sha256(self.state).digest()
        rot = self.state[0] * 4096 % len(self.block)
        chunk = (self.block[rot:] + self.block[:rot])[:n]
        b[:n] = chunk
        self.left -= n
        return n


class HashingGzipWriter:
    """Hashes the uncompressed tar (diff_id), gzips it (level 1) and hashes the result."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.size = 0
        self.z = zlib.compressobj(1, zlib.DEFLATED, 31)

    def write(self, data):
        self.diff.update(data)
        self._out(self.z.compress(data))
        return len(data)

    def _out(self, data):
        if data:
            self.blob.update(data)
            self.size += len(data)
            self.f.write(data)

    def close(self):
        self._out(self.z.flush())
        self.f.close()


def make_layer(blobdir, size, seed):
    tmp = os.path.join(blobdir, "tmp-layer")
    w = HashingGzipWriter(tmp)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo(f"data/{seed}.bin")
        info.size = size
        info.mtime = 0
        t.addfile(info, io.BufferedReader(RandomReader(size, seed), 1 * MiB))
    w.close()
    digest = w.blob.hexdigest()
    os.rename(tmp, os.path.join(blobdir, digest))
    return {"digest": "sha256:" + digest, "size": w.size, "diff_id": "sha256:" + w.diff.hexdigest()}


def write_blob(blobdir, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobdir, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def make_image(name, layer_sizes):
    layout = os.path.join(OUT, "layouts", name)
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    shutil.rmtree(layout, ignore_errors=True)
    blobdir = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobdir)
    print(f"  building {name}: {len(layer_sizes)} layers, {sum(layer_sizes) // MiB} MiB", flush=True)
    layers = [make_layer(blobdir, s, f"{name}-{i}") for i, s in enumerate(layer_sizes)]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
    }).encode()
    cfg = write_blob(blobdir, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l["digest"], "size": l["size"]} for l in layers],
    }).encode()
    m = write_blob(blobdir, manifest)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **m}]}, f)
    return layout


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_registry(workdir):
    port = free_port()
    cfg = os.path.join(workdir, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {workdir}/storage
http:
  addr: 127.0.0.1:{port}
""")
    log = open(os.path.join(workdir, "registry.log"), "w")
    proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=log, stderr=log)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc, f"127.0.0.1:{port}"
        except Exception:
            time.sleep(0.1)
    proc.kill()
    sys.exit("docker-registry did not start; see " + log.name)


def timed(cmd, env=None):
    """Run cmd under /usr/bin/time; return (seconds, max RSS in MiB). Dirty pages left by the
    previous run are flushed first, so no tool pays for another's writeback."""
    subprocess.run(["sync"], check=True)
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env, text=True)
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out.stderr}")
    secs, rss = out.stderr.strip().splitlines()[-1].split()
    return float(secs), int(rss) / 1024


def blob_urls(host, repo, tag):
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    m = json.load(urllib.request.urlopen(req))
    blobs = [m["config"]] + m["layers"]
    return [f"http://{host}/v2/{repo}/blobs/{b['digest']}" for b in blobs], sum(b["size"] for b in blobs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller fixtures, for trying the script")
    ap.add_argument("--push-only", action="store_true",
                    help="only the push benchmark; rewrites only the Push section of docs/BENCHMARKS.md")
    args = ap.parse_args()
    for tool in ["docker-registry", "skopeo", "curl", "/usr/bin/time"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install docker-registry skopeo curl time")
    print("building ferry (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferry"], cwd=ROOT, check=True)
    ferry = os.path.join(ROOT, "target", "release", "ferry")
    os.makedirs(OUT, exist_ok=True)
    scale = 16 if args.quick else 1
    images = {
        "eight-64mib": [64 * MiB // scale] * 8,
        "sixty-small": [(16 + i) * 1024 for i in range(60)],
        "one-2gib": [2048 * MiB // scale],
    }
    if args.push_only:
        images = {"eight-64mib": images["eight-64mib"]}
    print("fixtures", flush=True)
    layouts = {n: make_image(n + ("-quick" if args.quick else ""), s) for n, s in images.items()}
    work = tempfile.mkdtemp(prefix="ferry-bench-", dir=OUT)
    proc, host = start_registry(work)
    results = {}
    try:
        for name, layout in layouts.items():
            subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                            f"oci:{layout}", f"docker://{host}/bench/{name}:v1"], check=True)
        for name in [] if args.push_only else layouts:
            ref = f"{host}/bench/{name}:v1"
            urls, total = blob_urls(host, f"bench/{name}", "v1")
            runs = {"curl": [], "ferry": [], "warm": [], "skopeo": []}
            for i in range(args.runs):
                d = tempfile.mkdtemp(dir=work)
                curl_cmd = ["curl", "-sSf", "--parallel", "--parallel-max", "4"]
                for j, u in enumerate(urls):
                    curl_cmd += ["-o", os.path.join(d, f"b{j}"), u]
                runs["curl"].append(timed(curl_cmd))
                runs["ferry"].append(timed([ferry, "pull", "-q", "--cache-dir", os.path.join(d, "cache"),
                                            "-o", os.path.join(d, "out.tar"), ref]))
                runs["warm"].append(timed([ferry, "pull", "-q", "--cache-dir", os.path.join(d, "cache"),
                                           "-o", os.path.join(d, "warm.tar"), ref]))
                runs["skopeo"].append(timed(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                                             f"docker://{ref}", f"oci:{os.path.join(d, 'oci')}"]))
                shutil.rmtree(d)
                print(f"  {name} run {i + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in runs.items()), flush=True)
            results[name] = {
                "bytes": total,
                **{k: {"median_s": statistics.median(t for t, _ in v), "peak_mib": max(m for _, m in v)} for k, v in runs.items()},
            }
        pushes = bench_push(ferry, host, work, args)
    finally:
        proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    if args.push_only:
        write_push_section(pushes, args)
    else:
        report(results, args, pushes)


def bench_push(ferry, host, work, args):
    """Push of the 8-layer image to an empty repository of a fresh registry (each run its own,
    so neither tool finds the blobs there nor mounts them from another repository): ferry from
    its own archive against `skopeo copy oci-archive:`, and from a docker-save-style archive
    with uncompressed layers (ferry --format legacy) against `skopeo copy docker-archive:`;
    both tools gzip-compress those layers on the way."""
    ref = f"{host}/bench/eight-64mib:v1"
    src = tempfile.mkdtemp(dir=work)
    archive = os.path.join(src, "eight.tar")
    legacy = os.path.join(src, "eight-legacy.tar")
    oci_archive = os.path.join(src, "eight-oci.tar")
    cache = os.path.join(src, "cache")
    subprocess.run([ferry, "pull", "-q", "--cache-dir", cache, "-o", archive, ref], check=True)
    subprocess.run([ferry, "pull", "-q", "--cache-dir", cache, "--format", "legacy", "-o", legacy, ref], check=True)
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                    f"docker://{ref}", f"oci-archive:{oci_archive}"], check=True)
    sizes = {"archive": os.path.getsize(archive), "legacy": os.path.getsize(legacy)}
    runs = {"ferry": [], "skopeo": [], "ferry-legacy": [], "skopeo-legacy": []}
    for i in range(args.runs):
        for key, cmd in [
            ("ferry", lambda h, d: [ferry, "push", "-q", "--cache-dir", os.path.join(d, "cache"), archive, f"{h}/push/app:v1"]),
            ("skopeo", lambda h, d: ["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                                     f"oci-archive:{oci_archive}", f"docker://{h}/push/app:v1"]),
            ("ferry-legacy", lambda h, d: [ferry, "push", "-q", "--cache-dir", os.path.join(d, "cache"), legacy, f"{h}/push/app:v1"]),
            ("skopeo-legacy", lambda h, d: ["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                                            f"docker-archive:{legacy}", f"docker://{h}/push/app:v1"]),
        ]:
            d = tempfile.mkdtemp(dir=work)
            reg, h = start_registry(d)
            try:
                runs[key].append(timed(cmd(h, d)))
            finally:
                reg.kill()
                shutil.rmtree(d, ignore_errors=True)
        print(f"  push run {i + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in runs.items()), flush=True)
    return {
        "sizes": sizes,
        **{k: {"median_s": statistics.median(t for t, _ in v), "peak_mib": max(m for _, m in v)} for k, v in runs.items()},
    }


def report(results, args, pushes):
    lines = []
    for name, r in results.items():
        c, f, s = r["curl"]["median_s"], r["ferry"]["median_s"], r["skopeo"]["median_s"]
        w = r["warm"]["median_s"]
        lines.append(f"| {name} | {r['bytes'] / MiB:.0f} MiB | {c:.2f} | {f:.2f} | {w:.2f} | {s:.2f} | {f / c:.2f}x | {s / f:.2f}x | {r['ferry']['peak_mib']:.0f} MiB | {r['skopeo']['peak_mib']:.0f} MiB |")
    table = "\n".join(lines)
    print(table)
    push_table = push_rows(pushes)
    print(push_table)
    path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    body = f"""# Benchmarks

Produced by `python3 bench/bench.py{' --quick' if args.quick else ''} --runs {args.runs}` on {time.strftime('%Y-%m-%d')}
({os.cpu_count()} cores, {machine}). Every tool fetches from the same docker-registry on
127.0.0.1, into a fresh cache / output each run, after a `sync` so that no run pays for the
previous one's writeback; times are medians of {args.runs} runs (wall seconds), memory is the
highest max-RSS seen.

- curl: the image's config and layers, 4 transfers in parallel, each to a file (no verification)
- ferry: `ferry pull -q --cache-dir FRESH -o out.tar REF` (download, verify, cache, write the archive)
- warm: the same pull again into a new file: every blob comes from the cache, verified as it is copied
- skopeo: `skopeo copy docker://REF oci:DIR`

| image | size | curl s | ferry s | ferry warm s | skopeo s | ferry / curl | skopeo / ferry | ferry peak | skopeo peak |
|---|---|---|---|---|---|---|---|---|---|
{table}

Targets (issue 2): the 8-layer pull within 1.5x of curl and at least 3x faster than skopeo;
the 60-layer pull at least 2x faster than skopeo; ferry's peak memory under 50 MiB for the
2 GiB image. See the notes below the table for where a target is met or missed.

{push_section(push_table, args)}"""
    notes_marker = "<!-- notes -->"
    old = open(path).read() if os.path.exists(path) else ""
    notes = old[old.index(notes_marker):] if notes_marker in old else notes_marker + "\n"
    with open(path, "w") as f:
        f.write(body + "\n" + notes)
    print("wrote", path)


def push_rows(pushes):
    rows = []
    for label, f, k, size in [("ferry's archive", "ferry", "skopeo", pushes["sizes"]["archive"]),
                              ("uncompressed layers", "ferry-legacy", "skopeo-legacy", pushes["sizes"]["legacy"])]:
        fs, ks = pushes[f]["median_s"], pushes[k]["median_s"]
        rows.append(f"| {label} | {size / MiB:.0f} MiB | {fs:.2f} | {ks:.2f} | {ks / fs:.2f}x | {pushes[f]['peak_mib']:.0f} MiB | {pushes[k]['peak_mib']:.0f} MiB |")
    return "\n".join(rows)


def push_section(push_table, args):
    return f"""## Push

Produced by `python3 bench/bench.py --push-only --runs {args.runs}` (or a full run) on {time.strftime('%Y-%m-%d')}.

The 8 x 64 MiB image pushed to an empty repository of a fresh docker-registry on 127.0.0.1
(a new one per run, so no blob is found or mounted):

- ferry: `ferry push -q --cache-dir FRESH eight.tar REF` (ferry's archive, compressed layers sent as they are)
- skopeo: `skopeo copy oci-archive:eight-oci.tar docker://REF`
- ferry legacy: `ferry push` of a docker-save-style archive (`--format legacy`, uncompressed layers gzip-compressed on the way)
- skopeo legacy: `skopeo copy docker-archive:eight-legacy.tar docker://REF` (skopeo compresses too)

| source | archive | ferry s | skopeo s | skopeo / ferry | ferry peak | skopeo peak |
|---|---|---|---|---|---|---|
{push_table}

Targets (issue 7): ferry at least 1.5x faster than skopeo from ferry's archive; peak memory
under 50 MiB.
"""


def write_push_section(pushes, args):
    """Replace only the Push section of docs/BENCHMARKS.md (or add it before the notes)."""
    push_table = push_rows(pushes)
    print(push_table)
    path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    old = open(path).read()
    new = push_section(push_table, args)
    if "\n## Push\n" in old:
        start = old.index("\n## Push\n") + 1
        nxt = old.find("\n## ", start)
        notes = old.find("<!-- notes -->", start)
        candidates = [i for i in (nxt + 1 if nxt != -1 else -1, notes) if i != -1]
        end = min(candidates) if candidates else len(old)
        old = old[:start] + new + "\n" + old[end:]
    else:
        marker = "<!-- notes -->"
        i = old.index(marker) if marker in old else len(old)
        old = old[:i] + new + "\n" + old[i:]
    with open(path, "w") as f:
        f.write(old)
    print("wrote", path)


if __name__ == "__main__":
    main()
