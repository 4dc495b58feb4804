"""`dreamfarm models`: the zoo, one model's layers, or its classes."""

from __future__ import annotations

import argparse
from typing import Any

from service.zoo import Architecture, Registry


def register(sub: Any) -> None:
    m = sub.add_parser("models", help="list the zoo, or one model's layers")
    m.add_argument("name", nargs="?")
    m.add_argument("--classes", action="store_true", help="list class names of the logits layer")
    m.add_argument("--all", action="store_true", help="list every module, not only the aliased ones")
    m.set_defaults(func=models)


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
