#!/usr/bin/env python3
"""`ferry serve`'s benchmark (issue 8), next to bench.py and reusing its fixtures and helpers.

Against a docker-registry on 127.0.0.1 holding bench.py's 8 x 64 MiB image (random,
incompressible layers):

  first/last byte  `GET /image?name=REF` from `ferry serve --allow-private REGISTRY
                   --cache-dir FRESH` (a new server and an empty cache every run): curl's
                   time to first byte and to last byte, against a complete
                   `ferry pull -q --cache-dir FRESH -o OUT.tar REF` of the same image.
  fan-out          1, 10 and 100 concurrent curls (separate processes, output to /dev/null)
                   of the image once it is cached: aggregate throughput and the server's peak
                   RSS (VmHWM of a server started for that round on the warm cache); the
                   same curls against nginx (or python's ThreadingHTTPServer when nginx is
                   missing) serving the finished archive file, DockerImageSave's way.

Writes its figures into docs/BENCHMARKS.md as the `## Serve` section (only that section is
replaced; it sits below bench.py's `<!-- notes -->` marker, which bench.py keeps).
Usage: python3 bench/serve.py [--runs N] [--clients 1,10,100] [--quick]
"""

import argparse
import hashlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench.py: fixtures, registry, timing)

MiB = bench.MiB
ROOT = bench.ROOT


def start_ferry(ferry, registry, cache, clients):
    """`ferry serve` on a free port; returns (process, base URL) once it listens. Its log
    (stderr, where it names its address) goes to a file beside the cache."""
    cmd = [ferry, "serve", "--listen", "127.0.0.1:0", "--cache-dir", cache,
           "--allow-private", registry, "--max-downloads-per-client", str(max(clients, 16))]
    log_path = cache.rstrip("/") + ".log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        m = re.search(r"listening on (\S+?);", open(log_path).read())
        if m:
            return proc, f"http://{m.group(1)}"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"ferry serve did not start; see {log_path}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def hwm_kib(pid):
    """Peak resident set (VmHWM) of a live process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def curl_times(url):
    """(time to first byte, time to last byte, bytes) of one GET to /dev/null."""
    out = subprocess.run(["curl", "-sSf", "-o", "/dev/null", "-w",
                          "%{time_starttransfer} %{time_total} %{size_download}", url],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"curl {url} failed: {out.stderr}")
    first, last, size = out.stdout.split()
    return float(first), float(last), int(size)


def sha256_of_url(url):
    h = hashlib.sha256()
    n = 0
    with urllib.request.urlopen(url) as r:
        while True:
            b = r.read(MiB)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def sha256_of_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(MiB):
            h.update(b)
    return h.hexdigest()


def fan_out(url, n):
    """n curl processes at once; wall seconds from the first start to the last exit."""
    start = time.monotonic()
    procs = [subprocess.Popen(["curl", "-sSf", "-o", "/dev/null", url], stderr=subprocess.PIPE)
             for _ in range(n)]
    failed = [p.stderr.read().decode() for p in procs if p.wait() != 0]
    secs = time.monotonic() - start
    if failed:
        sys.exit(f"{len(failed)} of {n} curls of {url} failed: {failed[0]}")
    return secs


def start_nginx(workdir, root_dir):
    port = bench.free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
user root;
worker_processes auto;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/x-tar;
  client_body_temp_path {workdir}/nginx-tmp;
  server {{ listen 127.0.0.1:{port}; root {root_dir}; }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/", proc, ok_codes=(200, 403, 404))
    return proc, port


def start_python_server(root_dir):
    port = bench.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", root_dir, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/", proc, ok_codes=(200,))
    return proc, port


def wait_http(url, proc, ok_codes):
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError as e:
            if e.code in ok_codes:
                return
        except Exception:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"{url} did not answer")


def tree_hwm_kib(pid):
    """VmHWM summed over a process and its children (nginx's master and workers)."""
    total = hwm_kib(pid)
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        kids = []
    return total + sum(hwm_kib(int(k)) for k in kids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", default="1,10,100")
    ap.add_argument("--quick", action="store_true", help="smaller fixture, for trying the script")
    ap.add_argument("--no-build", action="store_true", help="use target/release/ferry as it is")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    for tool in ["docker-registry", "skopeo", "curl", "/usr/bin/time"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install docker-registry skopeo curl time")
    if not args.no_build:
        print("building ferry (release)", flush=True)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferry"], cwd=ROOT, check=True)
    ferry = os.path.join(ROOT, "target", "release", "ferry")
    os.makedirs(bench.OUT, exist_ok=True)
    scale = 16 if args.quick else 1
    name = "eight-64mib" + ("-quick" if args.quick else "")
    print("fixture", flush=True)
    layout = bench.make_image(name, [64 * MiB // scale] * 8)
    work = tempfile.mkdtemp(prefix="ferry-serve-bench-", dir=bench.OUT)
    reg, host = bench.start_registry(work)
    load = [os.getloadavg()]
    try:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                        f"oci:{layout}", f"docker://{host}/bench/{name}:v1"], check=True)
        ref = f"{host}/bench/{name}:v1"
        query = "/image?name=" + urllib.parse.quote(ref, safe="")

        # 1. uncached: first and last byte against a whole pull
        pulls, firsts, lasts = [], [], []
        archive = None
        for i in range(args.runs):
            d = tempfile.mkdtemp(dir=work)
            secs, _ = bench.timed([ferry, "pull", "-q", "--cache-dir", os.path.join(d, "cache"),
                                   "-o", os.path.join(d, "out.tar"), ref])
            pulls.append(secs)
            if archive is None:
                archive_dir = tempfile.mkdtemp(dir=work)
                archive = os.path.join(archive_dir, "image.tar")
                os.rename(os.path.join(d, "out.tar"), archive)
            shutil.rmtree(d)
            subprocess.run(["sync"], check=True)
            cache = tempfile.mkdtemp(dir=work)
            proc, base = start_ferry(ferry, host, cache, 16)
            try:
                first, last, size = curl_times(base + query)
            finally:
                stop(proc)
                shutil.rmtree(cache)
            firsts.append(first)
            lasts.append(last)
            print(f"  run {i + 1}: pull {secs:.2f}s, serve first byte {first * 1000:.0f} ms, "
                  f"last byte {last:.2f}s ({size / MiB:.0f} MiB)", flush=True)
        archive_size = os.path.getsize(archive)
        if size != archive_size:
            sys.exit(f"/image sent {size} bytes, ferry pull wrote {archive_size}")

        # 2. cached: fan-out against ferry serve and a plain file server
        load.append(os.getloadavg())
        cache = tempfile.mkdtemp(dir=work)
        proc, base = start_ferry(ferry, host, cache, max(clients))
        try:
            served_sha, _ = sha256_of_url(base + query)
        finally:
            stop(proc)
        same = served_sha == sha256_of_file(archive)
        print(f"  /image is byte-identical to ferry pull's archive: {same}", flush=True)
        fan = {}
        for n in clients:
            proc, base = start_ferry(ferry, host, cache, n)
            try:
                curl_times(base + query)  # tag resolution and the cache's first look, untimed
                secs = fan_out(base + query, n)
                rss = hwm_kib(proc.pid) / 1024
            finally:
                stop(proc)
            fan[("ferry", n)] = (secs, rss)
            print(f"  ferry serve, {n} clients: {secs:.2f}s, {n * archive_size / MiB / secs:.0f} MiB/s, "
                  f"peak RSS {rss:.1f} MiB", flush=True)
        reference = "nginx" if shutil.which("nginx") else "python3 -m http.server (ThreadingHTTPServer)"
        for n in clients:
            if shutil.which("nginx"):
                fproc, port = start_nginx(work, archive_dir)
            else:
                fproc, port = start_python_server(archive_dir)
            url = f"http://127.0.0.1:{port}/image.tar"
            try:
                curl_times(url)
                secs = fan_out(url, n)
                rss = tree_hwm_kib(fproc.pid) / 1024
            finally:
                stop(fproc)
            fan[("file", n)] = (secs, rss)
            print(f"  {reference}, {n} clients: {secs:.2f}s, {n * archive_size / MiB / secs:.0f} MiB/s, "
                  f"peak RSS {rss:.1f} MiB", flush=True)
        load.append(os.getloadavg())
    finally:
        reg.kill()
        shutil.rmtree(work, ignore_errors=True)
    report(args, clients, archive_size, pulls, firsts, lasts, fan, reference, same, load)


def report(args, clients, size, pulls, firsts, lasts, fan, reference, same, load):
    pull, first, last = statistics.median(pulls), statistics.median(firsts), statistics.median(lasts)
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    cmd = "python3 bench/serve.py" + (" --quick" if args.quick else "") + f" --runs {args.runs}"
    if args.clients != "1,10,100":
        cmd += f" --clients {args.clients}"
    rows = []
    for n in clients:
        fs, fr = fan[("ferry", n)]
        ps, pr = fan[("file", n)]
        rows.append(f"| {n} | {fs:.2f} | {n * size / MiB / fs:.0f} MiB/s | {fr:.1f} MiB | "
                    f"{ps:.2f} | {n * size / MiB / ps:.0f} MiB/s | {pr:.1f} MiB |")
    rss = [fan[("ferry", n)][1] for n in clients]
    first_ok = first < 0.1 * pull
    last_ok = last <= 1.2 * pull
    rss_ok = max(rss) < 100
    # flat: 100 clients cost less than 1 MiB each over one client and stay under the target
    flat_ok = rss_ok and (rss[-1] - rss[0]) < (clients[-1] - clients[0]) * 1.0
    loads = ", ".join(f"{a:.2f}" for a, _, _ in load)

    def verdict(ok):
        return "met" if ok else "**missed**"

    section = f"""## Serve

Produced by `{cmd}` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, {machine}; 1-minute
load average at the start, between the parts and at the end: {loads}). bench.py's 8 x 64 MiB
image ({size / MiB:.0f} MiB as ferry's archive) is pushed into a docker-registry on 127.0.0.1;
`ferry serve` runs as `ferry serve --listen 127.0.0.1:0 --cache-dir DIR --allow-private
REGISTRY --max-downloads-per-client N` (N = the number of clients, at least the default 16:
every curl comes from 127.0.0.1, which the per-client limit would otherwise cut to 16).

**Uncached image, first and last byte.** Each of {args.runs} runs (medians below): a
`ferry pull -q --cache-dir FRESH -o OUT.tar REF` after a `sync`, then a new server on an empty
cache and one `curl -o /dev/null 'BASE/image?name=REF'` (curl's `time_starttransfer` and
`time_total`).

| | ferry pull s | /image first byte | /image last byte | first / pull | last / pull |
|---|---|---|---|---|---|
| median | {pull:.2f} | {first * 1000:.0f} ms | {last:.2f} s | {first / pull * 100:.1f} % | {last / pull:.2f}x |

Runs: pull {', '.join(f'{p:.2f}' for p in pulls)} s; first byte {', '.join(f'{f * 1000:.0f}' for f in firsts)} ms;
last byte {', '.join(f'{x:.2f}' for x in lasts)} s. The archive `/image` sends is
byte-identical to `ferry pull`'s: {'yes' if same else '**no**'} (SHA-256 of both compared).

**Cached image, many clients.** After one download has filled the cache, for each client count
a server is started on that cache (so VmHWM from `/proc/PID/status` is that round's peak),
one untimed request resolves the tag, then N `curl -sSf -o /dev/null` processes start at once;
time is from the first start to the last exit, throughput is N x {size / MiB:.0f} MiB over it. The
reference is {reference} serving the finished archive file, as DockerImageSave does after its
pull-and-save (peak RSS summed over its processes{', master and workers; sendfile on' if reference == 'nginx' else ''}).
The clients share the 2 cores with the server.

| clients | ferry serve s | ferry throughput | ferry peak RSS | {reference.split()[0]} s | {reference.split()[0]} throughput | {reference.split()[0]} peak RSS |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

| target (issue 8) | result | |
|---|---|---|
| first byte of an uncached image under 10 % of the pull | {first / pull * 100:.1f} % | {verdict(first_ok)} |
| last byte within 1.2x of the pull | {last / pull:.2f}x | {verdict(last_ok)} |
| peak RSS under 100 MiB with 100 clients | {max(rss):.1f} MiB | {verdict(rss_ok)} |
| peak RSS flat in the number of clients (under 1 MiB per added client) | {' / '.join(f'{r:.1f}' for r in rss)} MiB for {' / '.join(str(n) for n in clients)} clients | {verdict(flat_ok)} |

Reproduce: `apt-get install docker-registry skopeo curl time nginx-light`, then
`{cmd}` from the repository root (it builds ferry in release mode, keeps the fixture in
bench/out/layouts like bench.py, and removes everything else it writes).
"""
    print(section)
    path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    old = open(path).read() if os.path.exists(path) else "<!-- notes -->\n"
    start = old.find("\n## Serve\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + section
    else:
        rest = old[start + 1:]
        nxt = rest.find("\n## ", len("## Serve"))
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        new = old[:start + 1] + section + ("\n" + tail if tail else "")
    with open(path, "w") as f:
        f.write(new)
    print("wrote", path)


if __name__ == "__main__":
    main()
