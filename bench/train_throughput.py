"""Training throughput: idl's training loop against a minimal hand-written torch loop, side by side.

Both train the same network (built by idl's trainer for the project, from the same initial weights, in
the same channels-last layout) on the same patches, batch size, loss, optimizer and learning rate:

- **idl**: the stage ``idl-train`` runs, :func:`idl.train.pipeline.fit`, on the run that
  :func:`idl.train.pipeline.resolve` and :func:`idl.train.pipeline.prepare` build from the project
  (reading and normalizing the images, the plan, the network, Adam). Each round is one training epoch
  of the planned steps (``--steps`` to change): a fresh data loader, random patches drawn and augmented
  on the fly, the per-step learning rate, precise batch norm where the task uses it, the per-epoch
  checkpoints and MLflow metrics, progress bars (to ``os.devnull``). Validation is switched off: it is
  a planned share of every epoch, not part of a step's cost. Timing hooks replace three names in
  :mod:`idl.train.loop` for the run (its ``tqdm``, ``train_epoch`` and ``recompute_batch_norm``,
  delegating to the originals), so idl's code is measured unchanged; the time spent inside the batch
  iterator's ``next()`` is the wait for data.
- **hand-written**: ``zero_grad``, forward, loss, backward, ``step`` over the very batches of idl's
  epoch, drawn once beforehand as tensors, with the learning rate idl's schedule gives each step (no
  data loading, nothing else).

Every round of either loop starts from the same weights and Adam state (idl's after the warm-up), so
both compute the same steps on the same numbers.

Rounds alternate which loop goes first (the machine may be shared); a short warm-up of each comes
first. Printed: samples (patches or images) per second of each round; the overhead (idl's time per
sample over the hand-written loop's, minus 1) by wall clock over all rounds, by the median step (a
step and the wait for the next batch: per-epoch work left out, and less sensitive to bursts of load
from other processes) and by CPU time; and where idl's wall time went. Absolute times depend on the
machine and its load; only ratios measured in the same run mean something.

    python bench/train_throughput.py PROJECT [--task semantic] [--steps N] [--rounds 2] [--threads N]

``PROJECT/train`` is copied to a temporary folder first (so a read-only data folder works and no
model in ``PROJECT`` is touched). Tasks trained as ``loss(model(x), y)``: semantic, instance,
regression, classification (not Mask R-CNN).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from idl.train import loop
from idl.train.config import resolve_config
from idl.train.loop import TrainState
from idl.train.pipeline import Run, fit, prepare, resolve
from idl.train.plan import learning_rate_at
from idl.train.tracking import Tracker

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Clock:
    """Seconds spent in the parts of idl's loop the timing hooks see, summed over one round."""

    data: float = 0.0  # inside next() of the epoch's batch iterator
    epoch: float = 0.0  # inside train_epoch (steps and data)
    precise_bn: float = 0.0  # recomputing batch-norm statistics after the epoch
    steps: list[float] = field(default_factory=list)  # from one batch handed out to the next

    def reset(self) -> None:
        self.data = self.epoch = self.precise_bn = 0.0
        self.steps = []


class TimedIterable:
    """Iterates ``inner`` and adds the time spent getting each item (the iterator's creation included)
    to ``clock.data``: how long the loop waits for its next batch. ``clock.steps`` gets the time from
    one item handed out to the next (or to the end): a step and the wait for the following batch."""

    def __init__(self, inner: Iterable[Any], clock: Clock) -> None:
        self.inner = inner
        self.clock = clock

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        start = time.perf_counter()
        handed = None
        items = iter(self.inner)
        while True:
            try:
                item, done = next(items), False
            except StopIteration:
                done = True
            now = time.perf_counter()
            self.clock.data += now - start
            if handed is not None:
                self.clock.steps.append(now - handed)
            if done:
                return
            handed = time.perf_counter()
            yield item
            start = time.perf_counter()


@contextmanager
def timing_hooks(clock: Clock) -> Iterator[None]:
    """Wrap ``tqdm``, ``train_epoch`` and ``recompute_batch_norm`` of :mod:`idl.train.loop` with timers
    for the duration of the block; idl's own functions still do the work. Progress bars go to
    ``os.devnull`` so the measurement's output stays readable (they are still drawn)."""
    originals = {name: getattr(loop, name) for name in ("tqdm", "train_epoch", "recompute_batch_norm")}
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below

    def tqdm(iterable: Iterable[Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        bar = originals["tqdm"](iterable, *args, file=devnull, **kwargs)
        return bar if iterable is None else TimedIterable(bar, clock)

    def timed(name: str, field: str) -> Callable[..., Any]:
        """``loop.<name>``, adding its time to ``clock.<field>``."""

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                setattr(clock, field, getattr(clock, field) + time.perf_counter() - start)

        return call

    hooks = {
        "tqdm": tqdm,
        "train_epoch": timed("train_epoch", "epoch"),
        "recompute_batch_norm": timed("recompute_batch_norm", "precise_bn"),
    }
    for name, hook in hooks.items():
        setattr(loop, name, hook)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(loop, name, original)
        devnull.close()


@dataclass
class Round:
    """One timed pass of one loop: wall and CPU seconds (all threads), per-step wall seconds, and for
    idl the seconds in its parts (see :class:`Clock`)."""

    loop: str
    samples: int
    seconds: float
    cpu: float
    steps: list[float]
    data: float = 0.0
    epoch: float = 0.0
    precise_bn: float = 0.0

    @property
    def per_second(self) -> float:
        return self.samples / self.seconds


@dataclass
class Bench:
    """The prepared run, the hand-written loop's own copy of the network, and the pre-drawn batches."""

    run: Run
    tracker: Tracker
    hand_model: torch.nn.Module
    hand_optimizer: torch.optim.Optimizer
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batches: list[Batch]
    rates: list[float]  # the learning rate of each step of idl's epoch
    clock: Clock = field(default_factory=Clock)
    start: tuple[dict[str, Any], dict[str, Any]] | None = None  # weights and Adam state of every round

    def remember_start(self) -> None:
        """Keep idl's weights and optimizer state as they are now: every round starts from them."""
        self.start = copy.deepcopy((self.run.model.state_dict(), self.run.optimizer.state_dict()))

    def restart(self) -> None:
        """Both networks and optimizers back to the remembered start, so both loops compute the same
        steps from the same numbers in every round (networks trained apart can differ in speed, e.g.
        where one meets denormal floats and the other does not)."""
        if self.start is None:
            return
        weights, state = self.start
        pairs = ((self.run.model, self.run.optimizer), (self.hand_model, self.hand_optimizer))
        for model, optimizer in pairs:
            model.load_state_dict(weights)
            optimizer.load_state_dict(state)


def channels_last_batch(x: torch.Tensor) -> torch.Tensor:
    """The layout idl feeds its channels-last network (images 4D, volumes 5D)."""
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def build(project: Path, task: str, steps: int | None, device: str) -> Bench:
    """idl's run for ``project`` with validation off and one epoch per round, and the hand-written
    loop's network (a copy of idl's initial weights), optimizer and the epoch's batches as tensors."""
    config = resolve_config(
        task=task, epochs=1, steps_per_epoch=steps, package=False, evaluate=False, device=device
    )
    run = prepare(resolve(project, config, resume=False, overwrite=False), progress=True)
    if run.setup.steps is not None:
        raise SystemExit(f"{task}: this network is not trained as loss(model(x), y); not measured here")
    run = replace(run, setup=replace(run.setup, validation=None, val_set=None))
    tracker = Tracker(project, None)
    tracker.log_params({**run.config.to_dict(), "plan": run.plan.to_dict()})

    hand_model = type(run.model)(run.setup.spec)
    hand_model.load_state_dict(run.model.state_dict())
    volumes = any(p.ndim == 5 for p in hand_model.parameters())
    layout = torch.channels_last_3d if volumes else torch.channels_last
    hand_model = hand_model.to(run.resolved.start.device, memory_format=layout)
    hand_optimizer = torch.optim.Adam(hand_model.parameters(), lr=run.plan.learning_rate)
    loader = DataLoader(run.setup.train_set, batch_size=run.plan.batch_size, shuffle=False)
    run.setup.train_set.epoch = 0  # the batches of idl's every round (each starts at epoch 0)
    device = run.resolved.start.device
    batches = [(channels_last_batch(x.to(device)), y.to(device)) for x, y in loader]
    total = len(batches)  # the schedule of idl's one-epoch run: learning_rate_at(i, total, ...)
    rates = [
        learning_rate_at(i, total, run.plan.learning_rate, run.plan.warmup_steps, run.config.lr_schedule)
        for i in range(total)
    ]
    return Bench(run, tracker, hand_model, hand_optimizer, run.setup.loss, batches, rates)


def hand_written(bench: Bench, batches: Sequence[Batch]) -> Round:
    """The minimal loop over pre-loaded batches, with idl's learning rate of each step."""
    bench.restart()
    model, optimizer, loss_fn = bench.hand_model, bench.hand_optimizer, bench.loss
    model.train()
    steps = []
    cpu, start = time.process_time(), time.perf_counter()
    for (x, y), rate in zip(batches, bench.rates, strict=False):
        began = time.perf_counter()
        optimizer.param_groups[0]["lr"] = rate
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        steps.append(time.perf_counter() - began)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Round("hand-written", sum(len(x) for x, _ in batches), seconds, cpu, steps)


def idl_loop(bench: Bench, n_batches: int | None = None) -> Round:
    """One epoch of idl-train's fit stage (a fresh state, so every round trains epoch 0's patches);
    ``n_batches`` shortens it to the first batches (the warm-up)."""
    bench.restart()
    run = replace(bench.run, state=TrainState())
    if n_batches is not None:
        train_set = Subset(run.setup.train_set, range(n_batches * run.plan.batch_size))
        run = replace(run, setup=replace(run.setup, train_set=train_set))
    clock = bench.clock
    clock.reset()
    with timing_hooks(clock):
        cpu, start = time.process_time(), time.perf_counter()
        fit(run, bench.tracker)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    samples = len(run.setup.train_set)
    return Round("idl", samples, seconds, cpu, clock.steps, clock.data, clock.epoch, clock.precise_bn)


@dataclass(frozen=True)
class Summary:
    """One loop's rounds together: seconds per sample by wall clock, by the median step, and by CPU."""

    wall: float
    step: float
    cpu: float

    @classmethod
    def of(cls, rounds: list[Round], batch: int) -> Summary:
        samples = sum(r.samples for r in rounds)
        steps = [s for r in rounds for s in r.steps]
        return cls(
            sum(r.seconds for r in rounds) / samples,
            statistics.median(steps) / batch,
            sum(r.cpu for r in rounds) / samples,
        )


def report(rounds: list[Round], batch: int) -> None:
    """The rounds, both loops' samples per second, idl's overhead and where idl's time went."""
    header = f"{'loop':<12} {'samples':>7} {'s':>8} {'CPU s':>8} {'samples/s':>9} {'data wait':>9}"
    print(f"\n{'round':>5}  {header}")
    for i, r in enumerate(rounds):
        wait = f"{r.data / r.seconds:.1%}" if r.loop == "idl" else ""
        row = f"{r.loop:<12} {r.samples:>7} {r.seconds:>8.2f} {r.cpu:>8.2f} {r.per_second:>9.2f} {wait:>9}"
        print(f"{i // 2 + 1:>5}  {row}")
    mine = [r for r in rounds if r.loop == "idl"]
    theirs = [r for r in rounds if r.loop == "hand-written"]
    idl, hand = Summary.of(mine, batch), Summary.of(theirs, batch)
    pairs = [a.seconds / a.samples / (b.seconds / b.samples) - 1 for a, b in zip(mine, theirs, strict=True)]
    print(f"\n{'samples/s':<34} {'idl':>8} {'hand':>8} {'overhead':>9}")
    for name, a, b in (
        ("wall clock, all rounds", idl.wall, hand.wall),
        ("median step (per-epoch work out)", idl.step, hand.step),
        ("CPU time (all threads)", idl.cpu, hand.cpu),
    ):
        print(f"{name:<34} {1 / a:>8.2f} {1 / b:>8.2f} {a / b - 1:>+9.1%}")
    print(
        f"overhead per round pair (wall clock): {', '.join(f'{p:+.1%}' for p in pairs)}; "
        f"median {statistics.median(pairs):+.1%}"
    )
    total = sum(r.seconds for r in mine)
    data = sum(r.data for r in mine)
    steps = sum(r.epoch for r in mine) - data
    bn = sum(r.precise_bn for r in mine)
    rest = total - steps - data - bn
    print(
        f"idl's wall time: steps {steps / total:.1%}, waiting for data {data / total:.1%}, "
        f"precise batch norm {bn / total:.1%}, rest of the epoch (loader, checkpoints, MLflow, "
        f"bars) {rest / total:.1%}"
    )
    if bn:
        step = steps / sum(len(r.steps) for r in mine)
        without = (total - bn) / sum(r.samples for r in mine) / hand.wall - 1
        print(
            f"precise batch norm: {bn / len(mine):.1f} s per epoch, as long as {bn / len(mine) / step:.1f} "
            f"training steps; overhead without it {without:+.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a project folder with train/image and train/groundtruth")
    parser.add_argument("--task", default="semantic")
    parser.add_argument("--steps", type=int, help="steps per round [default: the planned epoch's]")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each loop")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps of each loop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads [default: torch's, as idl-train]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="idl-throughput-") as tmp:
        project = Path(tmp) / args.project.resolve().name
        shutil.copytree(args.project / "train", project / "train")
        bench = build(project, args.task, args.steps, args.device)
        plan = bench.run.plan
        print(
            f"{args.project} ({args.task}): {plan.network or f'U-Net depth {plan.depth}'}, "
            f"{' x '.join(map(str, plan.patch))} px, batch {plan.batch_size}, {len(bench.batches)} steps "
            f"per round; torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        hand_written(bench, bench.batches[: args.warmup])
        idl_loop(bench, args.warmup)
        bench.remember_start()
        rounds: list[Round] = []
        for i in range(args.rounds):
            pair = [lambda: hand_written(bench, bench.batches), lambda: idl_loop(bench)]
            for measure in pair if i % 2 == 0 else pair[::-1]:
                rounds.append(measure())
                r = rounds[-1]
                print(f"  round {i + 1} {r.loop}: {r.per_second:.2f} samples/s", flush=True)
        bench.tracker.end()
        report(rounds, plan.batch_size)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
