"""Load test of `ilias serve`: N concurrent clients on loopback for a fixed time, against
search by stored id ("more like this") and search by uploaded image, with the same
searches made by calling the Retriever directly (no HTTP) in the same run as the baseline.

The baseline runs first, in this process, with the same N threads (Edge has one owner, so
it closes the store before the service opens it); then `ilias serve` runs as its own
process and the clients (httpx, keep-alive) call it. Reported per workload: requests/s,
p50/p99 latency, errors; the summary line gives service/direct throughput ratios.

Run:  python bench/serve.py --store edge:PATH -c COLLECTION [--clients 4 --seconds 10]
      (e.g. the demo collection: ilias demo, then --store edge:~/.local/share/ilias/demo/qdrant)

``--hostile``: the service alone (no baseline), 32 threads sending worst-case uploads for
``--seconds`` (30 by default here) beside ``--clients`` threads of normal traffic (by id and
by upload). The worst cases: a 12 KB PNG of 9990 x 9990 one-bit pixels (a decompression
bomb just under the loader's 100 MP limit), a 16-bit greyscale PNG just under the
service's pixel cap (the costliest decode per pixel, in a few KB), a JPEG 9x over the cap
(decoded at 1/4), and a 200 MB chunked JSON body. Reported: the peak RSS (VmHWM) against
the stated budget (``ServeSettings.budget_bytes`` over the RSS after warm-up), p50/p99
and errors of the normal traffic, and the hostile answers by status.

``--decode-cost``: peak bytes per pixel of one decode, per image mode, each in a fresh
process (what ``DECODE_BYTES_PER_PIXEL`` in ilias/serve/settings.py is rounded up from).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, in MB (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def start_service(store: str, collection: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``ilias serve`` as its own process on a free loopback port, once /ready answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ilias", "serve", "--store", store, "-c", collection,
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/ready").status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("ilias serve did not start")
        time.sleep(0.2)


def worst_cases(max_pixels: int) -> list[tuple[str, bytes]]:
    """The hostile uploads: name -> bytes (see the module docstring)."""
    from PIL import Image

    def encoded(image: Image.Image, fmt: str) -> bytes:
        out = io.BytesIO()
        image.save(out, fmt, optimize=True) if fmt == "PNG" else image.save(out, fmt)
        return out.getvalue()

    side = int(max_pixels**0.5) - 1
    return [
        ("bomb-9990x9990-1bit.png", encoded(Image.new("1", (9990, 9990)), "PNG")),
        (f"cap-{side}x{side}-16bit.png", encoded(Image.new("I;16", (side, side)), "PNG")),
        (
            f"jpeg-{3 * side}x{3 * side}.jpg",
            encoded(Image.new("RGB", (3 * side, 3 * side)), "JPEG"),
        ),
    ]


def hostile(args: argparse.Namespace) -> None:
    """The service under 32 worst-case uploaders beside normal traffic (--hostile)."""
    from ilias.serve import ServeSettings

    store = open_store(args.store)
    retriever = Retriever(store, args.collection)
    probe = retriever.search_vectors(np.ones((1, retriever.view.config.dim), np.float32), 1)[0]
    dataset_id = args.id or probe[0].id
    image = args.image or Path(str(probe[0].payload["path"]))
    store.close()
    data = image.read_bytes()
    settings = ServeSettings(store=args.store, api_key=None)
    cases = worst_cases(settings.max_pixels)
    env = {k: v for k, v in os.environ.items() if k != "ILIAS_API_KEY"}
    server, base = start_service(args.store, args.collection, env)
    url = f"/api/collections/{args.collection}/search"
    try:
        # warm: every decode slot encodes once, so base holds one forward's memory per slot
        def warm(_: int) -> None:
            files = {"image": ("q.jpg", data)}
            httpx.post(f"{base}{url}/image", files=files, timeout=120).raise_for_status()

        with ThreadPoolExecutor(settings.decodes) as pool:
            list(pool.map(warm, range(settings.decodes)))
        rest = proc_memory_mb(server.pid)["VmRSS"]
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        budget = settings.budget_bytes(int(rest * 2**20)) / 2**20
        stop = time.perf_counter() + args.seconds
        statuses: dict[str, dict[int | str, int]] = {}
        lock = threading.Lock()

        def chunked() -> Iterator[bytes]:
            yield b'{"id": "'
            for _ in range(200):
                yield b"a" * (1 << 20)
            yield b'"}'

        def attacker(number: int) -> None:
            client = httpx.Client(base_url=base, timeout=120)
            kinds = [*cases, ("chunked-200MB.json", b"")]
            while time.perf_counter() < stop:
                name, payload = kinds[number % len(kinds)]
                try:
                    if payload:
                        code: int | str = client.post(
                            f"{url}/image", files={"image": (name, payload)}
                        ).status_code
                    else:
                        code = client.post(
                            url, content=chunked(), headers={"content-type": "application/json"}
                        ).status_code
                except httpx.HTTPError as error:
                    code = type(error).__name__
                with lock:
                    counts = statuses.setdefault(name, {})
                    counts[code] = counts.get(code, 0) + 1
                number += 1
            client.close()

        normal = [httpx.Client(base_url=base, timeout=120) for _ in range(args.clients)]
        query = json.dumps({"k": args.k})

        def by_id(number: int) -> None:
            normal[number].post(url, json={"id": dataset_id, "k": args.k}).raise_for_status()

        def by_upload(number: int) -> None:
            normal[number].post(
                f"{url}/image", files={"image": (image.name, data)}, data={"query": query}
            ).raise_for_status()

        attackers = [threading.Thread(target=attacker, args=(i,)) for i in range(32)]
        for thread in attackers:
            thread.start()
        half = args.seconds / 2
        results = [row("normal: by id", *run_load(by_id, args.clients, half), half)]
        results.append(row("normal: by upload", *run_load(by_upload, args.clients, half), half))
        for thread in attackers:
            thread.join()
        peak = proc_memory_mb(server.pid)["VmHWM"]
    finally:
        server.terminate()
        server.wait(30)
    print(
        f"--hostile: 32 attackers + {args.clients} normal clients x {args.seconds:.0f} s, "
        f"{args.collection} in {args.store}; limits: {settings.max_pixels:,} pixels, "
        f"{settings.decodes} decodes, queue {settings.queue}, "
        f"{settings.max_upload_bytes:,} B uploads, {settings.max_json_bytes:,} B JSON"
    )
    print(
        f"peak RSS {peak:.0f} MB; budget {budget:.0f} MB = base {rest:.0f} MB + "
        f"{settings.decodes} x {settings.decode_bytes / 2**20:.0f} MB; "
        f"{'within' if peak <= budget else 'OVER'} the budget"
    )
    header = ("workload", "requests/s", "p50 ms", "p99 ms", "errors")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(
            f"| {r['workload']} | {r['requests/s']:.1f} | {r['p50 ms']:.1f} | "
            f"{r['p99 ms']:.1f} | {r['errors']} |"
        )
    for name, counts in statuses.items():
        shown = ", ".join(f"{code}: {n}" for code, n in sorted(counts.items(), key=str))
        print(f"hostile {name} ({len(dict(cases).get(name, b'')):,} bytes): {shown}")


def _one_decode(mode: str, side: int) -> float:
    """Peak bytes per pixel of decoding one PNG/TIFF of ``mode`` (run in a fresh process)."""
    from PIL import Image

    from ilias.loader.images import decode_image

    rng = np.random.default_rng(0)
    if mode == "F":
        picture = Image.fromarray(rng.random((side, side)).astype(np.float32), "F")
    elif mode == "RGBA":
        picture = Image.fromarray(rng.integers(0, 255, (side, side, 4), dtype=np.uint8), "RGBA")
    else:
        picture = Image.new(mode, (side, side))
    out = io.BytesIO()
    picture.save(out, "TIFF" if mode == "F" else "PNG")
    payload = out.getvalue()
    del picture, out
    rest = proc_memory_mb(os.getpid())["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")
    decode_image("x", payload)
    return (proc_memory_mb(os.getpid())["VmHWM"] - rest) * 2**20 / side**2


def decode_cost() -> None:
    import multiprocessing

    side = 3000
    context = multiprocessing.get_context("spawn")
    print(f"peak bytes per pixel of one decode ({side} x {side}), per mode:")
    for mode in ("1", "L", "P", "RGB", "LA", "RGBA", "I;16", "F"):
        with context.Pool(1) as pool:
            print(f"  {mode:5s} {pool.apply(_one_decode, (mode, side)):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decode-cost", action="store_true", help="bytes per pixel per mode")
    if "--decode-cost" in sys.argv:
        decode_cost()
        return
    parser.add_argument("--store", required=True)
    parser.add_argument("-c", "--collection", required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, help="per workload (default 10; --hostile 30)")
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--id", help="stored id to search with (default: the first point found)")
    parser.add_argument("--image", type=Path, help="image to upload (default: that point's file)")
    parser.add_argument("--hostile", action="store_true", help="worst-case uploads beside traffic")
    args = parser.parse_args()
    if args.hostile:
        args.seconds = args.seconds or 30.0
        hostile(args)
        return
    args.seconds = args.seconds or 10.0

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
