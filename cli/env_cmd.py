"""`dreamfarm env`: the running `dreamfarm up` stack as shell exports, so the
ecosystem's own tools reach it with its keys:

    eval "$(dreamfarm env)"
    aws s3 ls s3://dreamfarm/ --endpoint-url "$AWS_ENDPOINT_URL"

Registering the command imports nothing but argparse: the stack's state is
read only when the command runs (and then without torch)."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    e = sub.add_parser("env", help="print shell exports (AWS_*, DREAMFARM_*) for the running `dreamfarm up` stack")
    e.add_argument("--dir", type=Path, default=None, help="the stack's state folder (default: as `up`'s)")
    e.set_defaults(func=cmd_env)


def cmd_env(args: argparse.Namespace) -> int:
    print(exports(stack_variables(args.dir)), end="")
    return 0


def stack_variables(root: Path | None = None) -> dict[str, str]:
    """The variables a client of the running stack needs, from its stack.json."""
    from cli.client import STACK_DIR
    from devstack import StackState, read_state
    from service.errors import DreamfarmError

    root = root if root is not None else STACK_DIR
    raw = read_state(root)
    if raw is None:
        raise DreamfarmError(f"no running stack: {root / 'stack.json'} is missing or unreadable (start `dreamfarm up`)")
    state = StackState.model_validate(raw)
    if not _alive(state.pid):
        # stack.json outlives a SIGKILLed `up`: its ports may be anyone's now.
        raise DreamfarmError(f"{root / 'stack.json'} is left from a `dreamfarm up` that is gone (pid {state.pid})")
    variables = {
        "AWS_ACCESS_KEY_ID": state.s3_access_key_id,
        "AWS_SECRET_ACCESS_KEY": state.s3_secret_access_key,
        "AWS_ENDPOINT_URL": state.s3_endpoint_url,
        "AWS_DEFAULT_REGION": state.s3_region,
        "DREAMFARM_API_URL": state.api_url,
        "DREAMFARM_API_TOKEN": state.token,
        "DREAMFARM_REDIS_URL": state.redis_url,
        "DREAMFARM_S3_ENDPOINT_URL": state.s3_endpoint_url,
        "DREAMFARM_S3_REGION": state.s3_region,
        "DREAMFARM_S3_BUCKET": state.s3_bucket,
        "DREAMFARM_S3_ACCESS_KEY_ID": state.s3_access_key_id,
        "DREAMFARM_S3_SECRET_ACCESS_KEY": state.s3_secret_access_key,
    }
    return {k: v for k, v in variables.items() if v is not None}


def exports(variables: dict[str, str]) -> str:
    """POSIX shell: one quoted export a line. An ambient AWS_SESSION_TOKEN is
    unset, because signing with it beside these keys makes the server refuse
    every request."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    if "AWS_ACCESS_KEY_ID" in variables:
        lines.append("unset AWS_SESSION_TOKEN")
    return "".join(line + "\n" for line in lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
