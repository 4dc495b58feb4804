"""`dreamfarm tune`: search a recipe for a model, kept for `--recipe tuned`.

Locally by default (into the cache `dreamfarm render` reads the tuned recipe
from), or on the service with `--remote` (POST /v1/tunes on the found
`dreamfarm up` stack, or --api/--token), following its progress."""

from __future__ import annotations

import argparse
import time
from typing import Any

from cli.client import add_client_args
from cli.progress import Progress
from service.errors import DreamfarmError


def register(sub: Any) -> None:
    t = sub.add_parser("tune", help="search a recipe for a model (used by --recipe tuned)")
    t.add_argument("--model", required=True)
    t.add_argument("--layer", default=None, help="default: the logits (a conv layer tunes its channels)")
    t.add_argument("--kind", choices=("logit", "channel", "neuron"), default=None)
    t.add_argument("--units", type=int, nargs="+", default=None, help="units to tune on (default: --count drawn)")
    t.add_argument("--count", type=int, default=4, help="units drawn with --seed when --units is not given")
    t.add_argument("--budget", type=int, default=8, help="candidate recipes rendered, the base included (cost: "
                   "budget x units x steps image-steps)")  # fmt: skip
    t.add_argument("--recipe", default=None, help="the preset to start from (default: the default recipe)")
    t.add_argument("--steps", type=int, default=None, help="steps per candidate (default: the recipe's)")
    t.add_argument("--size", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--judge", action="append", default=[], metavar="MODEL",
                   help="score class logits by how well these networks recognize the renders "
                        "(e.g. efficientnet_lite1); repeatable")  # fmt: skip
    t.add_argument("--random-weights", action="store_true", help="benchmarks and tests only: the scores mean nothing")
    t.add_argument("--device", default=None)
    t.add_argument("--weights", default=None, help="explicit weights file for the model")
    t.add_argument("--remote", action="store_true", help="run on the service (the `up` stack, or --api)")
    add_client_args(t)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=tune)


def _request(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from service.tune_run import TuneRequest
    from service.validation import describe

    fields = {"model": args.model, "layer": args.layer, "kind": args.kind, "units": args.units, "count": args.count,
              "budget": args.budget, "recipe": args.recipe, "steps": args.steps, "size": args.size, "seed": args.seed,
              "random_weights": args.random_weights or None}  # fmt: skip
    try:
        return TuneRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise DreamfarmError(describe(exc)) from None


def tune(args: argparse.Namespace) -> int:
    request = _request(args)
    if args.remote or args.api:
        return _remote(args, request)
    return _local(args, request)


def _local(args: argparse.Namespace, request: Any) -> int:
    from cli.render_cmd import _cache_dir, _renderers
    from service import tuned_recipes
    from service.architectures import Architectures
    from service.devices import default_device
    from service.storage import LocalStore
    from service.tune_run import run

    archs = Architectures()
    arch = archs.get(request.model, request.size)
    bar = Progress(request.budget, unit="candidate", desc="tune", disable=args.quiet)
    if not args.quiet:
        print(f"tuning {arch.entry.name} from recipe {request.base()}: {request.budget} candidates, "
              f"{request.image_steps()} image-steps", flush=True)  # fmt: skip

    def progress(done: int, total: int, best: float) -> None:
        bar.set_status(f"best {best:.3f}")
        bar.set_done(done)

    record = run(request, arch, _renderers(args, archs.registry, default_device(args.device)), progress)
    bar.close()
    key = tuned_recipes.save(LocalStore(_cache_dir()), record)
    _summary(record.model_dump(mode="json"), str(_cache_dir() / key))
    return 0


def _remote(args: argparse.Namespace, request: Any) -> int:
    from cli.client import Client

    client = Client.from_args(args)
    status = client.call("POST", "/v1/tunes", json=request.model_dump(mode="json", exclude_none=True))
    bar = Progress(status["total"], unit="candidate", desc="tune", disable=args.quiet, initial=status["done"])
    while status["state"] not in ("done", "failed"):
        time.sleep(1.0)
        status = client.call("GET", status["status_url"])
        if status["best_score"] is not None:
            bar.set_status(f"best {status['best_score']:.3f}")
        bar.set_done(status["done"])
    bar.close()
    if status["state"] == "failed":
        raise DreamfarmError(f"tuning run {status['id']} failed: {status['error']}")
    result = status["result"]
    _summary({**result, "model": request.model}, f"s3 bucket: {result['key']}")
    return 0


def _summary(record: dict[str, Any], where: str) -> None:
    changes = record.get("changes")
    if changes is None:
        changes = [t["change"] for t in record.get("trials", []) if t["kept"] and t["change"] != "base"]
    print(f"score {record['score']:.3f} (base {record['base_score']:.3f}, {record['metric']}); "
          f"changes: {', '.join(changes) or 'none (the base was best)'}")  # fmt: skip
    print(f"kept at {where}; use it with --recipe tuned")
