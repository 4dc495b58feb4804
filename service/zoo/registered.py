"""A user's own network, as data: what a client registers (`ModelRegistration`),
what the service keeps (`ModelManifest`), and the checks that stand between
the two and between a manifest and its weights file.

Pure: no HTTP, no bucket, no Celery. The API, the CLI's `--local` registry
and the workers all go through these functions, so a network is refused or
accepted, and built, the same way everywhere.

A registered network is an architecture of the zoo's catalog
(`torchvision:<name>` or `timm:<name>`) built with the client's constructor
arguments, with its own class names and preprocessing, and weights named by
their sha256. Its checks run on PyTorch's meta device: shapes only, no
memory, no weights, so the API host can run them for any network.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
)

from service.config import DEFAULT_TENANT
from service.errors import BadRegistration, BadWeights, NameTaken, one_line
from service.request import ClassName
from service.validation import describe
from service.zoo.catalog_generated import NORMALIZATIONS, TIMM, TORCHVISION
from service.zoo.registry import ModelEntry, Preprocessing, Registry
from service.zoo.weights import WeightsRef

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = [
    "SOURCE",
    "ModelManifest",
    "ModelRegistration",
    "check_registration",
    "check_weights",
    "entry_of",
    "registration_from",
    "weights_format",
]  # fmt: skip

#: `ModelEntry.source` and `family` of every registered network.
SOURCE = "registered"
NAME = r"^[a-z][a-z0-9_]{0,47}$"
ARCH = r"^(?:torchvision|timm):[A-Za-z0-9_.]{1,96}$"
MAX_CLASSES = 100_000
#: Constructor arguments a registration may not pass: they download weights,
#: read files or change what the network returns (a list of feature maps
#: instead of logits), which no render, and no check here, is made for.
RESERVED_KWARGS = frozenset({
    "weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "checkpoint_path",
    "cache_dir", "progress", "features_only", "out_indices", "feature_cfg", "scriptable", "exportable",
})  # fmt: skip
#: How many of each kind of mismatching tensor a refusal names.
SHOWN = 3

#: Constructor arguments are sizes, rates and switches: a bound keeps a
#: registration from asking the API to build a network of a million layers.
MAX_ARGUMENT = MAX_CLASSES
Scalar = (StrictBool | Annotated[int, Field(strict=True, ge=-MAX_ARGUMENT, le=MAX_ARGUMENT)]
          | Annotated[float, Field(strict=True, ge=-1e6, le=1e6, allow_inf_nan=False)]
          | Annotated[str, Field(strict=True, max_length=128)] | None)  # fmt: skip
#: Parameters a registered network may have (4 GB in float32): more would not
#: fit the weights limit nor a worker, and random weights could still be asked for.
MAX_PARAMETERS = 1_000_000_000
Kwarg = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
Triple = tuple[FiniteFloat, FiniteFloat, FiniteFloat]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
WeightsFormat = Literal["safetensors", "torch"]


class ModelRegistration(BaseModel):
    """The body of `POST /v1/models`: a name, an architecture and its
    constructor arguments; class names and preprocessing default to what the
    architecture's output width and own metadata say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME, description="lower case, digits and _, starting with a letter; at most 48")
    arch: str = Field(pattern=ARCH, description="torchvision:<name> or timm:<name>")
    kwargs: dict[Kwarg, Scalar] = Field(default_factory=dict, max_length=32,
                                        description='constructor arguments, e.g. {"num_classes": 4}')  # fmt: skip
    classes: list[ClassName] | None = Field(None, min_length=1, max_length=MAX_CLASSES)
    mean: Triple | None = None
    std: Triple | None = None
    size: StrictInt | None = Field(None, ge=16, le=1024)
    description: Description = ""
    public: StrictBool = False

    @field_validator("kwargs")
    @classmethod
    def _allowed(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        bad = sorted(set(v) & RESERVED_KWARGS)
        if bad:
            raise ValueError(f"{', '.join(bad)} may not be given: weights come from PUT /v1/models/{{name}}/weights "
                             "and the network must return its logits")  # fmt: skip
        return v

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            seen: set[str] = set()
            dupes = [c for c in v if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
            raise ValueError(f"class names must be distinct; repeated: {', '.join(sorted(set(dupes))[:5])}")
        return v

    @field_validator("std")
    @classmethod
    def _positive(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and min(v) <= 0:
            raise ValueError("std must be > 0 for every channel")
        return v


class ModelManifest(BaseModel):
    """A registration resolved: every default filled in, its owner, and once
    uploaded, its weights (`weights_sha256` names the object `weights/<sha256>`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    arch: str = Field(pattern=ARCH)
    kwargs: dict[str, Scalar] = Field(default_factory=dict)
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int
    description: str = ""
    public: bool = False
    tenant: str = DEFAULT_TENANT
    weights_sha256: Sha256 | None = None
    weights_bytes: int | None = None
    weights_format: WeightsFormat | None = None
    created_at: str
    updated_at: str | None = None

    @property
    def state(self) -> Literal["ready", "awaiting_weights"]:
        return "ready" if self.weights_sha256 else "awaiting_weights"

    def revision(self) -> str:
        """What tells two manifests of one name apart for what the network
        computes (architecture, arguments, preprocessing, classes, weights)."""
        what = self.model_dump(mode="json", include={"arch", "kwargs", "classes", "mean", "std", "size",
                                                     "weights_sha256", "created_at"})  # fmt: skip
        from service.spec import canonical_json

        return hashlib.sha256(canonical_json(what).encode()).hexdigest()[:16]

    def with_weights(self, sha256: str, nbytes: int, fmt: WeightsFormat) -> ModelManifest:
        return self.model_copy(update={"weights_sha256": sha256, "weights_bytes": nbytes, "weights_format": fmt,
                                       "updated_at": _now()})  # fmt: skip


def registration_from(data: Mapping[str, Any]) -> ModelRegistration:
    """A registration from plain data (a CLI's flags, a file), refused as one line."""
    try:
        return ModelRegistration.model_validate(dict(data))
    except ValidationError as exc:
        raise BadRegistration(describe(exc), field="body") from None


def check_registration(reg: ModelRegistration, registry: Registry, *, tenant: str = DEFAULT_TENANT) -> ModelManifest:
    """The registration resolved into a manifest without weights, or the
    first problem as a `DreamfarmError`: a name a built-in has, an unknown
    architecture (with close matches), arguments its constructor does not
    take, a class list as long as something other than its output."""
    if reg.name in registry and registry.get(reg.name).source != SOURCE:
        raise NameTaken(f"name {reg.name!r} is a built-in model of the zoo: choose another", field="name")
    library, arch = reg.arch.split(":", 1)
    catalog_size, norm = _catalog(library, arch)
    size = reg.size or catalog_size
    mean, std = NORMALIZATIONS[norm]
    draft = ModelManifest(
        name=reg.name, arch=reg.arch, kwargs=reg.kwargs, classes=[], mean=reg.mean or mean, std=reg.std or std,
        size=size, description=reg.description, public=reg.public, tenant=tenant, created_at=_now(),
    )  # fmt: skip
    width = _output_width(draft)
    if reg.classes is not None and len(reg.classes) != width:
        raise BadRegistration(f"{len(reg.classes)} class names for {reg.arch} with {_kwargs(reg.kwargs)}, whose output "
                              f"has {width}: give {width} names (or set num_classes to {len(reg.classes)})",
                              field="classes")  # fmt: skip
    classes = list(reg.classes) if reg.classes is not None else [f"class {i}" for i in range(width)]
    return draft.model_copy(update={"classes": classes})


def weights_format(path: Path) -> WeightsFormat:
    """Which tensor archive a file is, from its first bytes: a safetensors
    file starts with its header's length and the header's JSON; anything
    else is read as torch's (a zip archive, or a legacy pickle, both read
    with `weights_only=True`)."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    return "torch"


def check_weights(manifest: ModelManifest, path: Path) -> tuple[str, int]:
    """(sha256, size in bytes) of a weights file that fits the manifest's
    network, or `BadWeights`: a file that is no tensor archive (a pickle that
    would run code is one: it is refused unread, `weights_only=True`), or
    whose tensors' names and shapes differ from the network's (the first few
    missing, unexpected and mis-shaped ones, and how many of each)."""
    sha, nbytes = _sha256(path)
    if nbytes == 0:
        raise BadWeights("the weights file is empty")
    shapes = _tensor_shapes(path, weights_format(path))
    expected = {k: tuple(v.shape) for k, v in _build_meta(manifest).state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {list(shapes[k])} (expected {list(v)})" for k, v in expected.items() if k in shapes
             and tuple(shapes[k]) != v]  # fmt: skip
    if missing or unexpected or wrong:
        parts = [f"{len(items)} {what}: {', '.join(items[:SHOWN])}{', …' if len(items) > SHOWN else ''}"
                 for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong))
                 if items]  # fmt: skip
        raise BadWeights(f"the weights do not fit {manifest.arch} with {_kwargs(manifest.kwargs)}: {'; '.join(parts)}")
    return sha, nbytes


def entry_of(manifest: ModelManifest) -> ModelEntry:
    """The zoo entry of a registered network: built as registered, its
    weights the file named by their sha256 (checked in full before reading)."""
    sha = manifest.weights_sha256
    # The file is read by its suffix; a worker given an older sha256 than the
    # manifest's (a job planned before a re-upload) finds it under either.
    suffixes = ("pt", "safetensors") if manifest.weights_format == "torch" else ("safetensors", "pt")
    ref = (WeightsRef(filename=f"{sha}.{suffixes[0]}", sha256=sha, alternatives=(f"{sha}.{suffixes[1]}",)) if sha
           else WeightsRef(filename=f"{manifest.name}.none"))  # fmt: skip
    owner = "public" if manifest.public else f"tenant {manifest.tenant}"
    return ModelEntry(
        name=manifest.name,
        family=SOURCE,
        build=_builder(manifest),
        weights=ref,
        preprocessing=Preprocessing(mean=manifest.mean, std=manifest.std),
        input_size=manifest.size,
        classes=tuple(manifest.classes),
        description=manifest.description or f"{manifest.arch} {_kwargs(manifest.kwargs)}, registered ({owner})",
        source=SOURCE,
        num_classes=len(manifest.classes),
        revision=manifest.revision(),
    )


def _catalog(library: str, arch: str) -> tuple[int, str]:
    """(native input size, normalization key) of a catalog architecture."""
    names: Mapping[str, tuple[Any, ...]] = TORCHVISION if library == "torchvision" else TIMM
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(f'{library}:{c}' for c in close)}?" if close else ""
        raise BadRegistration(f"unknown architecture {library}:{arch}{hint} (`dreamfarm models --search TEXT` lists "
                              f"{len(names)} of {library}'s)", field="arch")  # fmt: skip
    if library == "torchvision":
        _weights, _file, crop, norm, _classes = TORCHVISION[arch]
        return int(crop), str(norm)
    _module, _tag, size, norm, _classes, _width = TIMM[arch]
    return int(size), str(norm)


def _builder(manifest: ModelManifest) -> partial[nn.Module]:
    library, arch = manifest.arch.split(":", 1)
    return partial(_build, library, arch, dict(manifest.kwargs))


def _build(library: str, arch: str, kwargs: dict[str, Any]) -> nn.Module:
    if library == "torchvision":
        import torchvision.models as tvm

        net: nn.Module = tvm.get_model(arch, weights=None, **kwargs)
        return net
    import timm

    built: nn.Module = timm.create_model(arch, pretrained=False, **kwargs)
    return built


def _build_meta(manifest: ModelManifest) -> nn.Module:
    from service.zoo.layers import build_on_meta

    try:
        net = build_on_meta(_builder(manifest))
    except Exception as exc:  # the constructor's own words: an argument it does not take, a value it refuses
        raise BadRegistration(f"{manifest.arch} cannot be built with {_kwargs(manifest.kwargs)}: "
                              f"{type(exc).__name__}: {one_line(str(exc), 240)}", field="kwargs") from None  # fmt: skip
    # Some constructors swallow unknown arguments (torchvision's MobileNetV3
    # takes **kwargs and drops them): an argument no constructor of the
    # network's class names would be silently ignored, so it is refused.
    count = sum(p.numel() for p in net.parameters())
    if count > MAX_PARAMETERS:
        raise BadRegistration(f"{manifest.arch} with {_kwargs(manifest.kwargs)} has {count:,} parameters; at most "
                              f"{MAX_PARAMETERS:,} are supported", field="kwargs")  # fmt: skip
    unknown = sorted(set(manifest.kwargs) - _named_arguments(type(net)))
    if unknown:
        raise BadRegistration(f"{manifest.arch} takes no argument {', '.join(map(repr, unknown))} (its constructor "
                              "would ignore it)", field="kwargs")  # fmt: skip
    return net


def _named_arguments(cls: type) -> set[str]:
    """The parameter names of every __init__ in the class's MRO."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"self"}


def _output_width(manifest: ModelManifest) -> int:
    import torch

    net = _build_meta(manifest).eval()
    try:
        with torch.no_grad():
            out = net(torch.empty(1, 3, manifest.size, manifest.size, device="meta"))
    except Exception as exc:
        raise BadRegistration(f"{manifest.arch} with {_kwargs(manifest.kwargs)} does not run at size {manifest.size}: "
                              f"{type(exc).__name__}: {one_line(str(exc), 200)}", field="size") from None  # fmt: skip
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 1:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BadRegistration(f"{manifest.arch} with {_kwargs(manifest.kwargs)} returns {shape}, not one row "
                              "of logits per image: not a classifier dreamfarm can render", field="arch")  # fmt: skip
    if out.shape[1] > MAX_CLASSES:
        raise BadRegistration(f"{out.shape[1]} outputs: at most {MAX_CLASSES} are supported", field="kwargs")
    return int(out.shape[1])


def _tensor_shapes(path: Path, fmt: WeightsFormat) -> dict[str, tuple[int, ...]]:
    """The archive's tensor names and shapes, reading no code: safetensors'
    header, or torch's restricted unpickler (`weights_only=True`), which
    refuses any global a pickle names (os.system, a class) before it is called."""
    import torch

    from service.zoo.weights import _unwrap

    try:
        if fmt == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
        state = _unwrap(torch.load(path, map_location="meta", weights_only=True))
    except Exception as exc:
        raise BadWeights(f"the weights file is not a tensor archive (.safetensors, or a state dict that "
                         f"torch.load reads with weights_only=True): {_first_line(exc)}") from None  # fmt: skip
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadWeights("the weights file holds no state dict (a mapping of names to tensors)")
    return {str(k): tuple(v.shape) for k, v in state.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("Weights only load failed"):  # torch's restricted unpickler: what it refused, not its advice
        detail = text.split("Check the documentation", 1)[0].split("\n", 1)[-1]
        detail = detail.split("WeightsUnpickler error:", 1)[-1]
        return one_line(f"a pickle that is more than tensors, refused unread ({detail.strip()})", 240)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return one_line(f"{type(exc).__name__}: {lines[0] if lines else ''}", 240)


def _sha256(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _kwargs(kwargs: Mapping[str, Scalar]) -> str:
    return "arguments " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) if kwargs else "no arguments"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
