"""`dreamfarm render` and `dreamfarm models`: the service core, used directly."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from service import layout, planning, precision_cache
from service.atlas import Tile, build_atlas, manifest_bytes
from service.device_profile import default_batch_size
from service.errors import BadUnit, DreamfarmError
from service.planning import PlannedUnit, UnitSelection
from service.renderer import Renderer, device_name
from service.spec import Recipe
from service.storage import LocalStore, Store
from service.zoo import Architecture, Registry, WeightsConfig
from service.zoo.network import default_torch_home


@dataclass
class RenderRequest:
    model: str
    layer: str
    units: UnitSelection
    kind: str | None
    position: tuple[int, int] | None
    recipe: Recipe
    seed: int
    random_weights: bool


def request_from_args(args: argparse.Namespace, registry: Registry) -> tuple[RenderRequest, Architecture]:
    entry = registry.get(args.model)
    size = args.size or entry.input_size
    units_arg: list[str] = list(args.unit or [])
    if args.units:
        if units_arg:
            raise BadUnit("give units either with --unit (repeatable) or with --units, not both")
        selection: UnitSelection = planning.parse_units_arg(args.units)
    elif units_arg:
        selection = planning.parse_units_arg(units_arg) if len(units_arg) > 1 else [_unit_value(units_arg[0])]
    else:
        raise BadUnit("no units given: use --unit U (index or class name), --units 0-15 or --units all")
    position = None
    if args.position:
        try:
            r, c = (int(v) for v in args.position.split(","))
        except ValueError:
            raise BadUnit(f"--position takes ROW,COL, got {args.position!r}") from None
        position = (r, c)
    prior = planning.parse_prior(args.prior) if args.prior else None
    recipe_fields: dict[str, object] = {
        "steps": args.steps, "lr": args.lr, "size": size, "init_scale": args.init_scale, "precision": args.precision,
    }  # fmt: skip
    if prior is not None:
        recipe_fields["prior"] = prior
    recipe = Recipe(**recipe_fields)  # type: ignore[arg-type]
    if args.seed < 0:
        raise DreamfarmError("--seed must be >= 0")
    req = RenderRequest(args.model, args.layer, selection, args.kind, position, recipe, args.seed, args.random_weights)
    return req, Architecture(entry, size)


def _local_weights(weights: str | None) -> str | None:
    """--weights PATH, or s3://bucket/key fetched (once) into the local cache
    with the DREAMFARM_S3_* settings; either way checked against its sha256."""
    if not weights or not weights.startswith("s3://"):
        return weights
    from service.config import Settings
    from service.weights_remote import download, from_settings

    store, key, cache = from_settings(Settings(), weights)
    return str(download(store, key, cache))


def _unit_value(v: str) -> int | str:
    return int(v) if v.strip().isdigit() else v


def plan_request(req: RenderRequest, arch: Architecture) -> list[PlannedUnit]:
    return planning.plan(
        arch, layer=req.layer, units=req.units, recipe=req.recipe, kind=req.kind, seed=req.seed,
        random_weights=req.random_weights, position=req.position,
    )  # fmt: skip


def write_atlas(store: Store, planned: list[PlannedUnit], title: str) -> tuple[str, str]:
    tiles = [
        Tile(store.get(layout.render_png_key(p.spec)), p.caption, p.spec.unit, p.spec.key(), p.label) for p in planned
    ]
    png, manifest = build_atlas(tiles, title=title)
    store.put("atlas.png", png, "image/png")
    store.put("atlas.json", manifest_bytes(manifest), "application/json")
    return "atlas.png", "atlas.json"


def render(args: argparse.Namespace) -> int:
    registry = Registry()
    req, arch = request_from_args(args, registry)
    planned = plan_request(req, arch)
    store = LocalStore(args.out)
    todo = [p for p in planned if not store.exists(layout.render_sidecar_key(p.spec))]
    cached = len(planned) - len(todo)
    say = (lambda *_a, **_k: None) if args.quiet else (lambda *a, **k: print(*a, file=sys.stderr, **k))
    layer = arch.layer(req.layer)
    say(f"{arch.entry.name} {layer.name} ({layer.path}): {len(planned)} units, {cached} already rendered")

    if todo:
        device = torch.device(args.device) if args.device else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))  # fmt: skip
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DreamfarmError("--device cuda asked for, but no CUDA device is visible")
        weights = WeightsConfig(path=_local_weights(args.weights), torch_home=default_torch_home())
        renderer = Renderer(arch.entry, device=device, random_weights=req.random_weights, weights=weights,
                            precision=req.recipe.precision)  # fmt: skip
        _decide_precision(renderer, todo, say)
        batch_size = args.batch_size or default_batch_size(device, req.recipe.size)
        groups = planning.batches([p.spec for p in todo], batch_size)
        labels = {p.spec.key(): p.label for p in todo}
        steps = req.recipe.steps
        t0 = time.perf_counter()
        bar = tqdm(total=len(todo) * steps, unit="img-step", disable=args.quiet, file=sys.stderr,
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")  # fmt: skip
        done = 0
        for group in groups:
            bar.set_postfix_str(f"units {done + 1}-{done + len(group)} of {len(todo)}")

            def progress(step: int, total: int, n: int = len(group)) -> None:
                bar.update(n)

            result = renderer.render(group, progress)
            renderer.store_result(store, group, result, [labels[s.key()] for s in group])
            done += len(group)
        bar.close()
        say(f"rendered {len(todo)} units in {time.perf_counter() - t0:.1f}s on {device_name(device)} "
            f"({renderer.resolved_precision(todo[0].spec)}, batch {batch_size})")  # fmt: skip
    if len(planned) > 1:
        title = f"{arch.entry.name} · {layer.name} · {req.recipe.steps} steps"
        write_atlas(store, planned, title)
        say(f"atlas: {Path(args.out) / 'atlas.png'}")
    for p in planned:
        print(Path(args.out) / layout.render_png_key(p.spec))
    return 0


def _decide_precision(renderer: Renderer, todo: list[PlannedUnit], say: object) -> None:
    """For 'auto': reuse a cached bf16 verdict, else run the guard once."""
    from service.precision import bfloat16_is_fast

    if renderer.precision != "auto" or not bfloat16_is_fast(renderer.device):
        return
    spec = todo[0].spec
    dname = device_name(renderer.device)
    report = precision_cache.load(spec.model, spec.layer, dname, spec.random_weights)
    if report is None:
        assert callable(say)
        say("checking whether bf16 is good enough for this model (once per model, layer and device)…")
        probe = [p.spec.model_copy(update={"steps": 48, "size": min(spec.size, 128)}) for p in todo[:4]]
        report = renderer.run_guard(probe)
        precision_cache.save(spec.model, spec.layer, dname, spec.random_weights, report)
    renderer.guard_report = report


def models(args: argparse.Namespace) -> int:
    registry = Registry()
    if not args.name:
        for name in registry.names():
            e = registry.get(name)
            tag = " (bundled, pretrained)" if e.bundled else ""
            print(f"{name:22s} {e.description}{tag}")
        return 0
    arch = Architecture(registry.get(args.name))
    if args.classes:
        for i, c in enumerate(arch.entry.classes):
            print(f"{i:4d}  {c}")
        return 0
    print(f"{arch.entry.name}: {arch.entry.description}; input {arch.size}x{arch.size}")
    print(f"{'alias':10s} {'path':34s} {'type':18s} {'kinds':16s} {'units':>6s}  shape")
    for layer in arch.layers:
        if not layer.aliases and not args.all:
            continue
        print(f"{','.join(layer.aliases):10s} {layer.path:34s} {layer.module_type:18s} {'/'.join(layer.kinds):16s} "
              f"{layer.units:6d}  {'x'.join(map(str, layer.shape))}")  # fmt: skip
    if not args.all:
        print(f"({len(arch.layers)} layers in all; --all lists every module path)")
    return 0
