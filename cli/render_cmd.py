"""`dreamfarm render`: the service core used directly, into a local folder."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cli.args import add_render_args, request_from_args
from service import layout
from service.architectures import Architectures
from service.atlas import local_atlas
from service.batch_render import Callbacks, RenderPlan, UnitOutcome, render_into_store
from service.config import Settings
from service.contract import RenderItem
from service.devices import default_device, device_name
from service.errors import DreamfarmError
from service.images import decode_image
from service.planning import PlannedUnit, plan_request
from service.renderer import Renderer, load_judges
from service.spec import RenderSpec
from service.storage import LocalStore
from service.weights_remote import weights_config
from service.zoo import Registry
from service.zoo.network import default_torch_home


def register(sub: Any) -> None:
    r = sub.add_parser("render", help="render units locally into a folder")
    add_render_args(r)
    r.add_argument("--batch-size", type=int, default=None, help="images per optimization (default: by device)")
    r.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    r.add_argument("--weights", default=None,
                   help="explicit weights file or s3://bucket/key (checked against its sha256)")  # fmt: skip
    r.add_argument("--out", required=True, help="output folder (renders/…, atlas.png, atlas.json)")
    r.add_argument("--judge", action="append", default=[], metavar="MODEL",
                   help="also classify each render with this network, e.g. efficientnet_lite2; repeatable")  # fmt: skip
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=render)


def render(args: argparse.Namespace) -> int:
    out = LocalStore(args.out)
    request = request_from_args(args, init_image=local_image(out, args.init_image))
    archs = Architectures()
    arch = archs.get(request.model, request.size)
    planned = plan_request(request, arch)
    say = _say(args.quiet)
    layer = arch.layer(request.layer)
    say(f"{arch.entry.name} {layer.name} ({layer.path}): {len(planned)} units")
    device = default_device(args.device)
    bar = _Progress(len(planned) * planned[0].spec.steps, args.quiet)
    items = [RenderItem(spec=p.spec, label=p.label, recipe=request.recipe) for p in planned]
    outcomes = render_into_store(items, RenderPlan(
        store=out, renderer_for=_renderers(args, archs.registry, device), verdicts=LocalStore(_cache_dir()),
        chunk_size=args.batch_size,
        raise_load_errors=True,
        callbacks=Callbacks(progress=bar.step, unit=bar.unit,
                            probing=lambda: say("checking whether bf16 is good enough here (once per model, layer "
                                                "and device)…")),
    ))  # fmt: skip
    bar.close()
    exists = sum(o.status == "exists" for o in outcomes)
    rendered = [o for o in outcomes if o.status == "rendered"]
    if exists:
        say(f"{exists} already rendered")
    if rendered:
        say(f"rendered {len(rendered)} units in {bar.seconds():.1f}s on {device_name(device)}")
    for o in outcomes:
        if not o.ok:
            say(f"failed: unit {o.spec.unit}: {o.reason}")
    if len(planned) > 1:
        _atlas(out, planned, f"{arch.entry.name} · {layer.name} · {request.steps} steps")
        say(f"atlas: {Path(args.out) / 'atlas.png'}")
    for p in planned:
        print(Path(args.out) / layout.render_png_key(p.spec))
    return 0 if all(o.ok for o in outcomes) else 1


def _renderers(args: argparse.Namespace, registry: Registry, device: torch.device) -> Callable[[RenderSpec], Renderer]:
    """One renderer per model for this run, made when the first unit needs it."""
    made: dict[tuple[str, bool], Renderer] = {}
    weights = weights_config(Settings(), path=args.weights, torch_home=default_torch_home())

    def renderer_for(spec: RenderSpec) -> Renderer:
        key = (spec.model, spec.random_weights)
        if key not in made:
            judges = load_judges(registry, args.judge, weights, device)
            made[key] = Renderer(registry.get(spec.model), device=device, random_weights=spec.random_weights,
                                 weights=weights, judges=judges)  # fmt: skip
        return made[key]

    return renderer_for


def _atlas(out: LocalStore, planned: list[PlannedUnit], title: str) -> None:
    done = [(p.spec, p.caption, p.label) for p in planned if out.exists(layout.render_sidecar_key(p.spec))]
    if done:
        local_atlas(out, done, title)


def local_image(out: LocalStore, given: str | None) -> str | None:
    """--init-image: a file is copied into the output folder under its
    content key (the store the render reads it from); a key must be there."""
    if given is None:
        return None
    if re.fullmatch(r"[0-9a-f]{64}", given):
        if not out.exists(layout.image_key(given)):
            raise DreamfarmError(f"no image {given[:16]}… in {out.root}: give the file's path instead")
        return given
    try:
        data = Path(given).read_bytes()
    except OSError as exc:
        raise DreamfarmError(f"--init-image {given}: {exc.strerror or exc}") from None
    try:
        decode_image(data)
    except ValueError as exc:
        raise DreamfarmError(f"--init-image {given}: {exc}") from None
    key = hashlib.sha256(data).hexdigest()
    out.put(layout.image_key(key), data, "application/octet-stream")
    return key


def _say(quiet: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr)

    return say


def _cache_dir() -> Path:
    return Path(os.environ.get("DREAMFARM_CACHE") or Path.home() / ".cache" / "dreamfarm")


class _Progress:
    def __init__(self, total: int, quiet: bool) -> None:
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=total, unit="img-step", disable=quiet, file=sys.stderr,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")  # fmt: skip

    def step(self, images: int, _step: int, _steps: int) -> None:
        self.bar.update(images)

    def unit(self, outcome: UnitOutcome) -> None:
        if outcome.status == "exists":
            self.bar.total -= outcome.spec.steps
            self.bar.refresh()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def close(self) -> None:
        self.bar.close()
