"""Measures what the cluster features cost, each against a peer run in the same script.

- Slurm: the quick pipeline (made small) run through the local one-node Slurm
  (`--executor slurm --poll 0.5`) against the same pipeline run locally (`--jobs 2`).
- Remote cache: pushing all its artifacts to a loopback S3 server (s3s-fs) during a run
  and pulling them into an empty cache, against copying the cache folder with `cp -r`.

Run with the virtualenv's python after scripts/setup:
    source scripts/env.sh && python3 scripts/bench_cluster.py
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPE = os.path.join(ROOT, "target", "release", "pipe")
QUICK = os.path.join(ROOT, "pipelines", "quick.toml")
SMALL = [
    "--set", "stage.data.train_size=400", "--set", "stage.data.test_size=200",
    "--set", "stage.train.epochs=3", "--set", "stage.train.checkpoints=[0,1,3]",
    "--set", "stage.activations.epochs=[0,3]", "--set", "stage.activations.per_class=5",
    "--set", "stage.probe.n_t=30", "--set", "stage.gradnorm.epochs=[0,3]",
    "--set", "stage.gradnorm.subset=30", "--set", "stage.rollback.from_epochs=[1]",
]
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


def timed(args, env=None, cwd=None):
    t = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def run(cache, *extra, env=None):
    return timed([PIPE, "run", QUICK, "--cache", cache, *SMALL, *extra], env=env, cwd=ROOT)


def main():
    subprocess.run([os.path.join(ROOT, "scripts", "slurm-up")], check=True)
    subprocess.run([os.path.join(ROOT, "scripts", "s3-server"), "--install"], check=True)
    with tempfile.TemporaryDirectory() as work:
        local = run(os.path.join(work, "local"), "--jobs", "2")
        slurm = run(os.path.join(work, "slurm"), "--executor", "slurm", "--poll", "0.5")
        n = len(os.listdir(os.path.join(work, "local", "artifacts")))
        print(f"quick pipeline (small), {n} artifacts")
        print(f"  local run      {local:7.2f} s")
        print(f"  through Slurm  {slurm:7.2f} s   ratio {slurm / local:.2f}x")

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [os.path.join(ROOT, "scripts", "s3-server"), str(port),
             os.path.join(work, "s3"), "bench"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(500):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.02)
            env = dict(os.environ, **S3_ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
            remote = ["--remote", "s3://bench/quick"]
            computed = run(os.path.join(work, "pushing"), "--jobs", "2", *remote, env=env)
            pulled = run(os.path.join(work, "pulling"), *remote, env=env)
            size = sum(os.path.getsize(os.path.join(d, f))
                       for d, _, fs in os.walk(os.path.join(work, "pulling", "artifacts"))
                       for f in fs)
            copy = timed(["cp", "-r", os.path.join(work, "local", "artifacts"),
                          os.path.join(work, "copied")])
            print(f"remote cache, {size / 1e6:.1f} MB of artifacts")
            print(f"  run that computes and pushes  {computed:6.2f} s   ({computed / local:.2f}x the local run)")
            print(f"  run that pulls everything     {pulled:6.2f} s   ({local / pulled:.1f}x faster than computing)")
            print(f"  cp -r of the same artifacts   {copy:6.2f} s   (pull / copy {pulled / copy:.1f}x)")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
