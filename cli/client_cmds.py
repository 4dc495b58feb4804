"""`dreamfarm submit | status | fetch`: the API from the command line."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from cli.args import add_render_args, request_from_args
from cli.client import Client, add_client_args
from cli.progress import Progress
from service.errors import DreamfarmError

FINAL = ("done", "done_with_failures", "cancelled")


def register(sub: Any) -> None:
    s = sub.add_parser("submit", help="submit a render job to the API")
    add_render_args(s)
    add_client_args(s)
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--title", default=None)
    s.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    s.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="a job's state and counts")
    st.add_argument("job")
    add_client_args(st)
    st.set_defaults(func=cmd_status)

    f = sub.add_parser("fetch", help="download a job's renders, sidecars and atlas")
    f.add_argument("job")
    f.add_argument("--out", required=True)
    add_client_args(f)
    f.set_defaults(func=cmd_fetch)


def cmd_submit(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    body = request_from_args(args, init_image=upload_image(client, args.init_image)).model_dump(
        mode="json", exclude_none=True
    )
    accepted = client.call("POST", "/v1/jobs", json=body)
    print(f"job {accepted['id']}: {accepted['units']} units, {accepted['cached']} cached, "
          f"{accepted['enqueued_batches']} batches enqueued", file=sys.stderr)  # fmt: skip
    print(accepted["id"])
    if not args.wait:
        return 0
    return report(follow(client, accepted["id"]))


def upload_image(client: Client, given: str | None) -> str | None:
    """--init-image: a file is uploaded (POST /v1/images); a key is taken as is."""
    if given is None or re.fullmatch(r"[0-9a-f]{64}", given):
        return given
    try:
        data = Path(given).read_bytes()
    except OSError as exc:
        raise DreamfarmError(f"--init-image {given}: {exc.strerror or exc}") from None
    kind = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    stored = client.call("POST", "/v1/images", content=data, headers={"Content-Type": kind})
    return str(stored["key"])


def follow(client: Client, job_id: str, *, quiet: bool = False, poll_s: float = 0.5) -> dict[str, Any]:
    """Poll a job until it ends (and its atlas is written), with progress in
    units: a bar on a terminal, a line every few seconds in a log."""
    status = client.call("GET", f"/v1/jobs/{job_id}")
    total = status["totals"]["units"]
    # A job followed halfway (cached units, one submitted elsewhere) starts
    # where it is: what was done before does not count towards the rate.
    bar = Progress(total, unit="unit", desc=f"job {job_id}", disable=quiet, decimals=1,
                   initial=round(status["progress"] * total, 1))  # fmt: skip
    final_since: float | None = None
    while True:
        t = status["totals"]
        bar.set_status(f"{status['state']}, {t['done']} done, {t['cached']} cached, {t['failed']} failed")
        bar.set_done(round(status["progress"] * total, 1))
        if status["state"] in FINAL:
            final_since = final_since or time.monotonic()
            # The atlas follows the last unit within seconds; do not wait forever for it.
            if status["atlas_key"] or status["state"] == "cancelled" or time.monotonic() - final_since > 60:
                break
        time.sleep(poll_s)
        status = client.call("GET", f"/v1/jobs/{job_id}")
    bar.close()
    return dict(status)


def report(status: dict[str, Any]) -> int:
    for f in status["failures"]:
        print(f"  failed {f['key'][:12]}: {f['error']}", file=sys.stderr)
    print(f"job {status['id']}: {status['state']}", file=sys.stderr)
    return 0 if status["state"] == "done" else 1


def cmd_status(args: argparse.Namespace) -> int:
    status = Client.from_args(args).call("GET", f"/v1/jobs/{args.job}")
    t = status["totals"]
    print(
        f"{status['id']}  {status['state']}  {status['progress']:.0%}  {status['model']} {status['layer']}  "
        f"units {t['units']}: {t['done']} done, {t['cached']} cached, {t['failed']} failed, {t['pending']} pending"
    )
    for layer in status.get("layers") or []:
        print(f"  {layer['layer']} ({layer['path']})  {layer['progress']:.0%}  units {layer['units']}: "
              f"{layer['done']} done, {layer['cached']} cached, {layer['failed']} failed, "
              f"{layer['pending']} pending")  # fmt: skip
    for f in status["failures"]:
        print(f"  failed {f['key'][:12]}: {f['error']}")
    if status.get("layers"):
        for layer in status["layers"]:
            if layer.get("atlas_url"):
                print(f"  atlas {layer['layer']}: {layer['atlas_url']}")
    elif status.get("atlas_url"):
        print(f"  atlas: {status['atlas_url']}")
    return 0


def fetch(client: Client, job_id: str, out: Path, quiet: bool = False) -> int:
    """Download every finished render (PNG and sidecar, bucket layout kept)
    and the atlas with its manifest (atlas.png + atlas.json; for a job with
    `layers`, atlases/<layer>.png + .json for each); returns the number of renders."""
    status = client.call("GET", f"/v1/jobs/{job_id}")
    n = 0
    offset: int | None = 0
    bar = Progress(status["totals"]["units"], unit="render", desc="fetch", disable=quiet)
    while offset is not None:
        page = client.call("GET", f"/v1/jobs/{job_id}/renders", params={"offset": offset, "limit": 200})
        for item in page["items"]:
            if item["png_url"]:
                client.download(item["png_url"], out / item["png"])
                client.download(item["sidecar_url"], out / item["sidecar"])
                n += 1
            bar.update(1)
        offset = page["next_offset"]
    bar.close()
    if status.get("layers") is not None:
        for layer in status["layers"]:
            if layer.get("atlas_url"):
                name = _safe_name(layer["layer"])
                client.download(layer["atlas_url"], out / "atlases" / f"{name}.png")
                client.download(layer["atlas_manifest_url"], out / "atlases" / f"{name}.json")
    elif status.get("atlas_url"):
        client.download(status["atlas_url"], out / "atlas.png")
        client.download(status["atlas_manifest_url"], out / "atlas.json")
    if n:
        _write_alias_pointers(client, status["model"], out)
    return n


def _write_alias_pointers(client: Client, model: str, out: Path) -> None:
    """The bucket's alias pointers (renders/<model>/<alias>/index.json) for the
    fetched layers, so the folder browses like the bucket and like `render --out`."""
    from service import layout
    from service.storage import write_atomically

    paths = {p.parent.parent.name for p in (out / "renders" / model).glob("*/*/*.json")}
    for layer in client.call("GET", f"/v1/models/{model}")["layers"]:
        if layer["path"] not in paths:
            continue
        for alias in layer["aliases"]:
            if alias != layer["path"]:
                key = layout.alias_index_key(model, alias)
                write_atomically(out / key, layout.alias_index(model, layer["path"], alias, layer["aliases"]))


def _safe_name(layer: str) -> str:
    """A layer name from the server as a file name: the zoo's names are
    [A-Za-z0-9_.]; anything else is not written outside `out`."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", layer) or set(layer) == {"."}:
        raise DreamfarmError(f"the server named a layer {layer[:40]!r}: not a file name")
    return layer


def cmd_fetch(args: argparse.Namespace) -> int:
    out = Path(args.out)
    n = fetch(Client.from_args(args), args.job, out)
    atlases = sorted((out / "atlases").glob("*.png")) if (out / "atlases").is_dir() else []
    with_atlas = (f" with {len(atlases)} layer atlases in atlases/" if atlases
                  else " with atlas.png" if (out / "atlas.png").exists() else "")  # fmt: skip
    print(f"fetched {n} renders into {out}{with_atlas}", file=sys.stderr)
    return 0
