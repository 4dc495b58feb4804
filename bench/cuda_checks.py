"""Checks that need a CUDA device (never part of the test suite, which must
pass without one). Run on a GPU machine; prints one line per check and exits
non-zero if any fails.

    python bench/cuda_checks.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

from service import engine, precision
from service.devices import default_batch_size
from service.reference import lecture_render
from service.spec import RenderSpec
from service.zoo import Registry, load_network

MODEL = "efficientnet_lite0"
results: list[tuple[str, bool, str]] = []


def check(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def wrap(fn: Callable[[], str]) -> Callable[[], str]:
        t = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except AssertionError as exc:
            ok, detail = False, f"FAILED: {exc}"
        except Exception as exc:
            ok, detail = False, f"ERROR: {type(exc).__name__}: {exc}"
        results.append((name, ok, f"{detail} ({time.perf_counter() - t:.1f}s)"))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return fn

    return wrap


def specs(units: list[int], **kw: object) -> list[RenderSpec]:
    base: dict[str, object] = {"model": MODEL, "layer": "_fc", "kind": "logit", "steps": 5, "size": 128}
    base.update(kw)
    return [RenderSpec(unit=u, **base) for u in units]  # type: ignore[arg-type]


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    entry = Registry().get(MODEL)
    net = load_network(entry, device=dev)

    @check("engine reproduces the literal lecture loop on CUDA (float32 without TF32, batch 1, 3 steps)")
    def _fidelity() -> str:
        # TF32 convolutions and cuDNN's nondeterministic backward make the
        # chaotic early steps diverge; compare true float32, few steps.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        try:
            lit = load_network(entry, device=dev)
            lit.requires_grad_(True)
            s = specs([258], steps=3)
            x0 = engine.initial_noise(s).to(dev)
            want = lecture_render(lambda x: lit(x)[0, 258], x0, steps=3).cpu()
            got = engine.render(net, "_fc", s, precision="float32", device=dev, init=x0)
        finally:
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.deterministic = False
        d = (got.images - want).abs()
        frac = (d > 1e-3).float().mean().item()
        assert frac < 0.01, f"{frac:.4f} of pixels differ, max {d.max().item():.2e}"
        return f"max |diff| {d.max().item():.2e}, {frac:.5f} of pixels differ by > 1e-3"

    @check("batch independence on CUDA in float64 (logit, channel, neuron)")
    def _independence() -> str:
        net64 = load_network(entry, device=dev).double()
        worst = 0.0
        for layer, kind, units in [("_fc", "logit", [258, 700, 1]), ("_blocks.5", "channel", [0, 5, 9]),
                                   ("_blocks.5", "neuron", [0, 5, 9])]:  # fmt: skip
            ss = specs(units, layer=layer, kind=kind, steps=6, size=64)
            both = engine.render(net64, layer, ss, precision="float64", device=dev)
            for i, s in enumerate(ss):
                one = engine.render(net64, layer, [s], precision="float64", device=dev)
                worst = max(worst, (one.images[0] - both.images[i]).abs().max().item())
        assert worst < 1e-6, f"max diff {worst}"
        return f"max |diff| {worst:.2e}"

    @check("CPU and CUDA start from the same noise and agree after one step")
    def _cpu_cuda() -> str:
        s = specs([258, 700], steps=1, size=64)
        cpu_net = load_network(entry)
        a = engine.render(cpu_net, "_fc", s, precision="float32")
        # cuDNN's default TF32 convolutions round to 10 mantissa bits; compare true float32.
        torch.backends.cudnn.allow_tf32 = False
        b = engine.render(net, "_fc", s, precision="float32", device=dev)
        torch.backends.cudnn.allow_tf32 = True
        frac = ((a.images - b.images).abs() > 1e-3).float().mean().item()
        assert torch.equal(engine.initial_noise(s), engine.initial_noise(s))
        assert frac < 0.01, f"{frac:.4f} of pixels differ"
        return f"{frac:.5f} of pixels differ by > 1e-3"

    @check("bf16 quality guard on CUDA (EfficientNet-Lite0 logits, 4 classes, 100 steps)")
    def _guard() -> str:
        ss = specs([258, 700, 121, 604], steps=100, size=224)
        rep = precision.guard_bfloat16(net, "_fc", ss, device=dev, pretrained=True)
        return f"accepted={rep.accepted}; {rep.reason}"

    @check("default batch size and peak memory at it (VGG16 logits, bf16)")
    def _memory() -> str:
        b = default_batch_size(dev, 224)
        vgg = load_network(Registry().get("vgg16"), random_weights=True, device=dev).to(
            memory_format=torch.channels_last
        )
        torch.cuda.reset_peak_memory_stats(dev)
        ss = [s.model_copy(update={"model": "vgg16", "layer": "classifier.6", "random_weights": True})
              for s in specs(list(range(b)), steps=2, size=224)]  # fmt: skip
        engine.render(vgg, "classifier.6", ss, precision="bfloat16", device=dev, channels_last=True)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30
        total = torch.cuda.get_device_properties(dev).total_memory / 2**30
        assert peak < 0.8 * total, f"peak {peak:.1f} GiB of {total:.0f}"
        return f"batch {b}: peak {peak:.1f} GiB of {total:.0f} GiB"

    @check("compiled step (torch.compile, CUDA graphs) matches eager after one step (float32 without TF32)")
    def _compiled() -> str:
        torch.backends.cudnn.allow_tf32 = False
        try:
            s = specs([258, 700], steps=1, size=128)
            eager = engine.render(net, "_fc", s, precision="float32", device=dev)
            fast = engine.render(net, "_fc", s, precision="float32", device=dev, compile=True)
        finally:
            torch.backends.cudnn.allow_tf32 = True
        frac = ((eager.images - fast.images).abs() > 1e-3).float().mean().item()
        assert frac < 0.01, f"{frac:.4f} of pixels differ"
        return f"{frac:.5f} of pixels differ by > 1e-3"

    @check("batch independence on CUDA in float64 with the lucid recipe (per-image transforms)")
    def _lucid_independence() -> str:
        from service import recipes

        net64 = load_network(entry, device=dev).double()
        fields = {**recipes.recipe("lucid").model_dump(), "steps": 4, "size": 64}
        ss = [RenderSpec(model=MODEL, layer="_fc", kind="logit", unit=u, **fields) for u in (258, 700, 1)]
        both = engine.render(net64, "_fc", ss, precision="float64", device=dev, preprocessing=entry.preprocessing)
        worst = 0.0
        for i, sp in enumerate(ss):
            one = engine.render(net64, "_fc", [sp], precision="float64", device=dev, preprocessing=entry.preprocessing)
            worst = max(worst, (one.images[0] - both.images[i]).abs().max().item())
        assert worst < 1e-6, f"max diff {worst}"
        return f"max |diff| {worst:.2e}"

    failed = [r for r in results if not r[1]]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
