#!/usr/bin/env bash
# Pull throughput of the remote cache: one artifact of N small files (default 5000) is
# pushed to a local S3 server (scripts/s3-server), then pulled into an empty cache. Prints
# files per second of the pull and, as the peer in the same script, of computing the
# artifact locally (an exec stage writing the same files).
#
#   benches/remote_pull.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
n="${1:-5000}"
pipe="$PWD/target/release/pipe"
[ -x "$pipe" ] || cargo build --release --quiet
scripts/s3-server --install
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
scripts/s3-server "$port" "$work/s3" bench >/dev/null 2>&1 &
server=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=test-access-key AWS_SECRET_ACCESS_KEY=test-secret-key AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
cat > "$work/p.toml" <<TOML
[pipeline]
name = "many"
[stage.files]
kind = "exec"
cmd = ["sh", "-c", "i=0; while [ \$i -lt $n ]; do echo \$i > \$PIPE_OUT/f\$i.txt; i=\$((i+1)); done"]
TOML
secs() { python3 -c 'import sys,time; t=time.time(); import subprocess; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(time.time()-t)' "$@"; }
compute=$(secs "$pipe" run "$work/p.toml" --cache "$work/a" --remote s3://bench/x)
pull=$(secs "$pipe" run "$work/p.toml" --cache "$work/b" --remote s3://bench/x)
"$pipe" ls --cache "$work/b" --json | grep -q '"key"' || { echo "nothing was pulled" >&2; exit 1; }
python3 - "$n" "$compute" "$pull" <<'PY'
import sys
n, compute, pull = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"{n} files: compute and push {compute:.2f} s, pull {pull:.2f} s = {n / pull:.0f} files/s "
      f"(pull / compute-and-push = {pull / compute:.2f})")
PY
