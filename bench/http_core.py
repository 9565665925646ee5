# Benchmark of the HTTP server core alone (tessera.http.server, no engine): small keep-alive
# requests with wrk against the server and, in the same run, a bare trio+h11 loop (the
# baseline: h11's own cost); 1 GiB uploads (Content-Length and 1 MiB chunked) and a 1 GiB
# download in 1 MiB memoryview slices from a raw-socket client. Server CPU from /proc.
# Usage: python bench/http_core.py   (prints JSON). Not a test. Traffic only to 127.0.0.1;
# servers are started and stopped here by pid.
import json
import os
import re
import socket
import subprocess
import sys
import time

GiB = 1 << 30
MiB = 1 << 20


def server_main(port):
    import logging
    import trio
    from tessera.http.config import ServerConfig
    from tessera.http.message import Response
    from tessera.http.server import serve
    logging.getLogger("tessera.access").setLevel(
        logging.INFO if os.environ.get("ACCESS_LOG") else logging.WARNING)
    if os.environ.get("ACCESS_LOG"):
        logging.basicConfig(filename="/dev/null", level=logging.INFO)
    small = json.dumps({"image": {"id": "x" * 36, "name": "n" * 100}}).encode()[:200]
    blob = memoryview(bytes(64 * MiB))

    async def app(req):
        if req.path == "/small":
            return Response(200, [("Content-Type", "application/json")], small)
        if req.path == "/blob":
            async def pieces():
                for _ in range(GiB // (64 * MiB)):
                    for off in range(0, 64 * MiB, MiB):
                        yield blob[off:off + MiB]
            return Response(200, [], pieces(), content_length=GiB)
        if req.path == "/upload":
            n = 0
            async for piece in req.body:
                n += len(piece)
            return Response(200, [], str(n).encode())
        return Response(404, [], b"")

    trio.run(serve, app, ServerConfig(port=port, max_connections=4096))


def bare_main(port):
    import h11
    import trio
    body = b"x" * 200

    async def handle(stream):
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif type(ev) is h11.EndOfMessage:
                    out = conn.send(h11.Response(status_code=200, headers=[
                        ("Content-Type", "application/json"), ("Content-Length", "200")]))
                    out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    conn.start_next_cycle()
                elif type(ev) is h11.ConnectionClosed:
                    return
        except (trio.BrokenResourceError, h11.ProtocolError):
            return

    trio.run(trio.serve_tcp, handle, port)


def wrk(port, pid, args):
    c0 = sum(cpu(pid))
    r = subprocess.run(["wrk", *args, f"http://127.0.0.1:{port}/small"],
                       capture_output=True, text=True).stdout
    c1 = sum(cpu(pid))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r).group(1))
    reqs = int(re.search(r"(\d+) requests in", r).group(1))
    return {"req_s": round(rps), "server_cpu_us_per_req": round((c1 - c0) / reqs * 1e6, 1)}


def start(mode, port):
    proc = subprocess.Popen([sys.executable, __file__, mode, str(port)])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"{mode} server did not start")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    t = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / t, int(f[12]) / t


def upload(port, chunked):
    s = socket.create_connection(("127.0.0.1", port))
    buf = memoryview(bytes(MiB))
    if chunked:
        s.sendall(b"PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        frame = b"%x\r\n" % MiB
        for _ in range(GiB // MiB):
            s.sendall(frame); s.sendall(buf); s.sendall(b"\r\n")
        s.sendall(b"0\r\n\r\n")
    else:
        s.sendall(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % GiB)
        for _ in range(GiB // MiB):
            s.sendall(buf)
    resp = s.recv(1000)
    s.close()
    assert b"200 OK" in resp and resp.endswith(str(GiB).encode()), resp


def download(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = bytearray(MiB)
    total = 0
    head = None
    while True:
        n = s.recv_into(buf)
        if not n:
            break
        total += n
        if head is None:
            head = bytes(buf[:n]).split(b"\r\n\r\n")[0]
            hl = len(head) + 4
        if total - hl >= GiB:
            break
    s.close()
    assert total - hl == GiB


def main():
    port = 18000 + os.getpid() % 1000
    out = {"small": {"tessera": [], "bare_h11": []}}
    for _ in range(3):                       # interleaved rounds: the host drifts
        for mode, key in (("server", "tessera"), ("bare", "bare_h11")):
            proc = start(mode, port)
            try:
                out["small"][key].append({"c1": wrk(port, proc.pid, ["-t1", "-c1", "-d3s"]),
                                          "c32": wrk(port, proc.pid, ["-t2", "-c32", "-d3s"])})
            finally:
                proc.terminate()
                proc.wait()
    proc = start("server", port)
    try:
        for name, fn in (("upload_content_length", lambda: upload(port, False)),
                         ("upload_chunked_1MiB", lambda: upload(port, True)),
                         ("download_1MiB_slices", lambda: download(port))):
            res = []
            for _ in range(3):
                u0, s0 = cpu(proc.pid)
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                u1, s1 = cpu(proc.pid)
                res.append({"GB_s": round(GiB / dt / 1e9, 2), "user_s_per_GiB": round(u1 - u0, 2),
                            "sys_s_per_GiB": round(s1 - s0, 2)})
            out[name] = res
    finally:
        proc.terminate()
        proc.wait()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        server_main(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "bare":
        bare_main(int(sys.argv[2]))
    else:
        main()
