"""`dreamfarm recipes`: the named recipes and their fields."""

from __future__ import annotations

import argparse
import json
from typing import Any

from service import recipes


def register(sub: Any) -> None:
    r = sub.add_parser("recipes", help="list the named recipes (lecture, lucid, maco, adversarial) and their fields")
    r.add_argument("name", nargs="?", choices=recipes.names())
    r.add_argument("--json", action="store_true", help="as JSON, the same as GET /v1/recipes")
    r.set_defaults(func=cmd_recipes)


def cmd_recipes(args: argparse.Namespace) -> int:
    listing = [r for r in recipes.listing() if args.name in (None, r["name"])]
    if args.json:
        print(json.dumps(listing, indent=1))
        return 0
    for r in listing:
        print(f"{r['name']}: {r['description']}")
        for field, value in r["fields"].items():
            print(f"    {field:16s} {json.dumps(value)}")
    return 0
