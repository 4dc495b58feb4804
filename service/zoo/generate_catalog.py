"""Writes `service/zoo/catalog_generated.py`: every classifier the installed
torchvision and timm can build, with the metadata the zoo needs before (or
without) building one: input size, mean/std, class count, weights.

Run `python -m service.zoo.generate_catalog` after upgrading torchvision or
timm; tests/test_zoo_catalog.py checks the file against what is installed.

Why a generated file rather than asking the libraries at run time:
`dreamfarm models` (and the API's validation of a model name) must answer
without importing torch, and timm imports torch (seconds on a small machine),
so the names and their metadata are kept as plain Python data here. The file
is Python rather than JSON so that it installs with the package like any
module. Generating it imports both libraries and builds the few timm
networks without a classifier on the meta device (no weights, nothing
downloaded) to read how wide their output is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("catalog_generated.py")

# Normalizations by a readable name; any other is named normN in the file.
KNOWN_NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "openai_clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

Norm = tuple[tuple[float, ...], tuple[float, ...]]


class _Norms:
    def __init__(self) -> None:
        self.names: dict[Norm, str] = {v: k for k, v in KNOWN_NORMALIZATIONS.items()}

    def name(self, mean: Sequence[float], std: Sequence[float]) -> str:
        key = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        if key not in self.names:
            self.names[key] = f"norm{len(self.names) - len(KNOWN_NORMALIZATIONS) + 1}"
        return self.names[key]

    def table(self) -> dict[str, Norm]:
        return {name: key for key, name in self.names.items()}


def torchvision_rows(norms: _Norms) -> dict[str, tuple[str, str, int, str, int]]:
    """name → (DEFAULT weights' enum name, checkpoint file, crop size, normalization, classes)."""
    import torchvision
    import torchvision.models as tvm

    rows: dict[str, tuple[str, str, int, str, int]] = {}
    # module=torchvision.models: the classifiers only (detection, video … live in submodules).
    for name in sorted(tvm.list_models(module=torchvision.models)):
        default = tvm.get_model_weights(name).DEFAULT
        t = default.transforms()
        crop = t.crop_size[0] if isinstance(t.crop_size, list | tuple) else int(t.crop_size)
        rows[name] = (default.name, default.url.rsplit("/", 1)[-1], int(crop), norms.name(t.mean, t.std),
                      len(default.meta["categories"]))  # fmt: skip
    return rows


def _output_width(name: str) -> int:
    """How wide the output of a timm network without a classifier is (its
    pooled features), from a build on the meta device."""
    import timm
    import torch

    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, num_classes=0)
    width: int = getattr(net, "head_hidden_size", None) or getattr(net, "num_features")  # noqa: B009 - untyped
    return int(width)


def timm_rows(norms: _Norms, widths: bool = True) -> dict[str, tuple[str, str, int, str, int, int]]:
    """name → (timm module, default pretrained tag, input size, normalization, classes, output width).

    `widths=False` leaves the width of networks without a classifier at 0
    (reading it builds each of them: about a minute)."""
    import timm
    from timm.models import get_pretrained_cfg

    module_of = {name: module for module in timm.list_modules() for name in timm.list_models(module=module)}
    rows: dict[str, tuple[str, str, int, str, int, int]] = {}
    for name in sorted(timm.list_models()):
        cfg = get_pretrained_cfg(name)
        assert cfg is not None, name
        _, h, w = cfg.input_size
        classes = int(cfg.num_classes or 0)
        width = classes if classes or not widths else _output_width(name)
        # dreamfarm renders square images: a non-square native input
        # (1024x768) is rendered at its larger side.
        rows[name] = (module_of[name], cfg.tag or "", int(max(h, w)), norms.name(cfg.mean, cfg.std), classes, width)
    return rows


def base_version(version: str) -> str:
    return version.split("+", 1)[0]


def collect(widths: bool = True) -> dict[str, Any]:
    import timm
    import torchvision

    norms = _Norms()
    tv = torchvision_rows(norms)
    tm = timm_rows(norms, widths)
    # The release, not a local build tag ("0.29.1+cu130"): the models are the same.
    return {"torchvision_version": base_version(torchvision.__version__),
            "timm_version": base_version(timm.__version__),
            "normalizations": norms.table(), "torchvision": tv, "timm": tm}  # fmt: skip


def render(data: dict[str, Any]) -> str:
    lines = [
        f'"""Generated by `python -m service.zoo.generate_catalog` from torchvision {data["torchvision_version"]}',
        f'and timm {data["timm_version"]}: do not edit (tests/test_zoo_catalog.py checks it)."""',
        "",
        "# fmt: off",
        "from __future__ import annotations",
        "",
        f'TORCHVISION_VERSION = "{data["torchvision_version"]}"',
        f'TIMM_VERSION = "{data["timm_version"]}"',
        "",
        "# name → (mean, std) of the input, per channel, for pixels in [0, 1]",
        "NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {",
    ]
    for name, (mean, std) in data["normalizations"].items():
        lines += [f'    "{name}": (', f"        {tuple(mean)!r},", f"        {tuple(std)!r},", "    ),"]
    lines += [
        "}",
        "",
        "# torchvision.models' classifiers: name → (DEFAULT weights' enum name, checkpoint file,",
        "# crop size, normalization, classes)",
        "TORCHVISION: dict[str, tuple[str, str, int, str, int]] = {",
    ]
    for name, row in data["torchvision"].items():
        lines.append(f'    "{name}": {tuple(row)!r},'.replace("'", '"'))
    lines += [
        "}",
        "",
        "# timm.list_models(): name → (timm module, default pretrained tag, input size,",
        "# normalization, classes (0: no classifier), output width)",
        "TIMM: dict[str, tuple[str, str, int, str, int, int]] = {",
    ]
    for name, row in data["timm"].items():
        lines.append(f'    "{name}": {tuple(row)!r},'.replace("'", '"'))
    lines += ["}", "# fmt: on", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    text = render(collect())
    args.out.write_text(text)
    print(f"wrote {args.out} ({text.count(chr(10))} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
