#!/usr/bin/env python3
"""Size and cost of GET /v1/functions and of the dashboard stream's
overview event on a memory-store server knowing N functions.

Usage: overview-many-functions.py N OLD_BINARY NEW_BINARY

Each build is started on random loopback ports, given N functions with
"create function" over the admin protocol; then, three times each,
GET /v1/functions is fetched and GET /v1/stream is read up to the end of
its first overview event.
"""
import socket, subprocess, sys, time, os, urllib.request, random
def cpu(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")
def fetch(url, stream):
    r=urllib.request.urlopen(url,timeout=120)
    if not stream:
        return len(r.read())
    while True:
        l=r.readline()
        if l.startswith(b"data: "):
            r.close()
            return len(l)
def run(binary, n):
    gp=random.randint(30000,50000); hp=gp+1
    p=subprocess.Popen([binary,"serve","--store","memory:","--listen",f"127.0.0.1:{gp}","--http",f"127.0.0.1:{hp}"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
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
        for what,path,stream in [("GET /v1/functions","/v1/functions",False),("overview event","/v1/stream",True)]:
            for r in range(3):
                c0=cpu(p.pid); t0=time.time()
                size=fetch(f"http://127.0.0.1:{hp}{path}",stream)
                res.append((what,size,time.time()-t0,cpu(p.pid)-c0))
        return res
    finally:
        p.terminate(); p.wait()
n=int(sys.argv[1])
for name,b in [("old",sys.argv[2]),("new",sys.argv[3])]:
    for what,size,wall,c in run(b,n):
        print(f"{name}: {n} functions: {what}: {size/1e6:.3f} MB, {wall:.2f} s wall, {c:.2f} s server CPU", flush=True)
