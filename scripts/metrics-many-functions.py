#!/usr/bin/env python3
"""Size and cost of /metrics on a memory-store server knowing N functions.

Usage: metrics-many-functions.py N OLD_BINARY NEW_BINARY

Each build is started on random loopback ports, given N functions with
"create function" over the admin protocol, and scraped three times; the new
build also with --metrics-max-functions 0 (no limit).
"""
import socket, subprocess, sys, time, os, urllib.request, random
def cpu(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")
def run(binary, n, extra):
    gp=random.randint(30000,50000); hp=gp+1
    p=subprocess.Popen([binary,"serve","--store","memory:","--listen",f"127.0.0.1:{gp}","--http",f"127.0.0.1:{hp}"]+extra,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try: s=socket.create_connection(("127.0.0.1",gp)); break
            except OSError: time.sleep(0.1)
        f=s.makefile("rb")
        B=1000
        for i in range(0,n,B):
            s.sendall("".join(f"create function fn{j}\n" for j in range(i,min(n,i+B))).encode())
            for j in range(i,min(n,i+B)):
                l=f.readline()
                assert l==b"OK\n" or l==b"OK\r\n", l
        s.close()
        res=[]
        for r in range(3):
            c0=cpu(p.pid); t0=time.time()
            body=urllib.request.urlopen(f"http://127.0.0.1:{hp}/metrics",timeout=120).read()
            res.append((len(body), body.count(b"\n"), time.time()-t0, cpu(p.pid)-c0))
        return res
    finally:
        p.terminate(); p.wait()
n=int(sys.argv[1])
old, new = sys.argv[2], sys.argv[3]
for name,b,extra in [("old",old,[]),("new",new,[]),("new --metrics-max-functions 0",new,["--metrics-max-functions","0"])]:
    for size,lines,wall,c in run(b,n,extra):
        print(f"{name}: {n} functions: {size/1e6:.2f} MB, {lines} lines, {wall:.2f} s wall, {c:.2f} s server CPU", flush=True)
