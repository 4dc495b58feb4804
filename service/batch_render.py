"""Render specs into a store: the one render workflow, used by `dreamfarm
render` (a local folder) and by the workers (the bucket).

Renders that exist are skipped (a sidecar is there); the rest are grouped
into batches that share one optimization, each group's precision is decided
once (`service.precision_policy`), a batch that runs out of memory is split
in halves (`service.splitting`), and each image is filed PNG first, sidecar
last. Uploads of one chunk overlap the rendering of the next, so the device
never waits on the store except for the last chunk. What happens is told
through callbacks: progress, each unit's outcome, splits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import torch

from service import autotune, layout, precision_policy
from service.contract import RenderItem
from service.errors import DreamfarmError, StorageError, one_line
from service.images import decode_image, square_pixels
from service.planning import batches
from service.renderer import Rendered, Renderer
from service.spec import RenderSpec
from service.splitting import InjectedOutOfMemory, Piece, render_splitting
from service.storage import Store

log = logging.getLogger("dreamfarm.render")


@dataclass(frozen=True)
class UnitOutcome:
    spec: RenderSpec
    status: Literal["rendered", "exists", "failed"]
    reason: str = ""
    # For a rendered class logit: the target's rank (1 = top-1) by the
    # rendering network and each judge, by model name.
    ranks: dict[str, int] = field(default_factory=dict)
    sidecar: dict[str, object] | None = None  # a rendered unit's, as filed

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class Callbacks:
    """All optional. `unit` may be called from the upload thread."""

    progress: Callable[[int, int, int], None] | None = None  # (images in the batch, step, steps)
    unit: Callable[[UnitOutcome], None] | None = None
    split: Callable[[int, int], None] | None = None  # (images, half) on out-of-memory
    batch_done: Callable[[int, float], None] | None = None  # (images, seconds)
    probing: Callable[[], None] | None = None  # the bf16 probe is about to run
    precision_note: Callable[[str], None] | None = None  # said once: float32, the job is too small to probe


@dataclass(frozen=True)
class Faults:
    """Fault injection for tests: batches larger than `oom_above` "run out of
    memory"; each step sleeps `step_sleep_s` (to kill a worker mid-batch)."""

    oom_above: int | None = None
    step_sleep_s: float = 0.0

    @classmethod
    def from_env(cls) -> Faults:
        oom = os.environ.get("DREAMFARM_FAULT_OOM_ABOVE")
        return cls(int(oom) if oom else None, float(os.environ.get("DREAMFARM_FAULT_STEP_SLEEP") or 0))


@dataclass
class RenderPlan:
    store: Store
    renderer_for: Callable[[RenderSpec], Renderer]
    verdicts: Store  # where bf16 verdicts are kept
    chunk_size: int | None = None  # images per optimization (default: by device)
    callbacks: Callbacks = field(default_factory=Callbacks)
    faults: Faults = field(default_factory=Faults)
    free_memory: Callable[[], None] | None = None
    # A network that cannot be loaded (missing weights …): the CLI stops with
    # the error; a worker records it as every unit's failure reason.
    raise_load_errors: bool = False
    # On a GPU, measure the best batch size once (kept in `verdicts`' store).
    autotune: bool = True


def render_into_store(items: Sequence[RenderItem], plan: RenderPlan) -> list[UnitOutcome]:
    """Render every item whose sidecar is not in the store yet; one outcome per item."""
    outcomes: list[UnitOutcome] = []
    todo: list[RenderSpec] = []
    for item in items:
        if plan.store.exists(layout.render_sidecar_key(item.spec)):
            outcomes.append(_tell(plan, UnitOutcome(item.spec, "exists")))
        else:
            todo.append(item.spec)
    by_key = {i.spec.key(): i for i in items}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload") as uploads:
        pending: list[Future[list[UnitOutcome]]] = []
        for group in batches(todo, len(todo) or 1):  # one group per batch key
            outcomes += _render_group(group, plan, by_key, uploads, pending)
        for f in pending:
            outcomes += f.result()
    return outcomes


def _render_group(
    group: list[RenderSpec], plan: RenderPlan, items: dict[str, RenderItem], uploads: ThreadPoolExecutor,
    pending: list[Future[list[UnitOutcome]]],
) -> list[UnitOutcome]:  # fmt: skip
    """Render one batch key's specs in chunks; returns the outcomes known now
    (failures), queues the uploads."""
    try:
        renderer = plan.renderer_for(group[0])
    except DreamfarmError as exc:  # missing weights, …: every unit fails, with the reason
        if plan.raise_load_errors:
            raise
        return [_tell(plan, UnitOutcome(s, "failed", one_line(str(exc)))) for s in group]
    precision_policy.decide(renderer, group, plan.verdicts, plan.callbacks.probing, plan.callbacks.precision_note)
    chunk = plan.chunk_size or autotune.batch_size(
        group, renderer.device, renderer.resolved_precision(group[0]), plan.verdicts,
        lambda specs: renderer.render(specs, None, originals_of(specs, plan.store)), enabled=plan.autotune,
        memo=renderer.batch_sizes,
    )  # fmt: skip
    failed: list[UnitOutcome] = []
    filed = False
    for part in batches(group, chunk):  # a diversity group is never cut
        t0 = time.perf_counter()
        pieces = render_splitting(_render_fn(renderer, plan), part, on_split=plan.callbacks.split,
                                  after_oom=plan.free_memory, together=RenderSpec.group_key)  # fmt: skip
        for piece in pieces:
            if piece.result is None:
                failed += [_tell(plan, UnitOutcome(s, "failed", piece.error or "failed")) for s in piece.specs]
            else:
                pending.append(uploads.submit(_file_piece, plan, renderer, piece, items))
                filed = True
        if plan.callbacks.batch_done is not None:
            plan.callbacks.batch_done(len(part), time.perf_counter() - t0)
    if filed:  # queued after the group's renders, on the same (one) upload thread
        pending.append(uploads.submit(_file_alias_indexes, plan, renderer, group[0]))
    return failed


def _file_alias_indexes(plan: RenderPlan, renderer: Renderer, spec: RenderSpec) -> list[UnitOutcome]:
    """`renders/<model>/<alias>/index.json` for each alias of the layer just
    filed, so that a person who asked for `logits` finds its renders under
    `_fc`. Written every time renders of the layer are filed (the same bytes:
    concurrent workers cannot conflict, and a bucket that lost one gets it
    back). Best effort: the renders are filed, a pointer is a convenience."""
    try:
        aliases = renderer.layer_aliases(spec.layer)
    except Exception as exc:  # a network the zoo cannot trace: no pointers, the renders stand
        log.warning("no alias index for %s %s: %s", spec.model, spec.layer, one_line(str(exc)))
        return []
    for alias in aliases:
        if alias == spec.layer:  # resnet's conv1 is its own alias: nothing to point to
            continue
        try:
            data = layout.alias_index(spec.model, spec.layer, alias, aliases)
            plan.store.put(layout.alias_index_key(spec.model, alias), data, "application/json")
        except StorageError as exc:
            log.warning("alias index %s of %s not written: %s", alias, spec.model, one_line(str(exc)))
    return []


def _render_fn(renderer: Renderer, plan: RenderPlan) -> Callable[[list[RenderSpec]], Rendered]:
    faults, report = plan.faults, plan.callbacks.progress

    def render(part: list[RenderSpec]) -> Rendered:
        if faults.oom_above is not None and len(part) > faults.oom_above:
            raise InjectedOutOfMemory(f"injected: batch of {len(part)} > {faults.oom_above}")

        def progress(step: int, steps: int) -> None:
            if faults.step_sleep_s:
                time.sleep(faults.step_sleep_s)
            if report is not None:
                report(len(part), step, steps)

        return renderer.render(part, progress, originals_of(part, plan.store))

    return render


def originals_of(specs: Sequence[RenderSpec], store: Store) -> torch.Tensor | None:
    """The starting images of param "image" specs, from the store, centre-cropped
    and resized to the render size; None for the other parameterizations."""
    if specs[0].init_image is None:
        return None
    out = []
    for spec in specs:
        assert spec.init_image is not None
        try:
            img = decode_image(store.get(layout.image_key(spec.init_image)))
        except ValueError as exc:
            raise DreamfarmError(f"image {spec.init_image[:16]}…: {exc}") from None
        out.append(square_pixels(img, spec.size))
    return torch.stack(out)


def _file_piece(
    plan: RenderPlan, renderer: Renderer, piece: Piece[RenderSpec, Rendered], items: dict[str, RenderItem]
) -> list[UnitOutcome]:
    assert piece.result is not None
    out = []
    for i, spec in enumerate(piece.specs):
        try:
            side = renderer.store_one(plan.store, piece.result, i, items[spec.key()])
        except StorageError as exc:
            log.error("upload of %s failed for good: %s", spec.key()[:12], exc)
            out.append(_tell(plan, UnitOutcome(spec, "failed", f"upload failed: {one_line(str(exc))}")))
            continue
        out.append(_tell(plan, UnitOutcome(spec, "rendered", ranks=piece.result.ranks(i), sidecar=side)))
    return out


def _tell(plan: RenderPlan, outcome: UnitOutcome) -> UnitOutcome:
    if plan.callbacks.unit is not None:
        plan.callbacks.unit(outcome)
    return outcome
