"""`dreamfarm models add | remove`: a network of your own, into the local
registry for `dreamfarm render`, or registered with a live service (a real
`LocalStack`: API, Redis, SeaweedFS) that the CLI finds by itself as
`dreamfarm submit` does; bad input is one line and a non-zero exit, and
leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cli.main import main
from devstack import LocalStack
from tests.service_helpers import bucket_keys, client

CLASSES = ("apple", "banana", "cherry")


def _checkpoint(path: Path, arch: str = "mobilenet_v3_small", classes: int = len(CLASSES)) -> Path:
    """A small torchvision classifier's state dict (random weights: what it computes is not the point)."""
    torch.manual_seed(0)
    save_file(torchvision.models.get_model(arch, num_classes=classes).state_dict(), str(path))
    return path


def _classes(path: Path, names: tuple[str, ...] = CLASSES) -> Path:
    path.write_text("\n".join(names[:1]) + "\n\n" + "\n".join(names[1:]) + "\n")  # a blank line: ignored
    return path


@pytest.fixture
def registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DREAMFARM_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def test_add_local_then_render_list_and_remove(
    tmp_path: Path, registry_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, classes = _checkpoint(tmp_path / "fruit.safetensors"), _classes(tmp_path / "classes.txt")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    code = main(["models", "add", "fruit", "--arch", "torchvision:mobilenet_v3_small", "--weights", str(weights),
                 "--classes", str(classes), "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25",
                 "--size", "48", "--description", "three fruits", "--local"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == "fruit" and "registered fruit" in err and "3 classes (apple, banana, cherry)" in err
    manifest = json.loads((registry_dir / "fruit" / "manifest.json").read_text())
    assert manifest["classes"] == list(CLASSES) and manifest["kwargs"] == {"num_classes": 3}
    assert (manifest["size"], manifest["mean"], manifest["std"]) == (48, [0.5] * 3, [0.25] * 3)
    assert manifest["weights_sha256"] == sha and manifest["weights_format"] == "safetensors"
    assert sorted(p.name for p in (registry_dir / "fruit").iterdir()) == [f"{sha}.safetensors", "manifest.json"]

    # `dreamfarm models` lists it (family "registered"), `--local` the registry, NAME its layers.
    assert main(["models"]) == 0
    assert any(line.split()[:3] == ["registered", "1", "fruit"] for line in capsys.readouterr().out.splitlines())
    assert main(["models", "--local"]) == 0
    listed = capsys.readouterr().out
    assert "fruit" in listed and "48px" in listed and sha[:12] in listed and "three fruits" in listed
    assert main(["models", "fruit", "--classes"]) == 0
    assert capsys.readouterr().out.split() == ["0", "apple", "1", "banana", "2", "cherry"]

    # `dreamfarm render` renders it by its name, its classes by their names.
    out_dir = tmp_path / "out"
    code = main(["render", "--model", "fruit", "--layer", "logits", "--unit", "banana", "--unit", "cherry",
                 "--steps", "2", "--out", str(out_dir), "--device", "cpu", "--precision", "float32",
                 "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    pngs = sorted(out_dir.glob("renders/fruit/*/*/*.png"))
    assert [p.parent.name for p in pngs] == ["1", "2"] and all(p.stat().st_size > 100 for p in pngs)
    side = json.loads(pngs[0].with_suffix(".json").read_text())
    assert side["label"] == "banana" and side["spec"]["size"] == 48 and side["weights_sha256"] == sha
    atlas = json.loads((out_dir / "atlas.json").read_text())
    assert [t["caption"] for t in atlas["tiles"]] == ["banana", "cherry"]

    assert main(["models", "remove", "fruit", "--local"]) == 0
    assert not (registry_dir / "fruit").exists()
    assert main(["models", "remove", "fruit", "--local"]) == 2
    assert "no network 'fruit' in the local registry" in capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dreamfarm: error: "), err
    return lines[0]


BAD_LOCAL = [
    # Two names: num_classes=2, which the three-class checkpoint does not fit.
    (["--classes", "two.txt"], "mis-shaped"),
    (["--classes", "two.txt", "--kwarg", "num_classes=3"], "has 2 names but --kwarg num_classes=3: they must agree"),
    (["--kwarg", "num_classes"], "give KEY=VALUE"),
    (["--classes", "missing.txt"], "--classes missing.txt"),
    (["--arch", "torchvision:resnet181"], "did you mean torchvision:resnet18"),
    (["--arch", "torchvision:resnet18", "--kwarg", "no_such_argument=1"], "cannot be built"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_LOCAL)
def test_bad_input_is_one_line_and_stores_nothing(
    tmp_path: Path, registry_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    weights = _checkpoint(tmp_path / "fruit.safetensors")
    _classes(tmp_path / "two.txt", CLASSES[:2])
    monkeypatch.chdir(tmp_path)
    arch = [] if "--arch" in extra else ["--arch", "torchvision:mobilenet_v3_small"]
    code = main(["models", "add", "fruit", *arch, "--weights", str(weights), *extra, "--local"])
    assert code == 2
    assert message in _one_error_line(capsys.readouterr().err)
    assert not registry_dir.exists() or not any(registry_dir.rglob("*"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = Path(tmp_path_factory.mktemp("stack"))
    with LocalStack(root, workers=0, extra_env={"DREAMFARM_CACHE": str(root / "cache")}) as s:
        yield s


def _cli(*argv: str, stack_dir: Path) -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh process that knows of no API but the
    `up` stack's state folder (DREAMFARM_STACK_DIR: `.dreamfarm/` where `up` ran)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DREAMFARM_API_URL", "DREAMFARM_API_TOKEN")}
    env["DREAMFARM_STACK_DIR"] = str(stack_dir)
    return subprocess.run([sys.executable, "-m", "cli.main", *argv], capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip


@pytest.mark.integration
def test_add_registers_and_uploads_to_the_found_stack(stack: LocalStack, tmp_path: Path) -> None:
    # A resnet18 (45 MB): large enough that the upload shows its progress.
    weights = _checkpoint(tmp_path / "fruit.safetensors", "resnet18")
    classes = _classes(tmp_path / "classes.txt")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    r = _cli("models", "add", "fruit", "--arch", "torchvision:resnet18", "--weights", str(weights), "--classes",
             str(classes), "--size", "64", "--description", "three fruits", stack_dir=stack.root)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fruit" and f"registered fruit on {stack.api_url}" in r.stderr
    # stderr is a pipe: plain progress lines, the last one the upload's end.
    assert "upload fruit: complete: 44.8/44.8 MBs in" in r.stderr and "\r" not in r.stderr, r.stderr

    with client(stack) as http:
        model = http.get("/v1/models/fruit").json()
        assert model["classes"] == list(CLASSES) and model["input_size"] == 64 and model["weights_sha256"] == sha
        assert model["source"] == "registered" and model["state"] == "ready"
        assert model["description"] == "three fruits"
        assert f"weights/{sha}" in bucket_keys(stack, "weights/")

        listed = _cli("models", "--registered", stack_dir=stack.root)
        assert listed.returncode == 0, listed.stderr
        assert "1 registered on" in listed.stdout and "fruit" in listed.stdout and sha[:12] in listed.stdout

        # The server refuses; the CLI says its one line, exits non-zero, and leaves no half registration.
        before = set(bucket_keys(stack))
        _classes(tmp_path / "two.txt", CLASSES[:2])
        bad = _cli("models", "add", "fruit2", "--arch", "torchvision:resnet18", "--weights", str(weights),
                   "--classes", str(tmp_path / "two.txt"), "--quiet", stack_dir=stack.root)  # fmt: skip
        assert bad.returncode == 2
        line = _one_error_line(bad.stderr)
        assert line.startswith("dreamfarm: error: API 422: ") and "mis-shaped" in line and "fc.weight" in line
        assert http.get("/v1/models/fruit2").status_code == 404 and set(bucket_keys(stack)) == before
        taken = _cli("models", "add", "fruit", "--arch", "torchvision:resnet18", "--weights", str(weights),
                     "--classes", str(classes), stack_dir=stack.root)  # fmt: skip
        assert taken.returncode == 2 and "API 409: " in _one_error_line(taken.stderr)
        assert http.get("/v1/models/fruit").json()["weights_sha256"] == sha  # the first registration stands

        # --api/--token instead of the stack; a wrong token is the server's 401, in one line.
        anon = _cli("models", "remove", "fruit", "--api", stack.api_url, "--token", "nope", stack_dir=tmp_path)
        assert anon.returncode == 2 and "API 401" in _one_error_line(anon.stderr)
        gone = _cli("models", "remove", "fruit", "--api", stack.api_url, "--token", stack.token, stack_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert http.get("/v1/models/fruit").status_code == 404
        assert httpx.get(f"{stack.api_url}/healthz").status_code == 200


def test_parsing_models_add_imports_nothing_heavy() -> None:
    """`models add --help` and its argument errors answer at once, as the other commands' do."""
    probe = (
        "import contextlib, io, sys\n"
        "from cli.main import parse_args\n"
        "codes = []\n"
        "for argv in (['models', 'add', '--help'], ['models', 'remove', '--help'], ['models', 'add', 'x']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            parse_args(argv)\n"
        "        except SystemExit as exc:\n"
        "            codes.append(exc.code)\n"
        "print(codes, sorted(m for m in ('torch', 'torchvision', 'httpx', 'boto3', 'tqdm') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 0, 2] []", r.stdout
