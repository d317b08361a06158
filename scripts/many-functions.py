#!/usr/bin/env python3
"""Size and cost of what lists every function, on a memory-store server
knowing N functions: a /metrics scrape, GET /v1/functions, and the
dashboard stream's overview event.

Usage: many-functions.py N OLD_BINARY NEW_BINARY

Each build is started on random loopback ports and given N functions with
"create function" over the admin protocol; then each of the three is read
three times (the stream up to the end of its first overview event), with
the bytes, lines, wall time and the server's CPU time of each. The new
build runs a second time with --metrics-max-functions 0 (no limit).
"""
import os, random, socket, subprocess, sys, time, urllib.request

ENDPOINTS = [("/metrics", "/metrics", False), ("GET /v1/functions", "/v1/functions", False),
             ("overview event", "/v1/stream", True)]


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def fetch(url, stream):
    r = urllib.request.urlopen(url, timeout=120)
    if not stream:
        return r.read()
    while True:
        line = r.readline()
        if line.startswith(b"data: "):
            r.close()
            return line


def run(binary, n, extra):
    gp = random.randint(30000, 50000)
    hp = gp + 1
    p = subprocess.Popen([binary, "serve", "--store", "memory:", "--listen", f"127.0.0.1:{gp}",
                          "--http", f"127.0.0.1:{hp}"] + extra,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                s = socket.create_connection(("127.0.0.1", gp))
                break
            except OSError:
                time.sleep(0.1)
        f = s.makefile("rb")
        batch = 1000
        for i in range(0, n, batch):
            names = range(i, min(n, i + batch))
            s.sendall("".join(f"create function fn{j}\n" for j in names).encode())
            for _ in names:
                line = f.readline()
                assert line in (b"OK\n", b"OK\r\n"), line
        s.close()
        res = []
        for what, path, stream in ENDPOINTS:
            for _ in range(3):
                c0, t0 = cpu(p.pid), time.time()
                body = fetch(f"http://127.0.0.1:{hp}{path}", stream)
                res.append((what, len(body), body.count(b"\n"), time.time() - t0, cpu(p.pid) - c0))
        return res
    finally:
        p.terminate()
        p.wait()


n = int(sys.argv[1])
old, new = sys.argv[2], sys.argv[3]
for name, binary, extra in [("old", old, []), ("new", new, []),
                            ("new --metrics-max-functions 0", new, ["--metrics-max-functions", "0"])]:
    for what, size, lines, wall, c in run(binary, n, extra):
        print(f"{name}: {n} functions: {what}: {size/1e6:.3f} MB, {lines} lines, {wall:.2f} s wall, "
              f"{c:.2f} s server CPU", flush=True)
