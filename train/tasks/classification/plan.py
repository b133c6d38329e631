"""The training plan of a classifier: batches of whole images, as many steps as the device affords for
the network and input size (measured on the reference CPU of :mod:`idl.train.plan`)."""

from __future__ import annotations

import math

from idl.train.plan import BUDGETS, Plan, Requests, device_kind, whole_image_plan

MIN_CLASSIFIER_STEP = 0.18  # s: resnet18, a batch of 2 images of 28 px (optimizer and per-layer overhead)
US_PER_PIXEL = {  # classifiers, channels-last, batches of 32 (64 px with the small-input stem, 96 px without)
    ("resnet18", False): 3.0,
    ("resnet18", True): 11.0,
    ("resnet34", False): 5.5,
    ("resnet34", True): 20.0,
    ("resnet50", False): 7.0,
    ("resnet50", True): 29.0,
    ("resnet101", False): 13.0,
    ("resnet101", True): 52.0,
}


def make_classification_plan(
    input_size: tuple[int, int],
    variant: str,
    small_input: bool,
    requests: Requests,
    device: str,
    base_lr: float = 1e-3,
) -> Plan:
    """The plan of a classifier: batches of whole images (32 unless set), as many steps as the device
    affords for images of ``input_size`` with this network (:data:`US_PER_PIXEL`)."""
    kind = device_kind(device)
    budget = BUDGETS[kind]
    sources: dict[str, str] = {}
    batch = requests.batch_size or requests.batch_images or 32
    sources["batch_size"] = "set" if requests.batch_size or requests.batch_images else "default"
    per_step = batch * math.prod(input_size) * US_PER_PIXEL.get((variant, small_input), 40.0) / 1e6
    steps = budget.seconds["classification"] * budget.speed / max(per_step, MIN_CLASSIFIER_STEP)
    sources["network"] = "set" if requests.network_set else f"{kind} default"
    network = variant + (" (small-input stem)" if small_input else "")
    return whole_image_plan(tuple(input_size), batch, steps, requests, kind, base_lr, sources, network)
