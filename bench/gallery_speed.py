"""How long the gallery's pages take on the server, for a layer of 1000 units.

Starts Redis and SeaweedFS (devstack), fills the gallery index with 1000
renders of EfficientNet-Lite0's logits (the index is all a layer page reads:
no bucket listing), and times the pages through the API in-process (FastAPI's
test client: server time, no network), including presigning every image URL.

    python bench/gallery_speed.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import redis
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from bench_report import machine, write_section
from devstack import RedisServer, SeaweedS3
from service.architectures import Architectures
from service.config import Settings
from service.gallery.index import Entry, MemoryIndex, RedisIndex
from service.gallery.pages import Gallery, StaticLinks
from service.s3 import S3Store


def entries(n: int) -> list[Entry]:
    return [Entry(key=f"{u:064x}", model="efficientnet_lite0", layer="_fc", unit=u, kind="logit", label=f"class {u}",
                  recipe="lucid", png=f"renders/efficientnet_lite0/_fc/{u}/{u:064x}.png",
                  sidecar=f"renders/efficientnet_lite0/_fc/{u}/{u:064x}.json", ranks={"efficientnet_lite0": 1})
            for u in range(n)]  # fmt: skip


def timed(fn: object, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--write", type=Path, default=None)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    with RedisServer(data_dir=root / "redis") as r, SeaweedS3(data_dir=root / "s3") as s3:
        settings = Settings(
            redis_url=r.url,
            s3_endpoint_url=s3.endpoint_url,
            s3_access_key_id=s3.access_key,
            s3_secret_access_key=s3.secret_key,
            s3_bucket="bench",
        )  # type: ignore[arg-type]
        RedisIndex(redis.Redis.from_url(r.url, decode_responses=True)).add(entries(args.units))
        http = TestClient(create_app(settings))
        pages = {
            "layer page (120 tiles of 1000)": "/gallery/efficientnet_lite0/_fc",
            "layer page, last page": "/gallery/efficientnet_lite0/_fc?page=9",
            "layer page, search by name": "/gallery/efficientnet_lite0/_fc?q=dog",
            "model page": "/gallery/efficientnet_lite0",
        }
        for url in pages.values():
            assert http.get(url).status_code == 200, url
        rows = [(name, *timed(lambda url=url: http.get(url), args.runs)) for name, url in pages.items()]
        store = S3Store.from_settings(settings)
        static = Gallery(MemoryIndex(entries(args.units)), Architectures(), store)
        rows.append(("static export: one page of all 1000 tiles",
                     *timed(lambda: static.layer("efficientnet_lite0", "_fc", StaticLinks(2)), 5)))  # fmt: skip
    md = "\n".join([
        f"### Gallery pages for a layer of {args.units} units — {machine(torch.device('cpu'))}",
        "",
        "Server time (in-process, no network), presigned image URLs included; the index is in Redis, so no "
        f"page lists the bucket. {args.runs} runs each. Command: `python bench/gallery_speed.py`",
        "",
        "| page | median ms | p95 ms |",
        "|---|---:|---:|",
        *[f"| {name} | {med:.1f} | {p95:.1f} |" for name, med, p95 in rows],
    ]) + "\n"  # fmt: skip
    print(md)
    if args.write:
        write_section(args.write, "gallery-cpu", md)


if __name__ == "__main__":
    main()
