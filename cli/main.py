"""`dreamfarm`: the command line.

`render` and `models` use `service/` directly (no Redis, no bucket); the
service commands (`api`, `worker`, `up`, `submit`, `status`, `fetch`) live in
`cli.service_commands` and are imported only when used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from service.errors import DreamfarmError, one_line
from service.validation import describe


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamfarm", description="Feature visualizations, rendered in batches.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("render", help="render units locally into a folder")
    add_render_args(r)
    r.add_argument("--batch-size", type=int, default=None, help="images per optimization (default: by device)")
    r.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    r.add_argument("--weights", default=None,
                   help="explicit weights file or s3://bucket/key (checked against its sha256)")  # fmt: skip
    r.add_argument("--out", required=True, help="output folder (renders/…, atlas.png, atlas.json)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("models", help="list the zoo, or one model's layers")
    m.add_argument("name", nargs="?")
    m.add_argument("--classes", action="store_true", help="list class names of the logits layer")
    m.add_argument("--all", action="store_true", help="list every module, not only the aliased ones")

    try:
        from cli.service_commands import register
    except ImportError:  # pragma: no cover - service extras not installed
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0) if hasattr(args, "func") else _dispatch(args)
    except DreamfarmError as exc:
        print(f"dreamfarm: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"dreamfarm: error: {describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dreamfarm: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from cli import local_commands

    if args.command == "render":
        return local_commands.render(args)
    if args.command == "models":
        return local_commands.models(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
