"""`dreamfarm render`: the service core used directly, into a local folder.

Only argparse and the light flag helpers are imported with this module (every
`dreamfarm` invocation builds this parser); the core, and torch with it, are
imported when the command runs."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.args import add_render_args, request_from_args
from cli.progress import Progress
from service import layout
from service.errors import DreamfarmError
from service.storage import LocalStore

if TYPE_CHECKING:
    import torch

    from service.batch_render import UnitOutcome
    from service.planning import LayerPlan, PlannedUnit
    from service.renderer import Renderer
    from service.spec import RenderSpec
    from service.zoo import Registry


def register(sub: Any) -> None:
    r = sub.add_parser("render", help="render units locally into a folder")
    add_render_args(r)
    r.add_argument("--batch-size", type=int, default=None, help="images per optimization (default: by device)")
    r.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    r.add_argument("--weights", default=None,
                   help="explicit weights file or s3://bucket/key (checked against its sha256)")  # fmt: skip
    r.add_argument("--out", required=True,
                   help="output folder (renders/…, atlas.png + .json; with --layers atlases/<layer>.*)")  # fmt: skip
    r.add_argument("--judge", action="append", default=[], metavar="MODEL",
                   help="also classify each render with this network, e.g. efficientnet_lite2; repeatable")  # fmt: skip
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=render)


def render(args: argparse.Namespace) -> int:
    from cli.local_models import local_registry
    from service import tuned_recipes
    from service.architectures import Architectures
    from service.batch_render import Callbacks, RenderPlan, render_into_store
    from service.contract import RenderItem
    from service.devices import default_device, device_name
    from service.planning import first_kind, plan_layers

    out = LocalStore(args.out)
    request = request_from_args(args, init_image=local_image(out, args.init_image))
    archs = Architectures(local_registry())  # the zoo and `dreamfarm models add --local`'s networks
    arch = archs.get(request.model, request.size)
    request = tuned_recipes.resolve(request, first_kind(request, arch), LocalStore(_cache_dir()),
                                    f"`dreamfarm tune --model {request.model}` makes one",
                                    weights_sha256=tuned_recipes.registered_weights(arch.entry))  # fmt: skip
    planned, layers = plan_layers(request, arch)
    say = _say(args.quiet)
    if request.several_layers:
        say(f"{arch.entry.name}: {len(layers)} layers ({_names(layers)}), {len(planned)} units")
    else:
        layer = arch.layer(layers[0].path)
        say(f"{arch.entry.name} {layer.name} ({layer.path}): {len(planned)} units")
    device = default_device(args.device)
    bar = _Progress(len(planned) * planned[0].spec.steps, args.quiet)
    items = [RenderItem(spec=p.spec, label=p.label, recipe=request.recipe) for p in planned]
    outcomes = render_into_store(items, RenderPlan(
        store=out, renderer_for=_renderers(args, archs.registry, device), verdicts=LocalStore(_cache_dir()),
        chunk_size=args.batch_size,
        raise_load_errors=True,
        callbacks=Callbacks(progress=bar.step, unit=bar.unit,
                            probing=lambda: say("checking whether bf16 is good enough here (a probe of at most a "
                                                "tenth of this job; once per model, layer, recipe and device)…"),
                            precision_note=say),
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
    if request.several_layers:  # one atlas per layer, as a job with several layers has in the bucket
        for x in layers:
            title = f"{arch.entry.name} · {x.name} · {planned[x.start].spec.steps} steps"
            if _atlas(out, planned[x.start : x.stop], title, f"atlases/{x.name}"):
                say(f"atlas: {Path(args.out) / 'atlases' / f'{x.name}.png'}")
    elif len(planned) > 1:
        _atlas(out, planned, f"{arch.entry.name} · {layer.name} · {request.steps} steps")
        say(f"atlas: {Path(args.out) / 'atlas.png'}")
    for p in planned:
        print(Path(args.out) / layout.render_png_key(p.spec))
    return 0 if all(o.ok for o in outcomes) else 1


def _renderers(args: argparse.Namespace, registry: Registry, device: torch.device) -> Callable[[RenderSpec], Renderer]:
    """One renderer per model for this run, made when the first unit needs it."""
    from cli.local_models import with_local_weights
    from service.config import Settings
    from service.renderer import Renderer, load_judges
    from service.weights_remote import weights_config
    from service.zoo.network import default_torch_home

    made: dict[tuple[str, bool], Renderer] = {}
    # A network of the local registry finds its weights there (by their sha256 name).
    weights = with_local_weights(weights_config(Settings(), path=args.weights, torch_home=default_torch_home()))

    def renderer_for(spec: RenderSpec) -> Renderer:
        key = (spec.model, spec.random_weights)
        if key not in made:
            judges = load_judges(registry, args.judge, weights, device)
            made[key] = Renderer(registry.get(spec.model), device=device, random_weights=spec.random_weights,
                                 weights=weights, judges=judges)  # fmt: skip
        return made[key]

    return renderer_for


def _atlas(out: LocalStore, planned: list[PlannedUnit], title: str, name: str = "atlas") -> bool:
    """The atlas of the rendered units (at `name`.png + .json); whether there was one."""
    from service.atlas import local_atlas

    done = [(p.spec, p.caption, p.label) for p in planned if out.exists(layout.render_sidecar_key(p.spec))]
    if done:
        local_atlas(out, done, title, name)
    return bool(done)


def _names(layers: list[LayerPlan], shown: int = 6) -> str:
    names = [x.name for x in layers]
    return ", ".join(names[:shown]) + (f", … {names[-1]}" if len(names) > shown else "")


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
    from service.images import decode_image  # torch: only when an image is given

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
    """Image-steps done out of all the job's: a bar on a terminal, lines in a log."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.progress = Progress(total, unit="img-step", desc="render", disable=quiet)

    def step(self, images: int, _step: int, _steps: int) -> None:
        self.progress.update(images)

    def unit(self, outcome: UnitOutcome) -> None:
        if outcome.status == "exists":
            self.progress.set_total(self.progress.total - outcome.spec.steps)

    def seconds(self) -> float:
        return self.progress.elapsed()

    def close(self) -> None:
        self.progress.close()
