"""The render flags shared by `render` and `submit`, and the one request they
become (`service.request.JobRequest`, the API's body too)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from pydantic import ValidationError

from service.errors import BadPrior, BadUnit, DreamfarmError
from service.request import JobRequest, PriorIn, UnitRangeIn, Units
from service.spec import PRIOR_NAMES
from service.validation import describe

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def add_render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo model name (see `dreamfarm models`)")
    p.add_argument("--layer", required=True, help="layer alias (conv4, logits, …) or module path (features.28)")
    p.add_argument("--unit", action="append", default=[], metavar="U", help="unit index or class name; repeatable")
    p.add_argument("--units", nargs="+", metavar="SEL", help="'all', a range like 0-15, or several units")
    p.add_argument("--kind", choices=("logit", "channel", "neuron"), help="unit kind (default: the layer's)")
    p.add_argument("--position", metavar="ROW,COL", help="neuron position in the activation map (default: centre)")
    p.add_argument("--prior", action="append", metavar="NAME[:W]",
                   help="prior term: edge_energy, tv, l2 or none, with an optional weight; repeatable "
                        "(default: edge_energy:1)")  # fmt: skip
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default: the model's, 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-scale", type=float, default=0.01, help="std of the starting noise")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="auto: bf16 where the device is fast at it and the quality guard passes")  # fmt: skip
    p.add_argument("--random-weights", action="store_true", help="random weights (benchmarks only; recorded)")


def request_from_args(args: argparse.Namespace) -> JobRequest:
    fields: dict[str, object] = {
        "model": args.model, "layer": args.layer, "units": units_from_args(args.unit, args.units),
        "kind": args.kind, "steps": args.steps, "lr": args.lr, "size": args.size, "seed": args.seed,
        "init_scale": args.init_scale, "precision": args.precision, "random_weights": args.random_weights,
        "batch_size": getattr(args, "batch_size", None), "title": getattr(args, "title", None),
    }  # fmt: skip
    if args.position:
        fields["position"] = parse_position(args.position)
    if args.prior:
        fields["prior"] = parse_prior(args.prior)
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as exc:
        raise DreamfarmError(describe(exc)) from None


def units_from_args(unit: Sequence[str], units: Sequence[str] | None) -> Units:
    if units and unit:
        raise BadUnit("give units either with --unit (repeatable) or with --units, not both")
    values = list(units or unit)
    if not values:
        raise BadUnit("no units given: use --unit U (index or class name), --units 0-15 or --units all")
    if len(values) == 1 and values[0].strip().lower() == "all":
        return "all"
    if len(values) == 1 and (m := _RANGE.match(values[0])):
        a, b = int(m.group(1)), int(m.group(2))
        if b < a:
            raise BadUnit(f"empty unit range {values[0]!r}: write low-high, e.g. 0-15")
        return UnitRangeIn(start=a, stop=b + 1)
    return [int(v) if v.strip().isdigit() else v.strip() for v in values]


def parse_position(text: str) -> list[int]:
    try:
        r, c = (int(v) for v in text.split(","))
    except ValueError:
        raise BadUnit(f"--position takes ROW,COL, got {text!r}") from None
    return [r, c]


def parse_prior(items: Sequence[str]) -> list[PriorIn]:
    """'edge_energy', 'tv:0.5', 'none'."""
    terms = []
    for item in items:
        name, _, weight = item.partition(":")
        if name not in PRIOR_NAMES:
            raise BadPrior(f"unknown prior {name!r}; valid priors: {', '.join(PRIOR_NAMES)}")
        try:
            terms.append(PriorIn(name=name, weight=float(weight) if weight else 1.0))  # type: ignore[arg-type]
        except (ValueError, ValidationError):
            raise BadPrior(f"bad prior weight in {item!r}: give a finite number >= 0, e.g. {name}:0.5") from None
    return terms
