"""Flow fields (infer/post/flows.py) on hand-built objects: flows point to the centre, two touching
convex objects come back apart, a bent object stays one, an object across tile borders is kept once
and the tiles give the whole image's labels."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from idl.infer.post.flows import diffused_heat, flow_field, heat_flows, labels_from_flows, objects_from_output


def _disk(shape: tuple[int, int], centre: tuple[int, int], radius: float, value: int = 1) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    labels[disk(centre, radius, shape=shape)] = value
    return labels


def _exact(labels: np.ndarray) -> np.ndarray:
    """The output of a perfect network: foreground probability 0/1 and the labels' own flows."""
    return np.concatenate([(labels > 0).astype(np.float32)[None], flow_field(labels)])


def _matches(truth: np.ndarray, found: np.ndarray) -> dict[int, float]:
    """Each true object's best IoU with a found one."""
    best = {}
    for k in np.unique(truth)[1:]:
        ids, counts = np.unique(found[truth == k], return_counts=True)
        counts[ids == 0] = 0
        j = ids[np.argmax(counts)]
        inter = counts.max()
        best[int(k)] = inter / (np.count_nonzero(truth == k) + np.count_nonzero(found == j) - inter)
    return best


def test_flows_are_unit_vectors_towards_the_centre() -> None:
    labels = _disk((41, 41), (20, 20), 12)
    flows = flow_field(labels)
    ys, xs = np.nonzero(labels)
    away = np.hypot(ys - 20, xs - 20) >= 3
    towards = np.stack([20 - ys, 20 - xs])[:, away] / np.hypot(ys - 20, xs - 20)[away]
    cosine = (flows[:, ys[away], xs[away]] * towards).sum(axis=0)
    assert cosine.min() > 0.9  # every pixel 3 px or more from the centre points at it
    norm = np.hypot(*flows[:, ys[away], xs[away]])
    np.testing.assert_allclose(norm, 1.0, atol=1e-5)
    assert np.abs(flows[:, labels == 0]).max() == 0
    heat = diffused_heat(labels)
    assert heat[20, 20] == 1.0 and heat[labels > 0].min() == 0.0 and heat[labels == 0].max() == 0


def test_two_touching_objects_come_back_apart() -> None:
    """A disk and a square sharing an edge: from exact outputs both come back exactly."""
    labels = _disk((48, 64), (24, 18), 12, 1)
    labels[14:34, 30:50] = 2  # touches the disk's right edge
    found, scores = objects_from_output(_exact(labels))
    assert found.max() == 2
    assert min(_matches(labels, found).values()) == 1.0
    assert scores[24, 18] == pytest.approx(1.0) and scores[found == 0].max() == 0


def test_a_bent_object_is_one_object() -> None:
    """A U-shaped cell (non-convex: its mean lies outside it) beside a disk: the flows follow the bend
    to one centre inside it, so it is found whole, not cut in two."""
    labels = _disk((64, 96), (32, 30), 14, 1)
    bent = np.zeros(labels.shape, bool)
    bent[10:54, 60:68] = bent[46:54, 60:90] = bent[10:54, 82:90] = True
    labels[bent] = 2
    found, _ = objects_from_output(_exact(labels))
    assert found.max() == 2
    assert _matches(labels, found) == {1: 1.0, 2: 1.0}


def test_objects_whose_flows_disagree_are_dropped() -> None:
    """Flows that point nowhere in particular (noise) make no object that passes the flow-error
    check; the disk beside them, with its own flows, does."""
    labels = _disk((48, 96), (24, 24), 12, 1)
    out = _exact(labels)
    out[0, 8:40, 56:88] = 1.0  # foreground without an object's flows
    noise = np.random.default_rng(0).normal(size=(2, 32, 32))
    out[1:, 8:40, 56:88] = noise / np.hypot(*noise)
    found, _ = labels_from_flows(out[0], out[1:])
    assert _matches(labels, found) == {1: 1.0}
    assert not found[8:40, 56:88].any()
    kept, _ = labels_from_flows(out[0], out[1:], flow_error=np.inf)  # without the check, noise objects
    assert kept[8:40, 56:88].any()


def test_heat_flows_turn_with_the_image() -> None:
    """A quarter turn of labels and heat gives the flows turned, vectors included: what the training
    augmentation relies on (flows made from the augmented heat)."""
    labels = _disk((40, 52), (18, 20), 10, 1) + _disk((40, 52), (22, 38), 8, 2)
    heat = diffused_heat(labels)
    flows = heat_flows(labels, heat)
    turned = heat_flows(np.rot90(labels), np.rot90(heat))
    # np.rot90 turns counter-clockwise: new (y, x) = (W - 1 - x, y), so (dy, dx) -> (-dx, dy)
    np.testing.assert_allclose(turned[0], np.rot90(-flows[1]), atol=1e-6)
    np.testing.assert_allclose(turned[1], np.rot90(flows[0]), atol=1e-6)
    mirrored = heat_flows(labels[:, ::-1], heat[:, ::-1])
    np.testing.assert_allclose(mirrored[1], -flows[1][:, ::-1], atol=1e-6)
    np.testing.assert_allclose(mirrored[0], flows[0][:, ::-1], atol=1e-6)


def test_tiles_keep_each_object_once_as_the_whole_image_does(tile_objects) -> None:
    """The exact outputs of 288 x 288 px of touching nuclei, cut into 128 px tiles with a 32 px halo:
    each tile follows its own flows and keeps the objects whose centre it owns, and the label image
    is the whole image's, object for object."""
    from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei

    labels = synthetic_nuclei(np.random.default_rng(4), NucleiSpec(size=288))[1].astype(np.int64)
    out = _exact(labels)
    whole, _ = objects_from_output(out)
    assert min(_matches(labels, whole).values()) > 0.9
    tiled, scores, tiles = tile_objects(out, objects_from_output)
    assert len(tiles) == 16
    crossing = [k for k in np.unique(whole)[1:] if sum(bool((whole == k)[t.owned].any()) for t in tiles) > 1]
    assert len(crossing) > 3  # objects lie across tile borders
    assert tiled.max() == whole.max() > 10
    assert min(_matches(whole.astype(np.int64), tiled.astype(np.int64)).values()) == 1.0
    assert min(_matches(tiled.astype(np.int64), whole.astype(np.int64)).values()) == 1.0


def test_volumes_two_touching_balls_and_a_bent_tube() -> None:
    """In 3D: two balls that touch and an L-shaped tube come back exactly from exact outputs, and the
    flows of a ball point at its centre."""
    from skimage.draw import ellipsoid

    labels = np.zeros((24, 40, 56), np.int32)
    ball = ellipsoid(7, 7, 7)[1:-1, 1:-1, 1:-1]  # 15^3
    labels[4:19, 4:19, 4:19][ball] = 1
    labels[4:19, 4:19, 17:32][ball & (labels[4:19, 4:19, 17:32] == 0)] = 2  # touches the first
    labels[8:14, 24:36, 38:44] = 3
    labels[8:14, 30:36, 44:54] = 3  # the tube bends
    flows = flow_field(labels)
    assert flows.shape == (3, 24, 40, 56)
    z, y, x = np.nonzero(labels == 1)
    far = np.sqrt((z - 11) ** 2 + (y - 11) ** 2 + (x - 11) ** 2) >= 3
    towards = np.stack([11 - z, 11 - y, 11 - x])[:, far]
    towards = towards / np.linalg.norm(towards, axis=0)
    assert (flows[:, z[far], y[far], x[far]] * towards).sum(axis=0).min() > 0.9
    found, _ = objects_from_output(_exact(labels))
    assert found.max() == 3
    assert _matches(labels, found) == {1: 1.0, 2: 1.0, 3: 1.0}


def test_the_fitted_thresholds_reach_the_labels_the_package_and_the_info() -> None:
    """A model's ``postprocessing`` (fitted on its validation images) is what idl-predict's labels,
    the package's README and config, and ``--info`` use; without it, the defaults."""
    import json

    from idl.infer.core.model_info import ModelInfo
    from idl.infer.tasks.registry import task_named

    fitted = {"prob_threshold": 0.6, "flow_error": 1.0}
    info = ModelInfo(
        task="instance",
        kind="flows",
        in_channels=1,
        num_classes=3,
        size_multiple=8,
        halo=16,
        postprocessing=fitted,
    )
    assert ModelInfo.from_json(info.to_json()).postprocessing == fitted
    plain = ModelInfo.from_json(json.dumps({**json.loads(info.to_json()), "postprocessing": {}}))
    task = task_named("flows")
    assert "  labels: flow_error 1, prob_threshold 0.6 (fitted on the validation images)" in task.describe(
        info
    )
    assert "  labels: the default thresholds" in task.describe(plain)
    text = task.package_text(info)
    assert text.postprocessing["flow_error_threshold"] == 1.0
    assert text.postprocessing["probability_threshold"] == 0.6
    assert "probability >= 0.6" in text.use and "chosen on the validation images" in text.use
    # flows a fifth of their length: the default limit (0.4) drops both objects, the fitted one keeps them
    labels = _disk((48, 64), (24, 18), 12, 1)
    labels[14:34, 30:50] = 2
    out = _exact(labels)
    out[1:] *= 0.2
    assert task.outputs(info).make(out)[0].max() == 2
    assert task.outputs(plain).make(out)[0].max() == 0
