"""`dreamfarm`: the command line.

`render` and `models` use `service/` directly (no Redis, no bucket); `api`
and `worker` run the service's processes; `up` and `demo` a local stack;
`submit`, `status` and `fetch` talk to the API.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from service.errors import DreamfarmError, one_line
from service.validation import describe

# The modules under cli/ whose `register(sub)` adds commands, in the order
# `--help` lists them: a new command is one more name here. Every invocation
# imports all of them to build the parser, so each must import nothing heavy
# at module level (no torch, torchvision, httpx, boto3, the gallery …) and
# leave that to the command functions; tests/test_cli_imports.py checks it.
COMMAND_MODULES = (
    "render_cmd", "models_cmd", "recipes_cmd", "tune_cmd", "server_cmds", "stack_cmds", "client_cmds", "gallery_cmd",
    "env_cmd",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamfarm", description="Feature visualizations, rendered in batches.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cli.{name}").register(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line parsed. `models add|remove …` has a parser of its own
    (cli/models_add.py): `models` takes a model's name where they take a verb."""
    from cli import models_add

    given = list(sys.argv[1:] if argv is None else argv)
    return models_add.parse(given) if models_add.is_verb(given) else build_parser().parse_args(given)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DreamfarmError as exc:
        print(f"dreamfarm: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"dreamfarm: error: {describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dreamfarm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dreamfarm recipes | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
