"""Throughput of the batch command (pneumo.batch on Ray Data) against the plain CLI (pneumo.predict), same files.

Examples (DATA: any folder of chest X-rays, e.g. the public data set's train folder):
    python -m pneumo.bench.batch --data DATA --n 5000               # CLI vs batch, 1 and 2 actors
    python -m pneumo.bench.batch --data DATA --n 500 --two-nodes    # + a 2-node local cluster

N links to the data's images (cycled) are made in a temporary folder. Each command runs as a user runs it, a fresh
process timed from start to exit (start-up included: Ray's, the actors' model loading), output to a new folder or
/dev/null; the commands are interleaved round by round, so a changing load on a shared machine hits all alike.
``--two-nodes`` starts a Ray head and a second node on 127.0.0.1 (``ray start --block``, both stopped by their process
ids afterwards) and runs the batch command against it with ``--address``. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pneumo import __version__, config

log = logging.getLogger("pneumo.bench.batch")
ROOT = Path(__file__).resolve().parents[2]


def make_links(data: Path, n: int, folder: Path) -> int:
    """n symlinks to the images under ``data`` (cycled), 500 per sub-folder; returns the number of distinct images."""
    images = sorted(p for p in data.rglob("*") if p.suffix.lower() in config.IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"no images under {data}")
    for i in range(n):
        sub = folder / f"{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:07d}_{images[i % len(images)].name}").symlink_to(images[i % len(images)].resolve())
    return len(images)


def _env(cluster: bool = False) -> dict[str, str]:
    """This checkout first on the path; for the 2-node cluster, Ray's token authentication on every process (the
    nodes and the driver must agree: `ray start` enables it, a connecting driver assumes it off)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return {**env, "RAY_AUTH_MODE": "token"} if cluster else env


def timed(cmd: list[str], cluster: bool = False) -> float:
    """Wall seconds of one command run to its end (start-up included); fails loudly on a bad exit status."""
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=_env(cluster), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if res.returncode not in (0, 2):
        raise RuntimeError(f"{cmd[2]} exited {res.returncode}: {res.stderr[-2000:]}")
    return wall


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_nodes(tmp: Path) -> tuple[str, list[subprocess.Popen]]:
    """A Ray head and a second node on loopback, one CPU each; returns (address, their processes)."""
    port = _free_port()
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory",
              str(config.BATCH_OBJECT_STORE_BYTES), "--block", "--disable-usage-stats"]  # fmt: skip
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    head = subprocess.Popen([*ray, "--head", "--port", str(port), "--include-dashboard", "false", *common],
                            env=_env(True), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    procs = [head]
    address = f"127.0.0.1:{port}"
    if nodes_up(address, 1, 90):
        worker = [*ray, "--address", address, *common]
        procs.append(subprocess.Popen(worker, env=_env(True), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))  # fmt: skip
    if not nodes_up(address, 2, 90):
        stop(procs)
        raise RuntimeError("the two local Ray nodes did not come up")
    return address, procs


def nodes_up(address: str, n: int, timeout_s: float) -> bool:
    """Wait until `ray status` lists n active nodes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        res = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", "--address", address],
                             env=_env(True), capture_output=True, text=True)  # fmt: skip
        active = res.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in res.stdout else ""
        if active.count("node_") >= n:
            return True
        time.sleep(2)
    return False


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop the nodes this script started, by their process groups (never `ray stop`: other Ray jobs may run)."""
    for p in reversed(procs):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
                p.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pneumo-bench-batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--data", type=Path, required=True, help="a folder of images (searched recursively)")
    p.add_argument("--n", type=int, default=5000, help="files (links to the data's images, cycled)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median reported)")
    p.add_argument("--two-nodes", action="store_true", help="also a 2-node local cluster (127.0.0.1)")
    p.add_argument("--model", type=Path, default=None, help="classifier (default: the committed one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    load_at_start = os.getloadavg()[0]  # other work on the machine: the runs compete with it
    tmp = Path(tempfile.mkdtemp(prefix="pneumo-bench-batch-"))
    try:
        folder = tmp / "files"
        distinct = make_links(args.data, args.n, folder)
        model = ["--model", str(args.model)] if args.model else []
        py = [sys.executable, "-m"]
        commands = {
            "cli": [*py, "pneumo.predict", "--quiet", *model, str(folder)],
            "batch_1_worker": [*py, "pneumo.batch", "--workers", "1", *model, str(folder)],
            "batch_2_workers": [*py, "pneumo.batch", "--workers", "2", *model, str(folder)],
        }
        walls: dict[str, list[float]] = {k: [] for k in commands}
        for r in range(args.rounds):
            for name, cmd in commands.items():
                out = ["--out", str(tmp / f"out-{name}-{r}")] if name.startswith("batch") else []
                walls[name].append(timed([*cmd[:3], *out, *cmd[3:]]))
                log.info("round %d %s: %.1f s (%.1f images/s)", r, name, walls[name][-1], args.n / walls[name][-1])
        result: dict = {
            "n_files": args.n,
            "distinct_images": distinct,
            "rounds": args.rounds,
            "cpu_count": os.cpu_count(),
            "load_at_start": round(load_at_start, 2),
            "load_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "pneumo_version": __version__,
        }
        for name, w in walls.items():
            med = statistics.median(w)
            result[name] = {"wall_s": [round(x, 2) for x in w], "images_per_s": round(args.n / med, 1)}
        for name in ("batch_1_worker", "batch_2_workers"):
            result[f"{name}_vs_cli"] = round(result[name]["images_per_s"] / result["cli"]["images_per_s"], 3)
        # the fixed cost: a batch job of 32 files is almost all start-up
        small = tmp / "small"
        make_links(args.data, 32, small)
        result["batch_startup_s_32_files"] = round(timed([*py, "pneumo.batch", "--out", str(tmp / "out-small"), *model,
                                                          str(small)]), 2)  # fmt: skip
        if args.two_nodes:
            address, procs = start_two_nodes(tmp)
            try:
                wall = timed([*py, "pneumo.batch", "--address", address, "--workers", "2", "--out",
                              str(tmp / "out-2nodes"), *model, str(folder)], cluster=True)  # fmt: skip
                result["batch_two_local_nodes"] = {"wall_s": round(wall, 2), "images_per_s": round(args.n / wall, 1)}
            finally:
                stop(procs)
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
