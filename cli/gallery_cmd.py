"""`dreamfarm gallery export | reindex`: the gallery as a static site, and
the live index rebuilt from the bucket."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.storage import LocalStore, Store

if TYPE_CHECKING:
    from service.s3 import S3Store


def register(sub: Any) -> None:
    g = sub.add_parser("gallery", help="export the gallery as a static site, or rebuild its index")
    gsub = g.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    e = gsub.add_parser("export", help="write a model's (or one layer's) gallery pages as a static site")
    e.add_argument("--model", required=True)
    e.add_argument("--layer", default=None, help="one layer (alias or module path); default: every layer")
    e.add_argument("--from", dest="source", default=None, metavar="DIR",
                   help="a folder `dreamfarm render` wrote (default: the bucket, DREAMFARM_S3_*)")  # fmt: skip
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="a folder: pages plus copies of the PNGs and sidecars")
    where.add_argument(
        "--to-bucket",
        metavar="PREFIX",
        nargs="?",
        const="site/",
        help="into the bucket under PREFIX (default site/), linking to the renders where they are",
    )
    e.set_defaults(func=cmd_export)
    r = gsub.add_parser("reindex", help="rebuild the live gallery index (in Redis) from the bucket's sidecars")
    r.set_defaults(func=cmd_reindex)


# The gallery (jinja2, the zoo's architectures, torch), boto3 and redis are
# imported when a command runs: every `dreamfarm` invocation builds this parser.
def _bucket() -> S3Store:
    from service.config import Settings
    from service.s3 import S3Store

    return S3Store.from_settings(Settings())


def cmd_export(args: argparse.Namespace) -> int:
    from service.gallery.export import export_site

    source: Store = LocalStore(args.source) if args.source else _bucket()
    if args.out is not None:
        pages = export_site(source, LocalStore(args.out), args.model, args.layer)
        print(f"wrote {len(pages)} pages to {args.out} (open {args.out / 'index.html'})", file=sys.stderr)
        return 0
    prefix = args.to_bucket.strip("/") + "/"
    bucket = _bucket()
    depth_to_root = "../" * prefix.count("/")
    pages = export_site(source, _Prefixed(bucket, prefix), args.model, args.layer, files_prefix=depth_to_root,
                        copy_files=False)  # fmt: skip
    print(f"wrote {len(pages)} pages to s3://{bucket.bucket}/{prefix} (start at {prefix}index.html)", file=sys.stderr)
    return 0


def cmd_reindex(_args: argparse.Namespace) -> int:
    import redis

    from service.config import Settings
    from service.gallery.export import reindex
    from service.gallery.index import RedisIndex

    settings = Settings()
    n = reindex(_bucket(), RedisIndex(redis.Redis.from_url(settings.redis_url, decode_responses=True)))
    print(f"indexed {n} renders", file=sys.stderr)
    return 0


class _Prefixed:
    """A store seen under a key prefix (the site's folder in the bucket)."""

    def __init__(self, inner: Store, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        self.inner.put(self.prefix + key, data, content_type, metadata)

    def get(self, key: str) -> bytes:
        return self.inner.get(self.prefix + key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + key)

    def list(self, prefix: str) -> Any:
        return (k[len(self.prefix) :] for k in self.inner.list(self.prefix + prefix))

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self.inner.url(self.prefix + key, expires_s)
