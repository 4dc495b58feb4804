"""`dreamfarm`: the command line.

`render` and `models` use `service/` directly (no Redis, no bucket); `api`
and `worker` run the service's processes; `up` and `demo` a local stack;
`submit`, `status` and `fetch` talk to the API.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from cli import client_cmds, gallery_cmd, models_cmd, recipes_cmd, render_cmd, server_cmds, stack_cmds
from service.errors import DreamfarmError, one_line
from service.validation import describe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamfarm", description="Feature visualizations, rendered in batches.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (render_cmd, models_cmd, recipes_cmd, server_cmds, stack_cmds, client_cmds, gallery_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
