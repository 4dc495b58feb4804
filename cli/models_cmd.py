"""`dreamfarm models`: the zoo by family, one family, a search, one model's
layers, or its classes.

Everything but one model's layers is read from the registry's data
(service.zoo.catalog_generated for torchvision's and timm's networks), so it
answers without importing torch; a model's layers come from tracing it (torch,
on the meta device)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.client import add_client_args
from service.zoo import Registry
from service.zoo.registry import TIMM_PREFIX

#: Examples shown per family in the overview.
EXAMPLES = 3


def register(sub: Any) -> None:
    m = sub.add_parser(
        "models", help="list the zoo by family, or one model's layers; `models add` registers your own network",
        epilog="dreamfarm models add NAME --arch torchvision:<name>|timm:<name> --weights FILE [--classes FILE] "
               "[--local] registers your own network (`dreamfarm models add --help`); "
               "dreamfarm models remove NAME [--local] removes it",
    )  # fmt: skip
    m.add_argument("name", nargs="?", help="a model: list its layers (e.g. vgg16, swin_t, timm/convnext_tiny)")
    m.add_argument("--family", metavar="NAME", help="list one family's models (timm: timm's families)")
    m.add_argument("--search", metavar="TEXT", help="list the models whose name contains TEXT (any case)")
    m.add_argument("--classes", action="store_true", help="list class names of the logits layer")
    m.add_argument("--all", action="store_true", help="list every module, not only the aliased ones")
    m.add_argument("--local", action="store_true",
                   help="list the networks `dreamfarm models add --local` registered here")  # fmt: skip
    m.add_argument("--registered", action="store_true",
                   help="list the service's registered networks (the `up` stack, or --api/--token)")  # fmt: skip
    add_client_args(m)
    m.set_defaults(func=models)


def models(args: argparse.Namespace) -> int:
    from cli.local_models import local_registry

    if args.registered or args.api:
        return _service_registered(args)
    if args.local:
        return _local_registered()
    registry = local_registry(Registry())  # the zoo, and the networks registered here (family "registered")
    if args.name:
        return _layers(registry, args)
    if args.search is not None:
        _list(registry, registry.search(args.search))
        return 0
    if args.family:
        family = args.family.rstrip("/")
        groups = registry.families()
        if family not in groups and any(f.startswith(family + "/") for f in groups):
            _overview(registry, {f: n for f, n in groups.items() if f.startswith(family + "/")})
        else:
            _list(registry, registry.family(family))
        return 0
    bundled = [n for n in registry.names() if registry.get(n).bundled]
    groups = registry.families()
    # The bundled network first: it is the one that renders on a fresh machine.
    print(f"{', '.join(bundled)} ships pretrained; every other model reads its weights from a file "
          f"(docs/models.md). {len(registry)} models in {len(groups)} families:")  # fmt: skip
    _overview(registry, groups, collapse=TIMM_PREFIX)
    print("`dreamfarm models --family NAME` lists a family, `--search TEXT` finds a name, "
          "`dreamfarm models NAME` lists a model's layers")  # fmt: skip
    return 0


def _overview(registry: Registry, groups: dict[str, list[str]], collapse: str | None = None) -> None:
    """One line per family: its size and a few of its models. Families under
    `collapse` (timm's hundred) share one line."""
    print(f"{'family':30s} {'models':>6s}  e.g.")
    folded: dict[str, list[str]] = {}
    for family, names in groups.items():
        if collapse and family.startswith(collapse):
            folded[family] = names
            continue
        print(f"{family:30s} {len(names):6d}  {_examples(registry, names)}")
    if folded and collapse:
        count = sum(len(n) for n in folded.values())
        biggest = sorted(folded, key=lambda f: -len(folded[f]))[:EXAMPLES]
        shown = ", ".join(f"{f} ({len(folded[f])})" for f in biggest)
        print(f"{collapse + '*':30s} {count:6d}  {len(folded)} families: {shown}, …; "
              f"--family {collapse.rstrip('/')} lists them")  # fmt: skip


def _examples(registry: Registry, names: list[str]) -> str:
    tags = [f"{n} (bundled)" if registry.get(n).bundled else n for n in names[:EXAMPLES]]
    return ", ".join(tags) + (", …" if len(names) > EXAMPLES else "")


def _list(registry: Registry, names: list[str]) -> None:
    for name in names:
        e = registry.get(name)
        tag = " (bundled, pretrained)" if e.bundled else ""
        print(f"{name:44s} {e.input_size:4d}px  {e.description}{tag}")
    if not names:
        print("no model matches")


def _layers(registry: Registry, args: argparse.Namespace) -> int:
    # One model's layers come from tracing its architecture (torch, on the
    # meta device); the lists above need only the registry's data.
    from service.zoo import Architecture

    arch = Architecture(registry.get(args.name))
    if args.classes:
        for i, c in enumerate(arch.entry.classes):
            print(f"{i:4d}  {c}")
        return 0
    print(f"{arch.entry.name}: {arch.entry.description}; input {arch.size}x{arch.size}")
    width = max([len(x.path) for x in arch.layers if x.aliases or args.all] + [34])
    print(f"{'alias':10s} {'path':{width}s} {'type':22s} {'kinds':16s} {'units':>6s}  {'layout':6s} shape")
    for layer in arch.layers:
        if not layer.aliases and not args.all:
            continue
        print(f"{','.join(layer.aliases):10s} {layer.path:{width}s} {layer.module_type:22s} "
              f"{'/'.join(layer.kinds):16s} {layer.units:6d}  {layer.layout:6s} {layer.describe()}")  # fmt: skip
    if not args.all:
        print(f"({len(arch.layers)} layers in all; --all lists every module path)")
    return 0


def _local_registered() -> int:
    """The local registry's networks (`dreamfarm models add --local`)."""
    from cli.local_models import local_dir, local_manifests

    manifests = local_manifests()
    print(f"{len(manifests)} registered in {local_dir()}" + (":" if manifests else ""))
    for m in manifests.values():
        what = f"{m.arch}, {len(m.classes)} classes" + (f": {m.description}" if m.description else "")
        _registered_line(m.name, m.size, m.weights_sha256, what)
    return 0


def _service_registered(args: argparse.Namespace) -> int:
    """The registered networks the service shows this token: built-ins left out."""
    from cli.client import Client

    client = Client.from_args(args)
    shown = [m for m in client.call("GET", "/v1/models") if m.get("source") == "registered"]
    print(f"{len(shown)} registered on {client.http.base_url}" + (":" if shown else ""))
    for m in shown:
        public = " (public)" if m.get("public") else ""
        _registered_line(m["name"], m["input_size"], m.get("weights_sha256"), f"{m['description']}{public}")
    return 0


def _registered_line(name: str, size: int, sha: str | None, description: str) -> None:
    weights = f"weights {sha[:12]}…" if sha else "awaiting weights"
    print(f"{name:24s} {size:4d}px  {weights:22s} {description}")
