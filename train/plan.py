"""The training plan: patch, batch, network depth, 3D anisotropy and the training budget, decided from
the data and the device, as nnU-Net plans from its dataset fingerprint.

The budget is counted in optimizer steps, never in passes over the files: an epoch is a fixed number
of steps (``steps_per_epoch``), each on a batch drawn from all training images, so a project of ten
images trains as long as one of a thousand. How many steps follows from how long a step and a
validation take on the device and how long a user should wait (:data:`BUDGETS`, measured on a
2-core CPU; docs/benchmarks.md).

Every item can be set in the config (or on the command line); what is set is kept, the rest is
planned around it. The plan is a pure function of the fingerprint, the settings and the device kind,
so the same data always gives the same plan.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

log = logging.getLogger("idl")


@dataclass(frozen=True)
class Budget:
    """What one device kind affords: seconds of training per kind of run, its speed relative to the
    reference CPU, voxels per optimizer step, and the steps between two validations."""

    seconds: dict[str, float]  # "2d", "3d", "classification", "maskrcnn"
    speed: float  # steps per second relative to the reference CPU (2 cores)
    voxels_per_step: dict[int, int]  # by dims
    steps_per_epoch: int


# The reference is a 2-core CPU (docs/benchmarks.md): a U-Net training step costs about 4 us per pixel
# or voxel at depth 3 (channels-last), more for deeper networks (US_PER_VOXEL); a classifier's cost per
# pixel depends on the network and on the small-input stem (train/tasks/classification/plan.py), Mask
# R-CNN's is its own (train/tasks/instance/maskrcnn.py). CPU budgets keep the training of
# a default run, validation included, within about 4 minutes (2D), 2.5 (classification) and 9 (3D)
# there; the test prediction, export and package validation come on top. GPU: nnU-Net-like batches
# and a far larger budget (an estimate: no GPU to measure it).
US_PER_VOXEL = {2: {3: 4.0, 4: 4.2, 5: 6.2}, 3: {3: 4.3, 4: 5.2, 5: 6.5}}  # by dims, then depth
BATCH_OF_ONE_3D = 4.7  # a 3D U-Net step on one patch costs this many times its voxels' share
MIN_BATCH = 2  # patches per step: batch norm does not hold with one (see instantdl_batch)
US_PER_VALIDATION_VOXEL = {2: 1.9, 3: 2.3}  # tiled whole-image prediction and scoring, per computed voxel
VALIDATION_SHARE = 0.2  # validation takes at most this share of an epoch: longer epochs when it costs more
BUDGETS = {
    "cpu": Budget(
        seconds={"2d": 240.0, "3d": 540.0, "classification": 140.0, "maskrcnn": 1200.0},
        speed=1.0,
        voxels_per_step={2: 4 * 128 * 128, 3: 2 * 16 * 64 * 64},
        steps_per_epoch=50,
    ),
    "cuda": Budget(
        seconds={"2d": 1800.0, "3d": 3600.0, "classification": 1800.0, "maskrcnn": 3600.0},
        speed=50.0,
        voxels_per_step={2: 12 * 256 * 256, 3: 2 * 64 * 128 * 128},
        steps_per_epoch=250,
    ),
}

GPU_REFERENCE_GB = 8.0
MIN_DEPTH, MAX_DEPTH = 3, 5
MIN_BOTTLENECK = 8  # px: the patch is at least this many cells of the deepest level
CONTEXT_PER_OBJECT = 3  # the receptive field covers this many object diameters
ANISOTROPY_RATIO = 2.0  # voxels this much longer in z get the anisotropic 3D U-Net
WARMUP_FRACTION = 0.05  # of all steps, at most one epoch: the learning rate rises linearly
MIN_PATIENCE = 10


@dataclass(frozen=True)
class Fingerprint:
    """What the plan looks at: image sizes, channels, voxel spacing and object sizes."""

    dims: int
    shapes: tuple[tuple[int, ...], ...]  # the spatial shape of every training image
    channels: int
    spacing: tuple[float, ...] | None = None  # (z, y, x) when the files record it
    object_size: float | None = None  # typical in-plane object side (px): see typical_size
    n_objects: int = 0
    names: tuple[str, ...] = ()  # the file name of every training image, as ``shapes``: for messages
    pixel_size: tuple[float, ...] = ()  # micrometres per pixel ((z,) y, x) when the files record it

    @property
    def median_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in np.median(np.array(self.shapes), axis=0))

    @property
    def smallest_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in np.min(np.array(self.shapes), axis=0))

    @property
    def voxels(self) -> int:
        return int(sum(math.prod(s) for s in self.shapes))

    def _sides(self, axis: int | None) -> list[int]:
        return [min(s[-2:]) if axis is None else s[axis] for s in self.shapes]

    def smallest(self, axis: int | None = None) -> str:
        """The image that limits the plan along spatial ``axis`` (``0``: z) or in-plane (``None``),
        named with its shape: ``the smallest image, a.tif (77 x 33 px)``, or ``the images (64 x 64
        px)`` when every image is that small."""
        sides = self._sides(axis)
        i = int(np.argmin(sides))
        shape = f"{' x '.join(map(str, self.shapes[i]))} px"
        if not self.outlier(axis):
            return f"the images ({shape})" if len(sides) > 1 else f"the image ({shape})"
        name = self.names[i] if i < len(self.names) else f"image {i + 1}"
        return f"the smallest image, {name} ({shape})"

    def outlier(self, axis: int | None = None) -> bool:
        """Whether one image is smaller than another along ``axis`` (``None``: in-plane)."""
        sides = self._sides(axis)
        return min(sides) < max(sides)


COMPACT = 0.3  # objects filling less of their bounding box are thin: membranes, vessels


def object_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The in-plane size and the pixel count of every object of a label image (2D or 3D).

    A compact object's size is its bounding box's side (the geometric mean of its y and x extents); a
    thin one (filling less than :data:`COMPACT` of its box: a membrane network, a vessel tree) is as
    large as it is thick (twice its largest distance to the background), since its box says nothing
    about the context needed to recognise it.
    """
    from scipy.ndimage import distance_transform_edt
    from skimage.measure import regionprops

    n = labels.ndim
    sizes, areas = [], []
    for region in regionprops(labels):
        box = region.bbox
        if region.extent >= COMPACT:
            sizes.append(math.sqrt((box[n - 2 + n] - box[n - 2]) * (box[n - 1 + n] - box[n - 1])))
        else:
            sizes.append(2.0 * float(distance_transform_edt(np.pad(region.image, 1)).max()))
        areas.append(float(region.area))
    return np.array(sizes), np.array(areas)


def typical_size(sizes: np.ndarray, areas: np.ndarray | None = None) -> float | None:
    """The size of the object a typical foreground pixel belongs to: the median of the sizes, each
    object weighted by its pixel count (``areas``; without them by its size squared). A plain median
    would follow the specks that real masks are full of (a lung CT's vessel masks: mostly 1-px
    fragments next to a few large trees)."""
    if not sizes.size:
        return None
    weights = sizes**2 if areas is None else areas
    order = np.argsort(sizes)
    cumulative = np.cumsum(weights[order])
    return float(sizes[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def class_components(classes: np.ndarray, max_classes: int = 255) -> np.ndarray:
    """Connected components of every foreground class of a class map, numbered across classes, so
    that each object of each class is one label."""
    from skimage.measure import label

    out = np.zeros(classes.shape, np.int32)
    offset = 0
    for value in np.unique(classes):
        if value == 0 or value > max_classes:
            continue
        components = label(classes == value)
        out[components > 0] = components[components > 0] + offset
        offset += int(components.max())
    return out


@dataclass(frozen=True)
class Plan:
    """The resolved training plan; ``sources`` says for every item whether it was set or planned, and
    from what."""

    dims: int
    patch: tuple[int, ...]
    batch_size: int
    depth: int
    anisotropic: bool
    steps_per_epoch: int
    epochs: int
    patience: int
    learning_rate: float
    warmup_steps: int
    validation: str = ""
    schedule: str = "trapezoid"
    sources: dict[str, str] = field(default_factory=dict)
    network: str = ""  # what the network is, when not a U-Net of ``depth`` levels
    augmentation: str = ""  # what the plan decides of the augmentation (classification), if anything
    # the budget may grow to this many epochs while validation still rises (idl.train.budget; 0: never)
    max_epochs: int = 0
    extended_to: int = 0  # the epochs it grew to (0: not extended)
    extensions: tuple[str, ...] = ()  # why, one line per extension
    restarts: tuple[str, ...] = ()  # runs started again from the trivial answer, one line each
    reference: str = ""  # the answer without training that validation must beat (idl.train.reference)
    # warnings for the user (a set patch clamped to the images): logged once, not saved (the sources
    # say it in the plan table and plan.json)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def total_steps(self) -> int:
        """The steps trained: the planned epochs', or the extended budget's."""
        return (self.extended_to or self.epochs) * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["notes"]
        data["patch"] = list(self.patch)
        data["extensions"] = list(self.extensions)
        data["restarts"] = list(self.restarts)
        data["total_steps"] = self.total_steps
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def _budget(self) -> str:
        planned = self.epochs * self.steps_per_epoch
        text = f"{self.epochs} epochs x {self.steps_per_epoch} steps = {planned} steps"
        if self.extended_to:
            text += f", extended to {self.extended_to} epochs ({self.total_steps} steps)"
        if self.max_epochs > max(self.epochs, self.extended_to):
            text += f", up to {self.max_epochs} epochs while validation still rises"
        return text

    def table(self) -> str:
        """The plan as the lines printed before training."""
        rows = [
            ("patch", " x ".join(map(str, self.patch)) + " px"),
            ("batch", str(self.batch_size)),
            ("depth", str(self.depth) + (" (anisotropic)" if self.anisotropic else "")),
            ("budget", self._budget()),
            ("patience", f"{self.patience} epochs"),
            ("learning rate", f"{self.learning_rate:g}, {self.schedule} (warm-up {self.warmup_steps} steps)"),
            ("validation", self.validation),
        ]
        if self.augmentation:
            rows.append(("augmentation", self.augmentation))
        if self.reference and self.max_epochs > self.epochs:
            rows.append(("baseline", f"{self.reference} (a run no better where it is checked starts again)"))
        if self.network:
            rows[2] = ("network", self.network)
        width = max(len(k) for k, _ in rows)
        key_of = {"patch": "patch", "batch": "batch_size", "depth": "depth", "budget": "epochs"}
        key_of.update({"patience": "patience", "learning rate": "learning_rate"})
        lines = []
        for name, value in rows:
            source = self.sources.get(key_of.get(name, name), "")
            lines.append(f"  {name:<{width}}  {value}{f'   [{source}]' if source else ''}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Requests:
    """The plan items a user set (``None``: plan it)."""

    patch_side: int | None = None
    patch_z: int | None = None
    batch_size: int | None = None
    batch_images: int | None = None  # InstantDL's batchsize (see instantdl_batch)
    depth: int | None = None
    anisotropic: bool | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    epoch_limit: int | None = None  # InstantDL's iterations_over_dataset: at most this many epochs
    patience: int | None = None
    learning_rate: float | None = None
    network_set: bool = False  # classification: the ResNet variant was chosen by the user


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` (the budget table's keys)."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def _anisotropy(fp: Fingerprint, requests: Requests, sources: dict[str, str]) -> bool:
    if fp.dims != 3:
        return False
    if requests.anisotropic is not None:
        sources["anisotropic"] = "set"
        return requests.anisotropic
    if fp.spacing is None:
        sources["anisotropic"] = "voxel size not recorded: isotropic"
        return False
    ratio = fp.spacing[0] / fp.spacing[1]
    sources["anisotropic"] = f"voxels {ratio:.2g}x longer in z"
    return ratio >= ANISOTROPY_RATIO


def receptive_field(depth: int) -> int:
    """About how many pixels a U-Net of ``depth`` levels sees around each output pixel (the planning
    rule's ``12 * 2**depth``)."""
    return 12 * 2**depth


def _depth(fp: Fingerprint, requests: Requests, anisotropic: bool, sources: dict[str, str]) -> int:
    """The shallowest U-Net whose receptive field (about 12 * 2**depth px) spans
    :data:`CONTEXT_PER_OBJECT` object sides, within what the images' size allows."""
    if requests.depth is not None:
        sources["depth"] = "set"
        return requests.depth
    # the deepest level must keep MIN_BOTTLENECK cells of the smallest image in-plane, and a volume's
    # depth must hold the z multiple (one halving fewer in z for the anisotropic U-Net)
    smallest = min(fp.smallest_shape[-2:])
    fits = max(1, int(math.floor(math.log2(max(smallest, 2) / MIN_BOTTLENECK))))
    limit: int | None = None  # the axis that limits the depth: in-plane (None) or z (0)
    if fp.dims == 3:
        z_levels = int(math.floor(math.log2(max(fp.smallest_shape[0], 1)))) + int(anisotropic)
        limit = 0 if z_levels < fits else None
        fits = max(1, min(fits, z_levels))
    if fp.object_size is None:
        want, why = 4, "no objects to measure: 4"
    else:
        need = CONTEXT_PER_OBJECT * fp.object_size / 12
        want = int(np.clip(math.ceil(math.log2(max(need, 1))), MIN_DEPTH, MAX_DEPTH))
        reach = CONTEXT_PER_OBJECT * fp.object_size
        why = (
            f"objects of {fp.object_size:.1f} px need a receptive field of {reach:.1f} px "
            f"(depth {want}: {12 * 2**want} px)"
        )
    depth = min(want, fits)
    if depth < want:
        why += f"; at most depth {fits} fits {fp.smallest(limit)}"
    sources["depth"] = why
    return depth


def _patch(
    fp: Fingerprint,
    requests: Requests,
    depth: int,
    anisotropic: bool,
    budget: Budget,
    sources: dict[str, str],
    notes: list[str],
) -> tuple[tuple[int, ...], int]:
    """Patch and batch: the patch covers the receptive field (at least 128 px, at most the images'
    size), the batch fills the device's voxels per step (at least 2, for batch norm). ``notes``
    gets the warnings the plan has for the user (a patch clamped to the images)."""
    multiple = 2**depth
    z_multiple = 2 ** (depth - 1) if anisotropic else multiple
    smallest = fp.smallest_shape
    per_step = budget.voxels_per_step[fp.dims]
    if fp.dims == 3:
        # volumes cost 1.3x more per voxel: the per-step voxels allow 2 x 16 x 64 x 64 (anisotropic
        # voxels: 8 x 96 x 96, as many voxels spanning a similar physical depth)
        side = requests.patch_side or (96 if anisotropic else 64)
        z = requests.patch_z or (8 if anisotropic else 16)
        wanted: tuple[int, ...] = (z, side)
        got: tuple[int, ...] = (
            max(z_multiple, min(z, smallest[0]) // z_multiple * z_multiple),
            max(multiple, min(side, min(smallest[-2:])) // multiple * multiple),
        )
        requested = bool(requests.patch_side or requests.patch_z)
        limits = (smallest[0] < z, min(smallest[-2:]) < side)
        sources["patch"] = _patch_source(fp, wanted, got, limits, requested, None, notes)
    else:
        receptive = receptive_field(depth)
        side = requests.patch_side if requests.patch_side is not None else max(128, min(256, receptive))
        wanted, got = (side,), (max(multiple, min(side, min(smallest[-2:])) // multiple * multiple),)
        limits = (min(smallest[-2:]) < side,)
        requested = requests.patch_side is not None
        sources["patch"] = _patch_source(fp, wanted, got, limits, requested, receptive, notes)
    patch: tuple[int, ...] = (*got[:-1], got[-1], got[-1])
    if requests.batch_size is not None:
        batch = requests.batch_size
        sources["batch_size"] = "set"
    elif requests.batch_images is not None:
        batch = instantdl_batch(requests.batch_images)
        sources["batch_size"] = f"InstantDL's batchsize {requests.batch_images}, at least {MIN_BATCH}"
    else:
        batch = max(MIN_BATCH, per_step // math.prod(patch))
        sources["batch_size"] = f"{per_step // 1000} k voxels per step"
    return patch, batch


def _patch_source(
    fp: Fingerprint,
    wanted: tuple[int, ...],
    got: tuple[int, ...],
    limits: tuple[bool, ...],
    requested: bool,
    receptive: int | None,
    notes: list[str],
) -> str:
    """Where the patch came from, for the plan table: ``wanted`` (set, or the default) became ``got``
    (``(side,)`` in 2D, ``(z, side)`` in 3D) because of the smallest image along the axes in
    ``limits``, or the U-Net's size multiple. Never claims to cover a receptive field it does not;
    a set size clamped to the images, or an image that keeps the patch below the receptive field
    (2D: ``receptive``), goes to ``notes`` as well."""
    shown = " x ".join(map(str, (*got, got[-1])))  # the patch: the in-plane sides are equal
    limited = [ax for ax, limit in zip((0, None)[-len(got) :], limits, strict=True) if limit]
    image = fp.smallest(limited[0]) if limited else ""
    if requested:
        if got == wanted:
            return "set"
        asked = " x ".join(map(str, wanted))
        if limited:
            notes.append(
                f"the patch size set, {asked} px, is larger than {image}: training on patches of {shown} px"
            )
            return f"set to {asked}, clamped to fit {image}"
        return f"set to {asked}, rounded down to the U-Net's size multiple"
    fits = f"fits {image}" if limited else ""
    if receptive is None:  # 3D: no receptive field in the default
        return f"3D default, {fits}" if fits else "3D default"
    if got[-1] >= receptive:
        covers = f"covers the receptive field of {receptive} px"
        return f"{fits}; {covers}" if fits else covers
    if not fits:
        return f"at most 256 px, less than the receptive field of {receptive} px"
    if fp.outlier(limited[0]):
        notes.append(
            f"training patches of {shown} px fit {image}, less than the network's receptive field of "
            f"{receptive} px; if that image is an outlier, remove it from the training images"
        )
    return f"{fits}, less than the receptive field of {receptive} px"


def instantdl_batch(batchsize: int) -> int:
    """Patches per step for InstantDL's ``batchsize``: the number itself, and at least
    :data:`MIN_BATCH`.

    InstantDL's examples ask for 1. With one sample per step training normalizes each patch by its
    own statistics and evaluation by their running average, and the two disagree wherever patches
    differ: on InstantDL's lung example (CT slices: body or air) one 256 px patch per step kept the
    validation Jaccard at 0.27 for 6 epochs while the training loss fell (test 0.30, Otsu 0.29);
    statistics re-measured afterwards on 10-64 clean patches gave 0.74-0.84, and two patches per step
    gave 0.78 within the same budget.
    """
    return max(MIN_BATCH, batchsize)


def step_cost(dims: int, depth: int) -> float:
    """Microseconds per voxel of a U-Net training step on the reference CPU."""
    costs = US_PER_VOXEL[dims]
    return costs[int(np.clip(depth, min(costs), max(costs)))]


def step_seconds(dims: int, depth: int, batch: int, patch: tuple[int, ...]) -> float:
    """Seconds of a U-Net training step on the reference CPU: the per-voxel cost, except that a 3D
    batch of one costs :data:`BATCH_OF_ONE_3D` times more (measured: the 3D convolutions' backward
    pass takes a slow path; 1.6 s for one 16 x 64 x 64 patch against 0.6 s for two)."""
    seconds = step_cost(dims, depth) * batch * math.prod(patch) / 1e6
    return seconds * (BATCH_OF_ONE_3D if dims == 3 and batch == 1 else 1.0)


def validation_voxels(
    shapes: list[tuple[int, ...]], tile: tuple[int, ...], halo: tuple[int, ...], multiples: tuple[int, ...]
) -> int:
    """The voxels one validation pass predicts: every tile of every validation image (or held-out
    block), overlaps included, as :class:`idl.train.validation.WholeImageValidation` tiles them."""
    from idl.infer.tiling.engine import tiled_voxels

    return tiled_voxels(shapes, tile, halo, multiples)


def budget_for(device: str, memory_gb: float | None = None, processes: int = 1) -> Budget:
    """The budget of a device kind; a GPU's voxels per step scale with its memory (the table's are
    for 8 GB, at most 4x more) and with the number of GPUs training together (``processes``: the
    batch is the global one, each GPU takes its part). On CPUs the batch stays the one process's,
    so a run on several CPU processes takes the steps a single process would."""
    budget = BUDGETS[device_kind(device)]
    if device_kind(device) != "cuda" or memory_gb is None:
        return budget
    scale = float(np.clip(memory_gb / GPU_REFERENCE_GB, 0.5, 4.0)) * processes
    per_step = {d: int(v * scale) for d, v in budget.voxels_per_step.items()}
    return replace(budget, voxels_per_step=per_step)


def make_plan(
    fp: Fingerprint,
    requests: Requests,
    device: str,
    validation: str = "",
    base_lr: float = 1e-3,
    memory_gb: float | None = None,
    validation_voxels: int = 0,
    processes: int = 1,
) -> Plan:
    """The plan for a U-Net task (segmentation, instance, regression) on ``fp``; ``memory_gb``: the
    GPU's memory, when training on one (``processes`` GPUs: see :func:`budget_for`);
    ``validation_voxels``: the voxels one validation predicts, tile overlaps included
    (:func:`validation_voxels`), counted into the time budget."""
    kind = device_kind(device)
    budget = budget_for(device, memory_gb, processes)
    sources: dict[str, str] = {}
    notes: list[str] = []
    anisotropic = _anisotropy(fp, requests, sources)
    depth = _depth(fp, requests, anisotropic, sources)
    patch, batch = _patch(fp, requests, depth, anisotropic, budget, sources, notes)
    if sources["batch_size"] != "set" and batch % processes:
        batch += processes - batch % processes  # every process takes an equal part
        sources["batch_size"] += f", a multiple of {processes} processes"
    step = step_seconds(fp.dims, depth, batch, patch)
    seconds = budget.seconds[f"{fp.dims}d"] * budget.speed
    validation_cost = validation_voxels * US_PER_VALIDATION_VOXEL[fp.dims] / 1e6
    steps_per_epoch, epochs, patience, lr, warmup = _schedule(
        requests, budget, seconds / step, kind, base_lr, sources, validation_cost / step
    )
    return Plan(
        fp.dims,
        patch,
        batch,
        depth,
        anisotropic,
        steps_per_epoch,
        epochs,
        patience,
        lr,
        warmup,
        validation,
        sources=sources,
        notes=tuple(notes),
    )


def _schedule(
    requests: Requests,
    budget: Budget,
    steps: float,
    kind: str,
    base_lr: float,
    sources: dict[str, str],
    validation_steps: float = 0.0,
) -> tuple[int, int, int, float, int]:
    """Steps per epoch, epochs, patience, learning rate and warm-up steps for a budget of ``steps``;
    one validation costs as long as ``validation_steps`` training steps. Validation is part of the
    budget: an epoch grows beyond the default number of steps when its validation would otherwise
    take more than :data:`VALIDATION_SHARE` of it."""
    if requests.steps_per_epoch:
        steps_per_epoch = requests.steps_per_epoch
        sources["steps_per_epoch"] = "set"
    else:
        longer = math.ceil(validation_steps * (1 - VALIDATION_SHARE) / VALIDATION_SHARE)
        steps_per_epoch = max(budget.steps_per_epoch, longer)
        sources["steps_per_epoch"] = (
            f"validation within {VALIDATION_SHARE:.0%} of an epoch"
            if longer > budget.steps_per_epoch
            else f"{kind} default"
        )
    if requests.epochs is not None:
        epochs = requests.epochs
        sources["epochs"] = "set"
    else:
        epochs = max(1, round(steps / (steps_per_epoch + validation_steps)))
        sources["epochs"] = f"{kind} budget" + (", validation included" if validation_steps else "")
        if requests.epoch_limit is not None and requests.epoch_limit < epochs:
            epochs = requests.epoch_limit
            sources["epochs"] = "InstantDL's iterations_over_dataset"
    if requests.patience is not None:
        patience = requests.patience
        sources["patience"] = "set"
    else:
        patience = max(MIN_PATIENCE, epochs // 2)
        sources["patience"] = "half the epochs" if epochs // 2 > MIN_PATIENCE else f"at least {MIN_PATIENCE}"
    lr = requests.learning_rate if requests.learning_rate is not None else base_lr
    sources["learning_rate"] = "set" if requests.learning_rate is not None else "default"
    warmup = min(steps_per_epoch, round(WARMUP_FRACTION * epochs * steps_per_epoch))
    return steps_per_epoch, epochs, patience, lr, warmup


SCHEDULES = ("trapezoid", "cosine", "constant")
DECAY_FRACTION = 0.4  # trapezoid: the last 40 % of the steps decay linearly to zero


def learning_rate_at(step: int, total: int, base: float, warmup: int, schedule: str = "trapezoid") -> float:
    """The step size of ``step`` (from 0) of ``total``: a linear warm-up over ``warmup`` steps, then

    - ``trapezoid``: constant, and over the last :data:`DECAY_FRACTION` of the steps linearly to zero;
    - ``cosine``: a cosine from ``base`` to zero;
    - ``constant``: ``base`` to the end.
    """
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_start = total - DECAY_FRACTION * (total - warmup)
    if step < decay_start:
        return base
    return base * max(0.0, (total - step) / max(1.0, total - decay_start))


def whole_image_plan(
    patch: tuple[int, ...],
    batch: int,
    steps: float,
    requests: Requests,
    kind: str,
    base_lr: float,
    sources: dict[str, str],
    network: str,
) -> Plan:
    """The plan of a network that is not a U-Net (no depth to plan): schedule and budget only (the
    classifier's and Mask R-CNN's plans, in their tasks' modules, end here)."""
    steps_per_epoch, epochs, patience, lr, warmup = _schedule(
        requests, BUDGETS[kind], steps, kind, base_lr, sources
    )
    return Plan(
        2,
        patch,
        batch,
        0,
        False,
        steps_per_epoch,
        epochs,
        patience,
        lr,
        warmup,
        sources=sources,
        network=network,
    )
