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
import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.client import Client, add_client_args
from service.errors import DreamfarmError, one_line

if TYPE_CHECKING:
    import httpx

    from service.zoo import Registry, WeightsConfig
    from service.zoo.registered import ModelManifest, ModelRegistration

VERBS = ("add", "remove")
#: Uploads at least this large show their progress (a bar on a terminal, lines in a log).
PROGRESS_BYTES = 8 * 1024 * 1024
CHUNK = 1 << 20
MB = 1e6


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


def add_remote(client: Client, reg: ModelRegistration, weights: Path, quiet: bool = False) -> ModelManifest:
    """POST the registration, then PUT its weights, streamed from the file
    with their sha256 (the server refuses bytes that differ). A network the
    upload left without weights is removed again when this call created it."""
    import httpx

    from service.zoo.registered import ModelManifest

    size = weights.stat().st_size
    sha = _sha256(weights)
    body = {k: v for k, v in reg.model_dump(mode="json").items() if v is not None}
    created = request(client, "POST", "/v1/models", json=body)
    fresh = created.status_code == 201
    bar = _bar(size, f"upload {reg.name}", quiet)
    try:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size), "X-Content-SHA256": sha}
        done = request(client, "PUT", f"/v1/models/{reg.name}/weights", content=_chunks(weights, bar),
                       headers=headers, timeout=httpx.Timeout(600, connect=10))  # fmt: skip
    except BaseException:
        if bar is not None:
            bar.close()
        if fresh:
            _forget(client, reg.name)
        raise
    if bar is not None:
        bar.close()
    answer = done.json()  # the manifest, and its `state`
    return ModelManifest.model_validate({k: v for k, v in answer.items() if k in ModelManifest.model_fields})


def _forget(client: Client, name: str) -> None:
    """Best effort: the registration just made, whose weights were refused."""
    with contextlib.suppress(Exception):  # the upload's error is the one to report
        client.http.request("DELETE", f"/v1/models/{name}")


def request(client: Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """One call to the API; a 4xx/5xx or no answer is a one-line DreamfarmError
    (as `Client.call` says it), a 2xx the response, whatever its body."""
    import httpx

    try:
        r = client.http.request(method, path, **kw)
    except httpx.HTTPError as exc:
        why = one_line(str(exc) or type(exc).__name__)
        raise DreamfarmError(f"cannot reach the API at {client.http.base_url}: {why}") from exc
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except (ValueError, AttributeError):
            detail = r.text
        raise DreamfarmError(f"API {r.status_code}: {one_line(str(detail))}")
    return r


def add_local(reg: ModelRegistration, weights: Path) -> ModelManifest:
    """Check the registration and its weights as the service does, then file
    both in the local registry: the weights under their sha256, the manifest
    last (a half-written registration is never there)."""
    from service.storage import write_atomically
    from service.zoo import Registry
    from service.zoo.registered import check_registration, check_weights, entry_of, weights_format

    manifest = check_registration(reg, local_registry(Registry()))
    sha, nbytes = check_weights(manifest, weights)
    manifest = manifest.with_weights(sha, nbytes, weights_format(weights))
    folder = local_dir() / reg.name
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / entry_of(manifest).weights.filename
    if not dest.is_file() or _sha256(dest) != sha:
        tmp = folder / f".tmp-{os.getpid()}-{dest.name}"
        shutil.copyfile(weights, tmp)
        os.replace(tmp, dest)
    write_atomically(folder / "manifest.json", manifest.model_dump_json(indent=1).encode())
    for old in folder.iterdir():  # an earlier registration's weights
        if old.name not in ("manifest.json", dest.name) and not old.name.startswith(".tmp-"):
            old.unlink(missing_ok=True)
    return manifest


# -- the local registry, as `render` and `models` read it ----------------------


def local_dir() -> Path:
    """$DREAMFARM_MODELS_DIR, or `models/` in dreamfarm's cache."""
    given = os.environ.get("DREAMFARM_MODELS_DIR")
    if given:
        return Path(given)
    return Path(os.environ.get("DREAMFARM_CACHE") or Path.home() / ".cache" / "dreamfarm") / "models"


def local_manifests() -> dict[str, ModelManifest]:
    """name → manifest of every network in the local registry (none: {},
    without importing pydantic's models). A manifest that cannot be read
    is an error that names it."""
    paths = sorted(local_dir().glob("*/manifest.json"))
    if not paths:
        return {}
    from pydantic import ValidationError

    from service.validation import describe
    from service.zoo.registered import ModelManifest

    out: dict[str, ModelManifest] = {}
    for path in paths:
        try:
            manifest = ModelManifest.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            why = describe(exc) if isinstance(exc, ValidationError) else str(exc)
            fix = f"`dreamfarm models remove {path.parent.name} --local` removes it"
            raise DreamfarmError(f"local registry: {path} cannot be read ({one_line(why, 160)}); {fix}") from None
        out[manifest.name] = manifest
    return out


def local_registry(base: Registry | None = None) -> Registry:
    """The zoo (`base`, default a new one) with the local registry's networks."""
    from service.zoo import Registry

    base = base if base is not None else Registry()
    manifests = local_manifests()
    if not manifests:
        return base
    from service.zoo.registered import entry_of

    return base.with_entries({name: entry_of(m) for name, m in manifests.items() if m.weights_sha256})


def with_local_weights(config: WeightsConfig) -> WeightsConfig:
    """`config`, also finding the local registry's weights files (by their
    sha256 names) after every other place it looks."""
    folder = local_dir()
    if not folder.is_dir():
        return config
    remote = config.remote

    def fetch(filename: str) -> Path | None:
        for path in folder.glob(f"*/{filename}"):
            if path.is_file():
                return path
        return remote(filename) if remote is not None else None

    where = f"{folder}/<name>/" + (f" or {config.remote_name}" if remote is not None else "")
    return replace(config, remote=fetch, remote_name=where)


# -- small parts ----------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _chunks(path: Path, bar: Any) -> Iterator[bytes]:
    sent = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sent += len(chunk)
            if bar is not None:
                bar.set_done(sent / MB)
            yield chunk


def _bar(size: int, desc: str, quiet: bool) -> Any:
    if quiet or size < PROGRESS_BYTES:
        return None
    from cli.progress import Progress

    return Progress(size / MB, unit="MB", desc=desc, decimals=1)


def _preview(classes: Sequence[str], shown: int = 4) -> str:
    return ", ".join(classes[:shown]) + (", …" if len(classes) > shown else "")


def _known(manifests: dict[str, Any]) -> str:
    return f"; it has {', '.join(sorted(manifests))}" if manifests else "; it is empty"
