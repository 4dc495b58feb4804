"""`dreamfarm models add | remove`: your own network, registered with the
service (`POST /v1/models`, then `PUT /v1/models/{name}/weights`) or, with
`--local`, in a local registry folder that `dreamfarm render` and
`dreamfarm models` read.

    dreamfarm models add NAME --arch torchvision:<name>|timm:<name> --weights FILE
        [--classes FILE] [--mean M M M --std S S S --size N] [--kwarg KEY=VALUE ...]
        [--description TEXT] [--public] [--local] [--api URL --token T]
    dreamfarm models remove NAME [--local] [--api URL --token T]

`models` lists the zoo and takes a model's name as its first argument, so
`add` and `remove` are verbs cli.main routes here before the main parser
runs (a registered network called `add` or `remove` is listed with
`dreamfarm models --local` or `--registered`, not by name).

The local registry is `$DREAMFARM_MODELS_DIR`, by default the `models/`
folder of dreamfarm's cache (`$DREAMFARM_CACHE`, else `~/.cache/dreamfarm`):
one folder per network, `<name>/manifest.json` (a `ModelManifest`, written
last: a network is registered iff it is there) beside its weights,
`<name>/<sha256>.safetensors` (or `.pt`), the file name `entry_of` gives
them. A network there is checked by the same functions as the service's
(service.zoo.registered), so what `--local` accepts the service accepts.

Only argparse and the light client helpers are imported with this module;
pydantic's manifest models with a command, torch when a network is checked
(`--local`), httpx when the service is asked.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.client import Client, add_client_args
from cli.local_models import add_local, local_dir, local_manifests
from cli.models_remote import MB, add_remote, request
from service.errors import DreamfarmError

if TYPE_CHECKING:
    from service.zoo.registered import ModelRegistration

VERBS = ("add", "remove")
#: Uploads at least this large show their progress (a bar on a terminal, lines in a log).


def is_verb(argv: Sequence[str]) -> bool:
    """Whether argv is `models add …` or `models remove …`."""
    return len(argv) >= 2 and argv[0] == "models" and argv[1] in VERBS


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """`models add|remove …` (argv as given to `dreamfarm`) parsed."""
    return build_parser(argv[1]).parse_args(list(argv[2:]))


def build_parser(verb: str) -> argparse.ArgumentParser:
    if verb == "add":
        p = argparse.ArgumentParser(
            prog="dreamfarm models add",
            description="Register your own network: with the service (the local `dreamfarm up` stack, "
            "--api/--token or $DREAMFARM_API_URL), or with --local for `dreamfarm render`.",
        )
        p.add_argument("name", help="its name: lower case, digits and _, starting with a letter (at most 48)")
        p.add_argument("--arch", required=True, metavar="torchvision:NAME|timm:NAME",
                       help="the architecture, e.g. torchvision:resnet18 or timm:vit_tiny_patch16_224")  # fmt: skip
        p.add_argument(
            "--weights",
            required=True,
            metavar="FILE",
            help="its state dict: .safetensors, or a file torch.load reads with weights_only=True",
        )
        p.add_argument("--classes", metavar="FILE",
                       help="class names, one a line (blank lines ignored); their count is num_classes "
                            "unless --kwarg num_classes=N says it (they must agree); default: class 0, …")  # fmt: skip
        p.add_argument("--mean", type=float, nargs=3, metavar="M", help="per-channel mean (default: the arch's)")
        p.add_argument("--std", type=float, nargs=3, metavar="S", help="per-channel std (default: the arch's)")
        p.add_argument("--size", type=int, help="input size in pixels (default: the arch's)")
        p.add_argument("--kwarg", action="append", default=[], metavar="KEY=VALUE",
                       help="a constructor argument, e.g. num_classes=4 or drop_rate=0.1; repeatable")  # fmt: skip
        p.add_argument("--description", default="", help="shown in listings and the gallery")
        p.add_argument("--public", action="store_true", help="every tenant of the service may see and render it")
        p.add_argument(
            "--local",
            action="store_true",
            help=f"into the local registry ({local_dir()}) for `dreamfarm render`, not the service",
        )
        p.add_argument("--quiet", action="store_true", help="no upload progress")
        add_client_args(p)
        p.set_defaults(func=cmd_add)
    elif verb == "remove":
        what = "Remove a registered network (the service refuses while jobs of it are queued or running)."
        p = argparse.ArgumentParser(prog="dreamfarm models remove", description=what)
        p.add_argument("name")
        p.add_argument("--local", action="store_true", help=f"from the local registry ({local_dir()})")
        add_client_args(p)
        p.set_defaults(func=cmd_remove)
    else:
        raise ValueError(verb)
    return p


# -- the registration the flags describe --------------------------------------


def registration_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The body of `POST /v1/models` (a `ModelRegistration`) from the flags."""
    kwargs = dict(parse_kwarg(k) for k in args.kwarg)
    fields: dict[str, Any] = {"name": args.name, "arch": args.arch, "description": args.description,
                              "public": args.public}  # fmt: skip
    if args.classes:
        classes = read_classes(args.classes)
        given = kwargs.get("num_classes")
        if given is None:
            kwargs["num_classes"] = len(classes)
        elif given != len(classes):
            raise DreamfarmError(f"--classes {args.classes} has {len(classes)} names but --kwarg num_classes={given}: "
                                 "they must agree (or leave num_classes out: the class list gives it)")  # fmt: skip
        fields["classes"] = classes
    fields["kwargs"] = kwargs
    for name in ("mean", "std", "size"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return fields


def parse_kwarg(text: str) -> tuple[str, Any]:
    """KEY=VALUE → (key, value): a number, true/false, none/null, or else the text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise DreamfarmError(f"--kwarg {text!r}: give KEY=VALUE, e.g. num_classes=4")
    value: Any
    if raw.strip().lower() in ("none", "null"):
        value = None
    elif raw.strip() in ("True", "False"):
        value = raw.strip() == "True"
    else:
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if isinstance(value, list | dict):
            raise DreamfarmError(f"--kwarg {text!r}: only a number, true/false, none or text can be given")
    return key.strip(), value


def read_classes(path: str) -> list[str]:
    """One class name a line, stripped; blank lines ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DreamfarmError(f"--classes {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DreamfarmError(f"--classes {path}: not a UTF-8 text file") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DreamfarmError(f"--classes {path}: no class names in it (one a line)")
    return names


def _registration(args: argparse.Namespace) -> ModelRegistration:
    from service.zoo.registered import registration_from

    return registration_from(registration_fields(args))


def _weights_file(given: str) -> Path:
    path = Path(given)
    if not path.is_file():
        raise DreamfarmError(f"--weights {given}: no such file")
    return path


# -- add / remove --------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    weights = _weights_file(args.weights)
    reg = _registration(args)  # refused here, before anything is sent or stored
    if args.local:
        manifest, where = add_local(reg, weights), f"in {local_dir()}"
    else:
        client = Client.from_args(args)
        manifest, where = add_remote(client, reg, weights, args.quiet), f"on {client.http.base_url}"
    print(f"registered {manifest.name} {where}: {manifest.arch}, {len(manifest.classes)} classes "
          f"({_preview(manifest.classes)}), {manifest.size} px, weights {(manifest.weights_sha256 or '')[:12]}… "
          f"({(manifest.weights_bytes or 0) / MB:.1f} MB)", file=sys.stderr)  # fmt: skip
    print(manifest.name)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    if args.local:
        folder = local_dir() / args.name
        if not (folder / "manifest.json").is_file():
            raise DreamfarmError(f"no network {args.name!r} in the local registry {local_dir()}"
                                 f"{_known(local_manifests())}")  # fmt: skip
        shutil.rmtree(folder)
        print(f"removed {args.name} from {local_dir()}", file=sys.stderr)
        return 0
    request(Client.from_args(args), "DELETE", f"/v1/models/{args.name}")
    print(f"removed {args.name}", file=sys.stderr)
    return 0


# -- small parts ----------------------------------------------------------------


def _preview(classes: Sequence[str], shown: int = 4) -> str:
    return ", ".join(classes[:shown]) + (", …" if len(classes) > shown else "")


def _known(manifests: dict[str, Any]) -> str:
    return f"; it has {', '.join(sorted(manifests))}" if manifests else "; it is empty"
