#!/usr/bin/env bash
# A throwaway S3-compatible server (moto, from .venv) on 127.0.0.1, for the
# conformance tests and for poking at remote stores by hand.
#
#   scripts/s3-server.sh [--port N] [--until-eof] [BUCKET...]
#
# Binds loopback only. --port 0 (the default) picks a free port. Creates the given
# buckets, then prints one line "PORT <n>" on stdout once the server answers.
# Runs until SIGINT/SIGTERM, or, with --until-eof, until its stdin closes (so a
# test that dies without cleaning up still takes the server with it).
# Credentials: any key id / secret, e.g. test/test; region us-east-1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c 'import moto.server, boto3' 2>/dev/null; then
  echo "s3-server.sh: moto[server] is missing from .venv: run scripts/setup-test-env.sh" >&2
  exit 3
fi
port=0
until_eof=0
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --until-eof) until_eof=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
exec .venv/bin/python -c '
import logging, signal, sys, threading
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
from moto.s3.responses import S3Response
import boto3

# moto checks If-Match / If-None-Match and then writes, with other request threads
# free to run in between; S3 does both atomically. One lock around PUT makes the
# conditional writes the multi-writer tests rely on as atomic as S3 makes them.
_put_lock = threading.Lock()
_put_object = S3Response.put_object
def _atomic_put_object(self, *args, **kwargs):
    with _put_lock:
        return _put_object(self, *args, **kwargs)
S3Response.put_object = _atomic_put_object

port, until_eof, buckets = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
_, port = server.get_host_and_port()
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
s3.list_buckets()  # answers?
for b in buckets:
    s3.create_bucket(Bucket=b)
print(f"PORT {port}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    if until_eof:
        sys.stdin.read()
    else:
        threading.Event().wait()
except KeyboardInterrupt:
    pass
' "$port" "$until_eof" "$@"
