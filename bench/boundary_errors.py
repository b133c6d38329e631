"""Where a binary segmentation's errors lie: on the objects' edges or elsewhere.

On bright nuclei a threshold is already close to the masks, and the Jaccard index alone cannot say
whether a network's small lead over it is all there is to gain. This prints, for a trained project
(one folder of ``bench/real_data.py --out``: PROJECT/test and PROJECT/results), how much a one-pixel
shift of every ground-truth edge costs (dilated and eroded masks scored against the masks), and
which share of the network's and of Otsu's wrong pixels lie within one pixel of an edge.

    python bench/boundary_errors.py PROJECT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _baselines as baselines  # noqa: E402

from idl.infer.core.project import Pair, pair_files  # noqa: E402
from idl.infer.evaluate.metrics import confusion_matrix, jaccard  # noqa: E402
from idl.infer.io.images import read_image  # noqa: E402


def edge_band(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of an edge of ``mask`` (inside or outside it)."""
    return ndimage.binary_dilation(mask) ^ ndimage.binary_erosion(mask)


def boundary_report(test: list[Pair], results: Path, bright: bool) -> dict[str, float]:
    """Jaccard of the network, of Otsu and of the masks shifted by one pixel, and the share of the
    network's and Otsu's wrong pixels within one pixel of an edge (over all test pixels)."""
    counts = {k: np.zeros((2, 2), np.int64) for k in ("network", "otsu", "dilated", "eroded")}
    on_edge = {k: np.zeros(2) for k in ("network", "otsu")}
    for pair in test:
        truth = read_image(pair.groundtruth) > 0
        network = read_image(results / pair.image.name).reshape(truth.shape) > 0
        otsu = baselines.otsu_mask(baselines.first_channel(pair, 2), bright).astype(bool)
        band = edge_band(truth)
        candidates = {
            "network": network,
            "otsu": otsu,
            "dilated": ndimage.binary_dilation(truth),
            "eroded": ndimage.binary_erosion(truth),
        }
        for name, mask in candidates.items():
            counts[name] += confusion_matrix(mask, truth, 2)
        for name in on_edge:
            wrong = candidates[name] ^ truth
            on_edge[name] += [(wrong & band).sum(), wrong.sum()]
    report = {f"jaccard {name}": jaccard(cm) for name, cm in counts.items()}
    for name, (edge, wrong) in on_edge.items():
        report[f"wrong pixels {name}"] = float(wrong)
        report[f"on an edge {name}"] = float(edge / max(wrong, 1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("project", type=Path, help="a trained binary project with test/ and results/")
    args = parser.parse_args()
    bright = baselines.bright_objects(pair_files(args.project / "train"), 2)
    report = boundary_report(pair_files(args.project / "test"), args.project / "results", bright)
    for name, value in report.items():
        print(f"{name}: {value:.0f}" if name.startswith("wrong") else f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
