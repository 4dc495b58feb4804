from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point, in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_render_writes_pngs_sidecars_and_an_atlas(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _run("render", "--model", "efficientnet_lite0", "--layer", "logits", "--unit", "Samoyed",
             "--unit", "700", "--steps", "3", "--size", "64", "--out", str(out), "--device", "cpu")  # fmt: skip
    assert r.returncode == 0, r.stderr
    sidecars = sorted(out.glob("renders/efficientnet_lite0/_fc/*/*.json"))
    assert [p.parent.name for p in sidecars] == ["258", "700"]
    for side in sidecars:
        meta = json.loads(side.read_text())
        assert meta["key"] == side.stem
        assert (out / meta["png"]).is_file()
        assert meta["spec"]["steps"] == 3 and meta["spec"]["layer"] == "_fc"
        assert meta["label"] in ("Samoyed", "paper towel")
        assert meta["trace"] and {"activation", "prior", "objective", "step"} <= set(meta["trace"][0])
        assert {"torch", "torchvision", "python", "dreamfarm"} <= set(meta["versions"])
        assert meta["precision"] in ("float32", "bfloat16") and meta["random_weights"] is False
    manifest = json.loads((out / "atlas.json").read_text())
    assert [t["caption"] for t in manifest["tiles"]] == ["Samoyed", "paper towel"]
    assert {t["render_key"] for t in manifest["tiles"]} == {p.stem for p in sidecars}
    assert (out / "atlas.png").stat().st_size > 1000
    # stderr is a pipe here, not a terminal: plain progress lines, no bar redrawn with \r
    assert "render: complete: 6/6 img-steps in" in r.stderr and "\r" not in r.stderr, r.stderr

    # Rendering the same units again renders nothing.
    again = _run("render", "--model", "efficientnet_lite0", "--layer", "logits", "--unit", "Samoyed",
                 "--unit", "700", "--steps", "3", "--size", "64", "--out", str(out), "--device", "cpu")  # fmt: skip
    assert again.returncode == 0 and "2 already rendered" in again.stderr


def test_units_range_channels_and_random_weights(tmp_path: Path) -> None:
    code = main(["render", "--model", "alexnet", "--layer", "conv2", "--units", "0-2", "--steps", "2", "--size", "64",
                 "--random-weights", "--out", str(tmp_path), "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 0
    metas = [json.loads(p.read_text()) for p in tmp_path.glob("renders/alexnet/features.3/*/*.json")]
    assert sorted(m["spec"]["unit"] for m in metas) == [0, 1, 2]
    assert all(m["random_weights"] and m["spec"]["kind"] == "channel" for m in metas)


def test_models_lists_zoo_and_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["models", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "conv13" in out and "features.28" in out and "logits" in out


ERRORS = [
    (["--model", "vgg17", "--layer", "logits", "--unit", "1"], "unknown model 'vgg17'"),
    (["--model", "vgg16", "--layer", "conv14", "--unit", "1", "--random-weights"], "valid layers: conv1"),
    (["--model", "vgg16", "--layer", "logits", "--unit", "1000", "--random-weights"], "valid units are 0-999"),
    (["--model", "vgg16", "--layer", "logits", "--unit", "1", "--prior", "blur"], "unknown prior 'blur'"),
    (["--model", "vgg16", "--layer", "logits", "--unit", "1", "--steps", "0"], "steps"),
    (["--model", "vgg16", "--layer", "logits", "--unit", "1", "--lr", "nan"], "lr"),
    (["--model", "vgg16", "--layer", "logits", "--unit", "1"], "vgg16-397923af.pth"),
]


@pytest.mark.parametrize(("args", "message"), ERRORS)
def test_errors_are_one_line_and_exit_nonzero(
    args: list[str], message: str, tmp_path: Path, empty_torch_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["render", *args, "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.startswith("dreamfarm: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_worker_launcher_pins_one_process_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.server_cmds import gpu_ids as _gpu_ids

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert _gpu_ids("auto") == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _gpu_ids("auto") == []  # nothing visible: one CPU worker
    assert _gpu_ids("none") == [] and _gpu_ids("3") == ["0", "1", "2"] and _gpu_ids("1,3") == ["1", "3"]


def test_recipes_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listing] == ["lecture", "lucid", "vivid", "maco", "adversarial"]
    assert main(["recipes", "lucid"]) == 0
    assert "fourier" in capsys.readouterr().out


def test_render_a_recipe_with_overrides_and_samples(tmp_path: Path) -> None:
    code = main(["render", "--model", "efficientnet_lite0", "--layer", "logits", "--unit", "Samoyed", "--recipe",
                 "lucid", "--steps", "3", "--size", "64", "--samples", "2", "--transform", "jitter:4",
                 "--out", str(tmp_path), "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 0
    metas = sorted((json.loads(p.read_text()) for p in tmp_path.glob("renders/*/*/*/*.json")),
                   key=lambda m: m["spec"]["sample"])  # fmt: skip
    assert [m["spec"]["sample"] for m in metas] == [0, 1]
    assert all(m["recipe"] == "lucid" and m["spec"]["steps"] == 3 for m in metas)
    assert metas[0]["spec"]["transforms"] == [{"name": "jitter", "amount": 4.0}]
    assert metas[0]["spec"]["diversity"] == 10.0 and metas[0]["quality"]["renderer"]["target_rank"] >= 1
    assert json.loads((tmp_path / "atlas.json").read_text())["columns"] == 2


def test_adversarial_from_a_file(tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data as samples

    photo = tmp_path / "coffee.png"
    Image.fromarray(samples.coffee()).save(photo)
    out = tmp_path / "out"
    code = main(["render", "--model", "efficientnet_lite0", "--layer", "logits", "--unit", "goldfish", "--recipe",
                 "adversarial", "--epsilon", str(4 / 255), "--init-image", str(photo), "--out", str(out),
                 "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 0
    (meta,) = [json.loads(p.read_text()) for p in out.glob("renders/*/*/*/*.json")]
    assert meta["adversarial"]["result_top5"][0]["label"] == "goldfish" and meta["adversarial"]["linf_levels"] <= 4
    assert (out / "images" / meta["spec"]["init_image"]).read_bytes() == photo.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--recipe", "adversarial"], "init_image"), (["--init-image", "/nonexistent.png"], "No such file"),
     (["--transform", "shear:3"], "unknown transform 'shear'"), (["--samples", "0"], "samples")],
)  # fmt: skip
def test_recipe_errors_are_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["render", "--model", "efficientnet_lite0", "--layer", "logits", "--unit", "1", *args,
                 "--out", str(tmp_path), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
