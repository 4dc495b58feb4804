"""The render flags shared by `render` and `submit`, and the one request they
become (`service.request.JobRequest`, the API's body too)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from pydantic import ValidationError

from service import recipes
from service.errors import BadPrior, BadUnit, DreamfarmError
from service.request import JobRequest, PriorIn, UnitRangeIn, Units
from service.spec import PARAM_NAMES, PRIOR_NAMES, TRANSFORM_NAMES
from service.validation import describe

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def add_render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo model name (see `dreamfarm models`)")
    p.add_argument("--layer", help="layer alias (conv4, logits, …) or module path (features.28)")
    p.add_argument("--layers", metavar="L1,L2,…|all",
                   help="several layers, comma-separated, each rendering the units given, or 'all': every "
                        "aliased layer whose units are channels, and the logits (one atlas per layer)")  # fmt: skip
    p.add_argument("--unit", action="append", default=[], metavar="U", help="unit index or class name; repeatable")
    p.add_argument("--units", nargs="+", metavar="SEL", help="'all', a range like 0-15, or several units")
    p.add_argument("--kind", choices=("logit", "channel", "neuron"), help="unit kind (default: the layer's)")
    p.add_argument("--position", metavar="ROW,COL", help="neuron position in the activation map (default: centre)")
    p.add_argument("--recipe", choices=recipes.names(), default=recipes.DEFAULT_RECIPE,
                   help="a named recipe (see `dreamfarm recipes`); the flags below override its fields")  # fmt: skip
    p.add_argument("--prior", action="append", metavar="NAME[:W]",
                   help="prior term: edge_energy, tv, l2 or none, with an optional weight; repeatable "
                        "(lecture: edge_energy:1)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="optimization steps (lecture: 250, lucid: 256)")
    p.add_argument("--lr", type=float, default=None, help="Adam's learning rate (lecture: 0.1, lucid: 0.05)")
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default: the model's, 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-scale", type=float, default=None, help="std of the starting noise (or spectrum)")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default=None,
                   help="auto: bf16 where the device is fast at it and the quality guard passes")  # fmt: skip
    p.add_argument("--param", choices=PARAM_NAMES, default=None, help="parameterization (overrides the recipe's)")
    p.add_argument("--decay", type=float, default=None, help="fourier/maco: spectrum falls off as 1/f^decay")
    p.add_argument("--resize", metavar="LOW,HIGH", default=None,
                   help="the network sees the image resized by a factor in [LOW, HIGH], one per step")  # fmt: skip
    p.add_argument("--resize-axes", choices=("together", "apart"), default=None,
                   help="apart: a resize factor for the height and one for the width (the aspect changes)")  # fmt: skip
    p.add_argument("--grad-clip", type=float, default=None, metavar="NORM",
                   help="rescale each image's gradient to at most this L2 norm each step (vivid: 1)")  # fmt: skip
    p.add_argument("--transform", action="append", metavar="NAME:AMOUNT",
                   help="pad:12, jitter:8, scale:0.1, rotate:5 (in order; repeatable; replaces the recipe's); "
                        "'none' for no transforms")  # fmt: skip
    p.add_argument("--minimize", action="store_true", help="minimize the unit instead (a negative render)")
    p.add_argument("--samples", type=int, default=None, help="K diverse renders per unit (Lucid's diversity term)")
    p.add_argument("--diversity", type=float, default=None, help="weight of the diversity term (default 10 with K>1)")
    p.add_argument("--diversity-layer", default=None, help="conv layer whose Gram matrices diversity compares")
    p.add_argument("--init-image", default=None, metavar="PATH|SHA256",
                   help="start from this image (adversarial): a PNG/JPEG file, or an uploaded one's key")  # fmt: skip
    p.add_argument("--epsilon", type=float, default=None, help="adversarial: L-inf bound in [0, 1] (default 8/255)")
    p.add_argument("--stop-margin", type=float, default=None, help="stop once the target is top-1 by this logit margin")
    p.add_argument("--random-weights", action="store_true", help="random weights (benchmarks only; recorded)")


def request_from_args(args: argparse.Namespace, init_image: str | None = None) -> JobRequest:
    """The request the flags describe; `init_image` is the image's content key
    (the caller stores a file given with --init-image and passes its key)."""
    fields: dict[str, object] = {
        "model": args.model, **layers_from_args(args.layer, args.layers),
        "units": units_from_args(args.unit, args.units),
        "kind": args.kind, "recipe": args.recipe, "steps": args.steps, "lr": args.lr, "size": args.size,
        "seed": args.seed, "init_scale": args.init_scale, "precision": args.precision,
        "random_weights": args.random_weights, "batch_size": getattr(args, "batch_size", None),
        "title": getattr(args, "title", None), "samples": args.samples, "diversity": args.diversity,
        "diversity_layer": args.diversity_layer, "epsilon": args.epsilon, "stop_margin": args.stop_margin,
        "init_image": init_image, "direction": "min" if args.minimize else None,
        "grad_clip": args.grad_clip, "resize_axes": args.resize_axes,
    }  # fmt: skip
    if args.position:
        fields["position"] = parse_position(args.position)
    if args.prior:
        fields["prior"] = parse_prior(args.prior)
    if args.param or args.decay is not None:
        base = recipes.recipe(args.recipe).param
        param: dict[str, object] = {"name": args.param or base.name, "decorrelate": base.decorrelate,
                                    "decay": base.decay if args.decay is None else args.decay}  # fmt: skip
        if param["name"] == base.name:  # the recipe's own parameterization keeps its flat low frequencies
            param["flat_below"] = base.flat_below
        fields["param"] = param
    if args.resize:
        try:
            fields["resize"] = [float(v) for v in args.resize.split(",")]
        except ValueError:
            raise SystemExit(f"--resize takes LOW,HIGH (two numbers), got {args.resize!r}") from None
    if args.transform:
        fields["transforms"] = parse_transforms(args.transform)
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as exc:
        raise DreamfarmError(describe(exc)) from None


def layers_from_args(layer: str | None, layers: str | None) -> dict[str, object]:
    """--layer L, or --layers L1,L2 / --layers all: the request's `layer` or `layers`."""
    if layer is not None and layers is not None:
        raise DreamfarmError("give --layer (one layer) or --layers (several, or all), not both")
    if layer is not None:
        return {"layer": layer}
    if layers is None:
        raise DreamfarmError("give one layer with --layer L, or several with --layers L1,L2 (or --layers all)")
    if layers.strip().lower() == "all":
        return {"layers": "all"}
    names = [n.strip() for n in layers.split(",") if n.strip()]
    if not names:
        raise DreamfarmError(f"--layers takes layer names separated by commas, or 'all'; got {layers!r}")
    return {"layers": names}


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


def parse_transforms(items: Sequence[str]) -> list[dict[str, object]]:
    if items == ["none"]:
        return []
    out: list[dict[str, object]] = []
    for item in items:
        name, _, amount = item.partition(":")
        if name not in TRANSFORM_NAMES:
            raise DreamfarmError(f"unknown transform {name!r}; valid transforms: {', '.join(TRANSFORM_NAMES)}")
        try:
            out.append({"name": name, "amount": float(amount)})
        except ValueError:
            raise DreamfarmError(f"--transform takes NAME:AMOUNT, e.g. jitter:8, got {item!r}") from None
    return out


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
