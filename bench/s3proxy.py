"""A delaying, request-counting HTTP/1.1 proxy in front of the benchmark's S3 server.

Every program measured (atlasfs, rclone, s3fs) talks to the bucket through it, so all
see the same added latency and are counted the same way. It parses each request's
head (method, target, Content-Length or chunked body), waits --delay-ms before
passing it on (one added wait per request, like a longer round trip), counts it as
GET / LIST / HEAD / PUT / POST / DELETE and counts the bytes either way. Responses
are copied through untouched. Binds 127.0.0.1 only.

Control (answered by the proxy itself, never forwarded):
  GET  /__proxy/stats        {"GET": n, ..., "bytes_down": n, "bytes_up": n, "trace": [...]}
  POST /__proxy/reset        counters and trace to zero
  POST /__proxy/delay/<ms>   change the added delay

usage: s3proxy.py --upstream PORT [--delay-ms N]   (prints "PORT <n>" once listening)
"""
import argparse
import asyncio
import json
import sys
import time

STATS = {}
TRACE = []  # (t since reset, kind, target, range) of the first TRACE_MAX requests
TRACE_MAX = 400
T0 = [time.monotonic()]
DELAY = [0.0]


def reset():
    STATS.clear()
    STATS.update({k: 0 for k in ("GET", "LIST", "HEAD", "PUT", "POST", "DELETE", "OTHER", "bytes_down", "bytes_up")})
    TRACE.clear()
    T0[0] = time.monotonic()


def kind_of(method, target):
    path, _, query = target.partition("?")
    if method == "GET":
        # ListObjects(V2) is a GET of the bucket with list-type/prefix/delimiter
        if "list-type=" in query or "delimiter=" in query or ("prefix=" in query and path.count("/") <= 2):
            return "LIST"
        return "GET"
    return method if method in STATS else "OTHER"


async def read_head(reader):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return head


async def copy_body(reader, writer, headers):
    n = 0
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            data = await reader.readexactly(size + 2)
            writer.write(data)
            n += size
            await writer.drain()
            if size == 0:
                # trailers end with an empty line (data already held "\r\n")
                if data != b"\r\n":
                    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                        writer.write(line)
                    writer.write(line)
                break
        return n
    left = int(headers.get("content-length", "0") or 0)
    while left:
        data = await reader.read(min(left, 1 << 20))
        if not data:
            raise ConnectionError("client closed mid-body")
        writer.write(data)
        await writer.drain()
        left -= len(data)
        n += len(data)
    return n


async def control(method, target, writer):
    if target == "/__proxy/stats":
        body = json.dumps(dict(STATS, trace=TRACE)).encode()
    elif target == "/__proxy/reset":
        reset()
        body = b"{}"
    elif target.startswith("/__proxy/delay/"):
        DELAY[0] = float(target.rsplit("/", 1)[1]) / 1000
        body = b"{}"
    else:
        body = b"unknown"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()


async def pump_down(up_reader, writer):
    try:
        while data := await up_reader.read(1 << 20):
            STATS["bytes_down"] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass


async def handle(reader, writer, upstream):
    up_reader = up_writer = down = None
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                break
            first, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = first.split(" ", 2)
            headers = {}
            for line in lines:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if target.startswith("/__proxy/"):
                await control(method, target, writer)
                continue
            kind = kind_of(method, target)
            STATS[kind] += 1
            if len(TRACE) < TRACE_MAX:
                TRACE.append((round(time.monotonic() - T0[0], 4), kind, target[:120], headers.get("range", "")))
            if DELAY[0]:
                await asyncio.sleep(DELAY[0])
            if up_writer is None:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
                down = asyncio.ensure_future(pump_down(up_reader, writer))
            up_writer.write(head)
            n = await copy_body(reader, up_writer, headers)  # not `+= await`: that loses other connections' updates
            STATS["bytes_up"] += n
            await up_writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        if up_writer is not None:
            up_writer.close()
        if down is not None:
            try:
                await asyncio.wait_for(down, 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                down.cancel()
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    DELAY[0] = a.delay_ms / 1000
    reset()
    server = await asyncio.start_server(lambda r, w: handle(r, w, a.upstream), "127.0.0.1", a.port, limit=1 << 20)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
