"""dreamfarm against its peers: torch-dreams, Lucent and Horama, side by side.

Installs the peers from PyPI into a folder of their own (`bench/.peers/`,
`pip install --target --no-deps`: never into the project's environment, never
another torch), renders the same ImageNet classes of EfficientNet-Lite0's
logits with each peer's own documented default recipe and with each
dreamfarm recipe named in `--recipes` (through `service.renderer.Renderer`,
the code path of `dreamfarm render`), then judges every saved 8-bit PNG the
same way: EfficientNet-Lite0/1/2, each at its own input size with its own
preprocessing (top-1 and mean p(true)), plus the image's high-frequency
energy. Writes a JSON, a section of docs/benchmarks.md and a sheet (one row
per renderer, one column per class).

Every renderer optimizes the same function: the peers get a module that
takes pixels in [0, 1] and applies Lite0's own preprocessing (TF-Lite
scaling) before the network, and each is told its images are pixels.

    python bench/peers.py --classes 2 --steps 8 --horama-classes 1 --horama-steps 4   # smoke
    python bench/peers.py --classes 16 --seed 20261203 --recipes lucid,maco \\
        --write docs/benchmarks.md --json docs/results/peers_cpu.json --sheet docs/images/peers.png

The held-out sample: `bench.quality.sample_classes(n, seed)` with seed
20261203, the first seed from 20261202 on whose 16-class sample (and so its
8-class one, its first 8 draws) shares no class with the samples the recipes
were measured on in docs/benchmarks.md (seeds 1127 and 20261127): 45, 87, 95,
128, 133, 179, 277, 316, 317, 372, 549, 556, 648, 869, 901, 917. Whoever
tunes a recipe must not tune on these.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw, ImageFont
from quality import JUDGES, _specs, sample_classes

from bench_report import machine, write_section
from service import quality, recipes
from service.contract import RenderItem
from service.image_stats import looks
from service.images import png_bytes
from service.renderer import Renderer, load_judges
from service.spec import RenderSpec
from service.storage import LocalStore
from service.zoo import Preprocessing, Registry, WeightsConfig

ROOT = Path(__file__).resolve().parent
PEERS_DIR = ROOT / ".peers"
MODEL = "efficientnet_lite0"
JUDGE_MODELS = [MODEL, *JUDGES]
HELD_OUT_SEED = 20261203

# What goes into bench/.peers: the three peers, and only the non-torch
# packages they import at import time and use (read from their METADATA and
# source): kornia (Lucent's jitter and rotation; Lucent pins kornia<=0.4.1),
# decorator (Lucent's objectives), einops (imported by Horama's
# __init__ through feature_accentuation), dreamlens (the file of MaCo's ImageNet
# magnitude spectrum: Horama downloads it from a URL this machine cannot reach).
# numpy, pillow, tqdm, torch and torchvision come from the project's own
# environment; --no-deps keeps pip from pulling anything else.
PACKAGES = {
    "torch-dreams": "4.0.0",
    "torch-lucent": "0.1.8",
    "horama": "0.3.0",
    "kornia": "0.4.1",
    "decorator": "5.3.1",
    "einops": "0.8.2",
    "dreamlens": "0.1.1",
}
SPECTRUM = "dreamlens/data/clean_decorrelated.npy"
SPECTRUM_SHA256 = "a4810ea049ef9a0fe4e3f26660188e53222281879b333e8fd61377f7491aafc8"
# Imported by the peers at import time, used only to display or for code
# paths not run here: stubbed in sys.modules (nothing written anywhere), only
# when the real module is not installed. IPython: Lucent's `show`; matplotlib:
# Horama's `plot_maco`; cv2 (opencv-python): torch-dreams' custom-image and
# masked-image params (this script uses its AutoImageParam only).
STUBS = ["IPython", "IPython.display", "matplotlib", "matplotlib.pyplot", "cv2"]

PEER_NAMES = ["torch-dreams", "lucent", "horama"]
PEER_RECIPES = {
    "torch-dreams": "Fourier (1/f^1.5, colour decorrelated, sigmoid), AdamW lr 9e-3, random affine ±15° + "
    "random resize 0.5–1.2 per axis, grad-norm clip 1",
    "lucent": "`render_vis`, fft + decorrelate (1/f, sigmoid), standard transforms, Adam lr 0.05",
    "horama": "MaCo: ImageNet magnitude spectrum, phase only, NAdam lr 1.0, six 224-px crops per step of a "
    "1280-px canvas",
}

WHAT_THE_PEERS_DO = """\
**What the peers do** (read from their installed source, `bench/.peers/`).
*torch-dreams 4.0.0* (`Dreamer.render` with its `AutoImageParam`): the parameter is a
(1, 3, H, W) tensor from N(0, 0.01²) (numpy's generator), read as the real and
imaginary parts of an H × W/2 half-spectrum (the Nyquist column dropped); each
coefficient is scaled by 1/max(f^1.5, 1/(max(H, W)·√½)) (`decay_power=0.75` on
f², frequencies in units of √2 cycles/px), inverse `irfft2` with `norm="ortho"`
(no Lucid divisor of 4), Lucid's colour-correlation matrix (its √-SVD, normalized
by its largest column norm), a sigmoid → pixels, then ImageNet normalization
(here undone by `set_custom_normalization`, see above). Per step, for the whole
batch: `RandomAffine(degrees=15, translate=(0, 0))` (a rotation in U(±15°),
nearest-neighbour, its default; fill 0 in normalized space, i.e. ImageNet's mean colour), then a bilinear resize by
independent factors U(0.5, 1.2) for height and width (the network sees 112–268
px, aspect ratio changing), then the normalization. Loss: −mean of the hooked
layer (here `−logit[unit]`). `torch.nn.utils.clip_grad_norm_(param, 1.0)` every
step, **AdamW lr 9e-3, weight decay 0**, `iters=120` by default (256 here). The
saved image is the sigmoid output through `ToPILImage` (×255, truncated).
*Lucent 0.1.8* (`render_vis` with `param.image(224, fft=True, decorrelate=True)`):
a real+imaginary spectrum from N(0, 0.01²) (torch), scaled by
1/max(f, 1/max(H, W)) (decay 1), `irfftn` with `norm="ortho"`, divided by 4
(Lucid's constant), the same colour matrix, a sigmoid → pixels. Per step, one
draw for the batch, in order: pad 12 px with constant 0.5, jitter 0–7 px
(kornia `translate`, canvas kept), scale by one of 0.90, 0.92, …, 1.10
(bilinear, `align_corners=True`), rotate by one of −10…10° (integers, 0 six
times as likely; kornia `warp_affine`, zero fill), jitter 0–3 px; then
ImageNet normalization (`preprocess=True`; off here, the module does TF-Lite's).
Loss `−logit[unit]` (objective `"layer:unit"`). **Adam lr 0.05**, no gradient
normalization or clipping, 512 steps by default (`thresholds=(512,)`; 256 here).
The saved image is the sigmoid output ×255, truncated to uint8 (its `export`).
*Horama 0.3.0* (`maco`): a random phase (3, 1280, 641) from N(0, 1) and a fixed
magnitude, MaCo's ImageNet spectrum (3, 512, 257) resized bilinearly with
antialiasing to the canvas' spectrum; per step the phase is standardized
(zero mean, unit std), cos/sin × magnitude, `irfft2`, standardized, the same
colour matrix as the others (written out transposed), a sigmoid scaled to `values_range` (default
(−2.5, 2.5), a torchvision-normalized input; (0, 1) here so that it is pixels).
Per step: 6 crops (`roi_align` to 448 px, then bicubic antialiased to 224),
centres 0.5 + N(0, 0.15²) of the canvas, side U(0.25, 0.30) of it (the code
adds `box_size[1]` to the drawn width, so not the documented 0.20–0.25), plus
N(0, 0.05²) and U(−0.025, 0.025) noise; loss −mean over the 6 crops. **NAdam
lr 1.0**, no clipping, 1000 steps by default. Its display (`plot_maco`) clips the
image to its 1st–99th percentiles and stretches it to [0, 1], overlaid with a
transparency map from accumulated |gradient|; the PNG saved here is that
clipped and stretched image without the transparency, at 1280 px.
"""


# ── installing the peers ─────────────────────────────────────────────────────


def _dist_info(target: Path, name: str, version: str) -> Path:
    return target / f"{name.replace('-', '_')}-{version}.dist-info"


def install_peers(target: Path = PEERS_DIR) -> None:
    """pip install --target --no-deps, once; checks that no torch came with them."""
    missing = [f"{n}=={v}" for n, v in PACKAGES.items() if not _dist_info(target, n, v).is_dir()]
    if missing:
        print(f"installing into {target}: {' '.join(missing)}", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), *missing]
        subprocess.run(cmd, check=True)
    for pulled in ("torch", "torchvision"):
        if (target / pulled).exists():
            raise SystemExit(f"{target / pulled} exists: the peers' folder must not hold another {pulled}")
    import hashlib

    digest = hashlib.sha256((target / SPECTRUM).read_bytes()).hexdigest()
    if digest != SPECTRUM_SHA256:
        raise SystemExit(f"{target / SPECTRUM}: sha256 {digest}, expected {SPECTRUM_SHA256}")


def _stub(name: str) -> types.ModuleType:
    mod = types.ModuleType(name, f"bench/peers.py stub: {name} is only displayed with, not installed")

    def missing(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise RuntimeError(f"{name}.{attr}: {name} is a stub in bench/peers.py (display only)")

    mod.__getattr__ = missing  # type: ignore[method-assign]
    return mod


def use_peers(target: Path = PEERS_DIR) -> None:
    """Put the peers' folder on sys.path (after the project's environment) and
    stub the display-only modules they import."""
    real = {n.split(".")[0] for n in STUBS if importlib.util.find_spec(n.split(".")[0]) is not None}
    for name in STUBS:
        if name.split(".")[0] not in real and name not in sys.modules:  # a real one is used as it is
            sys.modules[name] = _stub(name)
            if "." in name:
                parent, child = name.rsplit(".", 1)
                setattr(sys.modules[parent], child, sys.modules[name])
    if str(target) not in sys.path:
        sys.path.append(str(target))


# ── the function every renderer optimizes ────────────────────────────────────


class PixelsToLogits(nn.Module):
    """Pixels in [0, 1] → Lite0's logits, through Lite0's own preprocessing."""

    def __init__(self, net: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.net = net
        self.preprocessing = preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocessing.to_input(x))  # type: ignore[no-any-return]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_uint8(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


# ── the peers, each with its own defaults ────────────────────────────────────
# Each function renders one class, saves the PNG the way the peer saves (or
# shows) its image, and returns the seconds of the peer's call (its
# optimization loop, with its parameter set-up), not the saving.


def run_torch_dreams(model: PixelsToLogits, unit: int, steps: int, size: int, path: Path) -> float:
    from torch_dreams import Dreamer

    dreamer = Dreamer(model, quiet=True, device="cpu")
    # torch-dreams feeds ImageNet-normalized images; its documented hook for
    # another normalization undoes that (back to pixels, clamped to [0, 1])
    # and applies this transform instead: identity, since `model` takes pixels.
    dreamer.set_custom_normalization(nn.Identity())
    t = time.perf_counter()
    param = dreamer.render(layers=[model.net._fc], width=size, height=size, iters=steps,
                           custom_func=lambda outs: -outs[0][:, unit].mean())  # fmt: skip
    seconds = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    param.save(str(path))  # its own saving: ToPILImage of the sigmoid output
    return seconds


def run_lucent(model: PixelsToLogits, unit: int, steps: int, size: int, path: Path) -> float:
    from lucent.optvis import param, render

    # render_vis hooks every module of the model and never removes the hooks:
    # a fresh copy per call keeps them from piling up over the classes.
    model = copy.deepcopy(model)
    t = time.perf_counter()
    images = render.render_vis(
        model, f"net__fc:{unit}", lambda: param.image(size, fft=True, decorrelate=True), thresholds=(steps,),
        preprocess=False, progress=False, show_image=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t
    save_uint8((images[-1][0] * 255).astype(np.uint8), path)  # as its `export`: ×255, truncated
    return seconds


def run_horama(model: PixelsToLogits, unit: int, steps: int, canvas: int, path: Path) -> float:
    import horama.maco_fv as maco_fv
    from horama import maco
    from horama.plots import clip_percentile, normalize

    maco_fv.MACO_SPECTRUM_FILENAME = str(PEERS_DIR / SPECTRUM)  # its file, from dreamlens (sha256 checked)
    t = time.perf_counter()
    image, _alpha = maco(lambda x: torch.mean(model(x)[:, unit]), total_steps=steps, image_size=canvas,
                         values_range=(0.0, 1.0), device="cpu")  # fmt: skip
    seconds = time.perf_counter() - t
    shown = normalize(clip_percentile(image.detach().permute(1, 2, 0).numpy(), 1.0))  # plot_maco's image
    save_uint8((shown * 255).round().astype(np.uint8), path)
    return seconds


PEER_RUNS: dict[str, Callable[[PixelsToLogits, int, int, int, Path], float]] = {
    "torch-dreams": run_torch_dreams,
    "lucent": run_lucent,
    "horama": run_horama,
}


def render_peer(name: str, model: PixelsToLogits, classes: list[int], steps: int, size: int, args: argparse.Namespace
                ) -> dict[str, Any]:  # fmt: skip
    loop_s, cpu_s, done = 0.0, 0.0, []
    for unit in classes:
        png = args.out / name / f"{unit}.png"
        record = png.with_suffix(".json")  # the PNG's settings and seconds: --resume reuses a finished class
        want = {"seed": args.render_seed, "steps": steps, "size": size, "threads": args.threads}
        old = json.loads(record.read_text()) if record.exists() and png.exists() else None
        if (args.resume or args.judge_only) and old and {k: old.get(k) for k in want} == want:
            s, cpu = float(old["seconds"]), old.get("cpu_seconds")
            print(f"{name}: class {unit}: kept from an earlier run ({s:.1f}s)", flush=True)
        elif args.judge_only:
            continue
        else:
            seed_all(args.render_seed * 1000 + unit)
            c = time.process_time()  # CPU time of all its threads: steadier than the wall on a busy machine
            s = PEER_RUNS[name](model, unit, steps, size, png)
            cpu = time.process_time() - c
            record.write_text(json.dumps({**want, "seconds": s, "cpu_seconds": cpu}) + "\n")
            print(f"{name}: class {unit} in {s:.1f}s", flush=True)
        loop_s += s
        cpu_s = cpu_s + cpu if cpu is not None and cpu_s is not None else None
        done.append(unit)
    if not done:
        raise RuntimeError(f"no class rendered by {name} under {args.out / name}")
    classes = done
    what = "optimization loop only (the peer's render call), one image per call"
    if name == "horama":
        what += f"; one image-step = 6 crops of a {size}-px canvas"
    return {"kind": "peer", "version": PACKAGES["torch-lucent" if name == "lucent" else name],
            "recipe": PEER_RECIPES[name], "classes": classes, "steps": steps, "size": size, "loop_s": loop_s,
            "img_steps_per_s": len(classes) * steps / loop_s, "includes": what,
            "cpu_s_per_img_step": cpu_s / (len(classes) * steps) if cpu_s is not None else None}  # fmt: skip


# ── dreamfarm's recipes ──────────────────────────────────────────────────────


def startup_seconds() -> float:
    """A fresh interpreter importing what `dreamfarm render` needs to render."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, service.renderer"], check=True)
    return time.perf_counter() - t


def render_dreamfarm(name: str, classes: list[int], args: argparse.Namespace, startup_s: float) -> dict[str, Any]:
    fields = {"size": args.size, "seed": args.render_seed, "precision": args.precision}
    specs = [RenderSpec.model_validate({**s.model_dump(), **fields}) for s in _specs(name, classes, args.steps)]
    store = LocalStore(args.out / "store")
    t, c = time.perf_counter(), time.process_time()
    renderer = Renderer(Registry().get(MODEL), device=torch.device("cpu"))  # the network, loaded as a command does
    optimize_s, saved = 0.0, []
    for start in range(0, len(specs), args.batch):
        part = specs[start : start + args.batch]
        rendered = renderer.render(part)
        optimize_s += rendered.result.timings["optimize_s"]
        for i, spec in enumerate(part):
            renderer.store_one(store, rendered, i, RenderItem(spec=spec, recipe=name))
            saved.append((spec.unit, rendered.result.display[i]))
        done = f"classes {start}-{start + len(part) - 1} in {time.perf_counter() - t:.0f}s"
        print(f"dreamfarm {name}: {done}", flush=True)
    whole_s = time.perf_counter() - t + startup_s
    cpu_s = time.process_time() - c
    for unit, rgb in saved:  # the same bytes as the store's PNG, in the peers' layout
        path = args.out / f"dreamfarm-{name}" / f"{unit}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(rgb))
    img_steps = len(classes) * specs[0].steps
    return {
        "kind": "dreamfarm", "recipe": name, "recipe_fields": recipes.recipe(name).model_dump(mode="json"),
        "classes": classes, "steps": specs[0].steps, "size": args.size, "whole_s": whole_s, "optimize_s": optimize_s,
        "img_steps_per_s": img_steps / whole_s, "optimize_img_steps_per_s": img_steps / optimize_s,
        "cpu_s_per_img_step": cpu_s / img_steps,  # in this process: without the start-up's interpreter
        "includes": f"whole command: interpreter start-up and imports ({startup_s:.1f} s, measured once), network "
                    f"load, rendering in batches of {args.batch} with its own verdicts, PNG + sidecar saving",
    }  # fmt: skip


# ── judging the saved PNGs ───────────────────────────────────────────────────


def hf_energy(rgb: np.ndarray, size: int) -> float:
    """The share of an image's spectral power above a quarter of the sampling
    rate: the grey image (channel mean, in [0, 1], resized to `size` px with
    Lanczos), mean removed, |FFT|² summed over radial frequencies > 0.25
    cycles/px, divided by the total."""
    img = Image.fromarray(rgb)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    g = np.asarray(img, dtype=np.float64).mean(-1) / 255
    power = np.abs(np.fft.fft2(g - g.mean())) ** 2
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    return float(power[f > 0.25].sum() / power.sum())


def photos_hf(size: int) -> dict[str, float]:
    """The same measure on scikit-image's bundled photos, centre-cropped."""
    try:
        from skimage import data
    except ImportError:
        return {}
    out = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        a = getattr(data, name)()[..., :3]
        s = min(a.shape[:2])
        y, x = (a.shape[0] - s) // 2, (a.shape[1] - s) // 2
        out[name] = round(hf_energy(np.ascontiguousarray(a[y : y + s, x : x + s]), size), 4)
    return out


def judge(folder: Path, classes: list[int], judges: list[Any], size: int) -> dict[str, Any]:
    arrays = [np.asarray(Image.open(folder / f"{u}.png").convert("RGB")) for u in classes]
    shown = torch.from_numpy(np.stack(arrays))
    out: dict[str, Any] = {"hf_energy": {str(u): round(hf_energy(a, size), 4) for u, a in zip(classes, arrays)}}
    for j in judges:
        probs = quality.probabilities(j.net, j.entry, shown)  # its input size, its preprocessing
        per = {str(u): {"rank": int((row > row[u]).sum()) + 1, "p": round(float(row[u]), 4)}
               for u, row in zip(classes, probs)}  # fmt: skip
        ranks, ps = [v["rank"] for v in per.values()], [v["p"] for v in per.values()]
        out[j.entry.name] = {"n": len(classes), "top1": sum(r == 1 for r in ranks), "top5": sum(r <= 5 for r in ranks),
                             "mean_p": round(float(np.mean(ps)), 4), "per_class": per}  # fmt: skip
    out["mean_hf_energy"] = round(float(np.mean(list(out["hf_energy"].values()))), 4)
    seen = looks(arrays)
    out["mean_colourfulness"] = round(seen["colourfulness"], 1)
    out["mean_rms_contrast"] = round(seen["rms_contrast"], 3)
    return out


# ── the report ───────────────────────────────────────────────────────────────


def command_line() -> str:
    return "python bench/peers.py " + " ".join(sys.argv[1:])


def report(data: dict[str, Any]) -> str:
    rows = []
    for name, r in data["renderers"].items():
        if "error" in r:
            rows.append(f"| {name} | failed: {r['error'][:200]} | | | | | | | |")
            continue
        j = r["judged"]
        cells = [f"{j[m]['top1']}/{j[m]['n']}" for m in JUDGE_MODELS]
        p = " / ".join(f"{j[m]['mean_p']:.2f}" for m in JUDGE_MODELS)
        if r["kind"] == "peer":
            rate = f"{r['img_steps_per_s']:.2f} (optimization only)"
            label = f"{name} {r['version']} ({r['recipe']})"
        else:
            rate = f"{r['img_steps_per_s']:.2f} (whole command; optimization alone {r['optimize_img_steps_per_s']:.2f})"
            label = f"dreamfarm `{r['recipe']}`"
        if r.get("cpu_s_per_img_step"):
            rate += f"; {r['cpu_s_per_img_step']:.2f} CPU-s per image-step"
        if r["steps"] != data["steps"] or len(r["classes"]) != len(data["classes"]):
            label += f" — {len(r['classes'])} classes, {r['steps']} steps"
        looks = (f"{j['mean_colourfulness']:.0f} | {j['mean_rms_contrast']:.2f}" if "mean_colourfulness" in j
                 else "— | —")  # fmt: skip
        rows.append(f"| {label} | {rate} | {' | '.join(cells)} | {p} | {looks} | {j['mean_hf_energy']:.3f} |")
    photos = data["photos_hf_energy"]
    photo_s = (f"scikit-image's photos {', '.join(f'{k} {v:.3f}' for k, v in photos.items())}" if photos else
               "no scikit-image for the photos' figures")  # fmt: skip
    load = " → ".join(f"{x:.1f}" for x in data.get("load_average", [])) or "not recorded"
    smoke = data["steps"] < 256 or len(data["classes"]) < 8
    lines = [
        f"### Against the peers: torch-dreams, Lucent, Horama — {data['device']}",
        "",
        *(
            [
                f"**Smoke run ({len(data['classes'])} classes, {data['steps']} steps): it checks the pipeline, its "
                "figures measure nothing.**",
                "",
            ]
            if smoke
            else []
        ),
        f"{len(data['classes'])} ImageNet classes drawn with `sample_classes({len(data['classes'])}, {data['seed']})` "
        f"({', '.join(f'{u} {n}' for u, n in zip(data['classes'], data['class_names']))}), the class logit of "
        f"EfficientNet-Lite0, one image per class and renderer, {data['steps']} steps at {data['size']} px, seeded; "
        "the peers installed from PyPI into `bench/.peers/` and each given a module that takes pixels in [0, 1] "
        "and applies Lite0's TF-Lite scaling, so every renderer optimizes the same function. The saved 8-bit "
        "PNGs are classified by Lite0/1/2, each at its own input size (224/240/260) with its own preprocessing. "
        f"torch {data['torch']}, {data['threads']} threads, renderers one after another on a machine shared with "
        f"other work (1-minute load average at the start and end of each run: {load}); float32 everywhere. "
        f"Command: `{data['command']}` ({data['total_s'] / 60:.0f} min).",
        "",
        "| renderer | image-steps/s | Lite0 top-1 | Lite1 top-1 | Lite2 top-1 | mean p(true) Lite0 / Lite1 / Lite2 | "
        "colourfulness | RMS contrast | high-frequency energy |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Image-steps/s: for a peer, the seconds of its render call (its optimization loop, one image per call), "
        "nothing else; for dreamfarm, the whole command: a fresh interpreter's start-up and imports (measured "
        "once), loading the network, rendering in batches with the render's own verdicts, and saving PNGs and "
        "sidecars; its optimization alone in brackets. CPU-s per image-step: the CPU time of the renderer's "
        "process (all its threads) over the same span (dreamfarm's without the start-up interpreter), swayed less "
        "than the wall clock by other work on the machine. Horama renders one 1280-px canvas per class, each step "
        "six 224-px crops of it: one image-step is one step of one canvas. Colourfulness: Hasler & "
        "Süsstrunk's M on the 8-bit values (0 grey; 33 moderately, 59 quite, 82 highly colourful); RMS contrast: "
        "the standard deviation of the lightness in [0, 1] (photos about 0.2-0.3); each averaged over the "
        "images. High-frequency energy: the share of "
        "the grey image's spectral power (mean removed, at "
        f"{data['size']} px) above 0.25 cycles/px, averaged over the images; {photo_s}.",
        "",
        WHAT_THE_PEERS_DO,
    ]
    return "\n".join(lines)


def sheet(data: dict[str, Any], out: Path, dest: Path) -> None:
    """One row per renderer, one column per class; Lite2's p(true) under each tile."""
    classes, names = data["classes"], data["class_names"]
    tile = 160 if len(classes) <= 8 else 128
    left, top, under = 150, 20, 14
    font = ImageFont.load_default()
    rows = list(data["renderers"])
    img = Image.new("RGB", (left + len(classes) * tile, top + len(rows) * (tile + under)), "white")
    draw = ImageDraw.Draw(img)
    for c, name in enumerate(names):
        draw.text((left + c * tile + 3, 4), name[: tile // 6], fill="black", font=font)
    for r, renderer in enumerate(rows):
        info = data["renderers"][renderer]
        y = top + r * (tile + under)
        if "error" in info:
            draw.text((4, y + tile // 2 - 12), f"{renderer}: failed", fill="red", font=font)
            continue
        label = renderer if info["kind"] == "peer" else f"dreamfarm {info['recipe']}"
        draw.text((4, y + tile // 2 - 12), label, fill="black", font=font)
        draw.text((4, y + tile // 2 + 2), f"{info['steps']} steps", fill="gray", font=font)
        for c, unit in enumerate(classes):
            path = out / renderer / f"{unit}.png"
            if not path.exists():
                continue
            img.paste(Image.open(path).convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS),
                      (left + c * tile, y))  # fmt: skip
            p = info["judged"][JUDGES[-1]]["per_class"].get(str(unit))
            if p:
                draw.text((left + c * tile + 3, y + tile + 1), f"Lite2 p={p['p']:.2f}", fill="black", font=font)
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, optimize=True)


def guarded(name: str, run: Callable[..., dict[str, Any]], *run_args: Any) -> dict[str, Any]:
    """One renderer's failure (a recipe mid-edit, a peer's import) is reported, not fatal to the others."""
    try:
        return run(*run_args)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"{name} FAILED: {type(exc).__name__}: {exc}", flush=True)
        return {"kind": "failed", "error": f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_recipes = [n for n in recipes.PRESETS if n not in ("adversarial", "lecture", "tuned")]
    p.add_argument("--classes", type=int, default=16)
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="class sample and render seed")
    p.add_argument("--render-seed", type=int, default=None,
                   help="render seed alone (default: --seed): other draws of the same classes")  # fmt: skip
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--renderers", default="torch-dreams,lucent,horama,dreamfarm",
                   help="subset of torch-dreams,lucent,horama,dreamfarm")  # fmt: skip
    p.add_argument("--recipes", default=",".join(default_recipes), help="dreamfarm recipes (service.recipes.PRESETS)")
    p.add_argument("--horama-classes", type=int, default=2, help="Horama renders the first N classes only (slow)")
    p.add_argument("--horama-steps", type=int, default=None, help="Horama's steps (default: --steps)")
    p.add_argument("--horama-size", type=int, default=1280, help="Horama's canvas (its default: 1280)")
    p.add_argument("--batch", type=int, default=8, help="dreamfarm's batch")
    p.add_argument("--precision", default="float32", help="dreamfarm's precision (the peers run float32)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("out/peers"))
    p.add_argument("--write", type=Path, default=None, help="update this benchmarks.md section (--section)")
    p.add_argument("--section", default="peers-cpu", help="the section's key in --write (e.g. one per sample size)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--sheet", type=Path, default=None, help="the side-by-side sheet, e.g. docs/images/peers.png")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep a peer's PNGs already under --out for the same seed, steps, size and threads",
    )
    p.add_argument(
        "--judge-only",
        action="store_true",
        help="render no peer image: judge those under --out (as --resume), e.g. after a stopped run",
    )
    p.add_argument("--from-json", type=Path, nargs="+", default=None,
                   help="render nothing: report (and merge) these runs' JSONs, their PNGs under --out")  # fmt: skip
    args = p.parse_args()
    args.render_seed = args.seed if args.render_seed is None else args.render_seed
    torch.set_num_threads(args.threads)
    data = merged(args.from_json) if args.from_json else run(args)
    md = report(data)
    print(md)
    if args.write:
        write_section(args.write, args.section, md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if args.sheet:
        sheet(data, args.out, args.sheet)
    print(f"torch after the run: {torch.__version__}; total {data['total_s']:.0f}s", flush=True)


def merged(paths: list[Path]) -> dict[str, Any]:
    """Runs of the same classes (e.g. Horama in a run of its own) as one report."""
    data: dict[str, Any] = json.loads(paths[0].read_text())
    for path in paths[1:]:
        more = json.loads(path.read_text())
        if more["classes"] != data["classes"] or more["steps"] != data["steps"]:
            raise SystemExit(f"{path}: other classes or steps than {paths[0]}")
        if more.get("render_seed", more["seed"]) != data.get("render_seed", data["seed"]):
            raise SystemExit(f"{path}: another render seed than {paths[0]} (bench/peers_seeds.py compares seeds)")
        data["renderers"].update(more["renderers"])
        data["command"] += f"`, then `{more['command']}"
        data["total_s"] += more["total_s"]
        data["load_average"] = data.get("load_average", []) + more.get("load_average", [])
        data["startup_s"] = data["startup_s"] or more["startup_s"]
    return data


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    wanted = args.renderers.split(",")
    unknown = set(wanted) - {*PEER_NAMES, "dreamfarm"}
    if unknown:
        raise SystemExit(f"unknown renderers: {', '.join(sorted(unknown))}")
    names = [n for n in args.recipes.split(",") if n] if "dreamfarm" in wanted else []
    for n in names:
        recipes.recipe(n)  # an unknown name fails now, not after the peers
    classes = sample_classes(args.classes, args.seed)
    registry = Registry()
    entry = registry.get(MODEL)
    results: dict[str, dict[str, Any]] = {}
    if any(w in PEER_NAMES for w in wanted):
        install_peers()
        use_peers()
        print(f"torch {torch.__version__} (the project's), peers from {PEERS_DIR}", flush=True)
        from service.zoo import load_network

        model = PixelsToLogits(load_network(entry, device="cpu"), entry.preprocessing)
        for name in (w for w in wanted if w in PEER_NAMES):
            if name == "horama":
                steps, n = args.horama_steps or args.steps, args.horama_classes
                results[name] = guarded(name, render_peer, name, model, classes[:n], steps, args.horama_size, args)
            else:
                results[name] = guarded(name, render_peer, name, model, classes, args.steps, args.size, args)
    startup_s = startup_seconds() if names else 0.0
    for name in names:
        results[f"dreamfarm-{name}"] = guarded(name, render_dreamfarm, name, classes, args, startup_s)
    judges = load_judges(registry, JUDGE_MODELS, WeightsConfig(), torch.device("cpu"))
    for key, r in results.items():
        if "error" not in r:
            r["judged"] = judge(args.out / key, r["classes"], judges, args.size)
    data = {
        "device": machine(torch.device("cpu")), "torch": torch.__version__, "threads": args.threads,
        "command": command_line(), "seed": args.seed, "render_seed": args.render_seed, "classes": classes,
        "class_names": [entry.classes[u] for u in classes], "steps": args.steps, "size": args.size,
        "startup_s": round(startup_s, 2), "photos_hf_energy": photos_hf(args.size), "renderers": results,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "total_s": time.perf_counter() - t0,
        "load_average": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
    }  # fmt: skip
    return data


if __name__ == "__main__":
    main()
