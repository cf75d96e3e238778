"""Load test of `ilias serve`: N concurrent clients on loopback for a fixed time, against
search by stored id ("more like this") and search by uploaded image, with the same
searches made by calling the Retriever directly (no HTTP) in the same run as the baseline.

The baseline runs first, in this process, with the same N threads (Edge has one owner, so
it closes the store before the service opens it); then `ilias serve` runs as its own
process and the clients (httpx, keep-alive) call it. Reported per workload: requests/s,
p50/p99 latency, errors; the summary line gives service/direct throughput ratios.

Run:  python bench/serve.py --store edge:PATH -c COLLECTION [--clients 4 --seconds 10]
      (e.g. the demo collection: ilias demo, then --store edge:~/.local/share/ilias/demo/qdrant)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from ilias.indexing import open_store
from ilias.query import QueryImage, Retriever


def run_load(
    call: Callable[[int], None], clients: int, seconds: float
) -> tuple[int, int, list[float]]:
    """``clients`` threads calling ``call`` until ``seconds`` pass: (ok, errors, latencies)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(number: int) -> None:
        mine: list[float] = []
        failed = 0
        while time.perf_counter() < stop:
            began = time.perf_counter()
            try:
                call(number)
                mine.append(time.perf_counter() - began)
            except Exception:
                failed += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), errors[0], latencies


def row(name: str, ok: int, errors: int, latencies: list[float], seconds: float) -> dict:
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {
        "workload": name,
        "requests/s": ok / seconds,
        "p50 ms": float(np.percentile(ms, 50)),
        "p99 ms": float(np.percentile(ms, 99)),
        "errors": errors,
        "requests": ok,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("-c", "--collection", required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--id", help="stored id to search with (default: the first point found)")
    parser.add_argument("--image", type=Path, help="image to upload (default: that point's file)")
    args = parser.parse_args()

    # -- baseline: the Retriever in this process, the same searches, the same threads
    store = open_store(args.store)
    retriever = Retriever(store, args.collection)
    probe = retriever.search_vectors(np.ones((1, retriever.view.config.dim), np.float32), 1)[0]
    dataset_id = args.id or probe[0].id
    image = args.image or Path(str(probe[0].payload["path"]))
    data = image.read_bytes()
    engine_lock = threading.Lock()  # the service's rule: one engine call at a time
    retriever.encode_images([QueryImage(data)])  # the encoder is built before timing

    def direct_id(_: int) -> None:
        with engine_lock:
            vector = retriever.view.retrieve_vectors([dataset_id])[dataset_id]
            retriever.search_vectors(vector[None], args.k)

    def direct_upload(_: int) -> None:
        vectors = retriever.encode_images([QueryImage(data)])
        with engine_lock:
            retriever.search_vectors(vectors, args.k)

    results = []
    for name, call in (("direct: by id", direct_id), ("direct: by upload", direct_upload)):
        results.append(row(name, *run_load(call, args.clients, args.seconds), args.seconds))
    store.close()

    # -- the service, as its own process, called over loopback HTTP
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ILIAS_API_KEY"}
    server = subprocess.Popen(
        [sys.executable, "-m", "ilias", "serve", "--store", args.store, "-c", args.collection,
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("ilias serve did not start")
            time.sleep(0.2)
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(args.clients)]
        url = f"/api/collections/{args.collection}/search"
        query = json.dumps({"k": args.k})
        # warm: the service builds the encoder on its first image search
        clients[0].post(f"{url}/image", files={"image": ("q.jpg", data)}, data={"query": query})

        def http_id(number: int) -> None:
            clients[number].post(url, json={"id": dataset_id, "k": args.k}).raise_for_status()

        def http_upload(number: int) -> None:
            clients[number].post(
                f"{url}/image", files={"image": (image.name, data)}, data={"query": query}
            ).raise_for_status()

        for name, call in (("service: by id", http_id), ("service: by upload", http_upload)):
            results.append(row(name, *run_load(call, args.clients, args.seconds), args.seconds))
    finally:
        server.terminate()
        server.wait(30)

    print(
        f"{args.clients} clients x {args.seconds:.0f} s, top-{args.k}, {args.collection} "
        f"in {args.store}; id {dataset_id}, upload {image.name} ({len(data):,} bytes)"
    )
    header = ("workload", "requests/s", "p50 ms", "p99 ms", "errors")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(
            f"| {r['workload']} | {r['requests/s']:.1f} | {r['p50 ms']:.1f} | "
            f"{r['p99 ms']:.1f} | {r['errors']} |"
        )
    by = {r["workload"]: r["requests/s"] for r in results}
    print(
        f"service/direct throughput: by id {by['service: by id'] / by['direct: by id']:.2f}x, "
        f"by upload {by['service: by upload'] / by['direct: by upload']:.2f}x"
    )


if __name__ == "__main__":
    main()
