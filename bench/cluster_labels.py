"""Instance labels of one volume predicted by blocks against the volume predicted whole: the same objects
(up to their numbering), ids unique across blocks, and what labelling block by block costs.

    python bench/cluster_labels.py MODEL_3D_INSTANCE SOURCE_VOLUME --shape 60 256 256 --block-size 64

The input is SOURCE_VOLUME (a real volume) repeated to ``--shape`` (mirrored, no seams), written as an
uncompressed TIFF. Three whole ``idl-predict`` processes, one thread per process or worker: the volume
whole in memory into a TIFF (labels from the whole probability map), by blocks in one process, and by
blocks on ``--dask local:2``. Printed: each one's wall time and peak memory, how many objects, whether
the labels are the same objects, how many objects cross a block border, and the largest id against the
number of objects. Results: docs/benchmarks.md, "Prediction on a cluster".
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_scaling import make_volume, run  # noqa: E402


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` hold the same objects, whatever their numbers."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def crossing(labels: np.ndarray, block: int) -> int:
    """How many objects have voxels in more than one block of side ``block``."""
    coords = np.argwhere(labels > 0)
    ids = labels[labels > 0].astype(np.int64)
    cells = np.ravel_multi_index(tuple((coords // block).T), tuple(-(-n // block) for n in labels.shape))
    pairs = np.unique(np.stack([ids, cells]), axis=1)
    return int(np.count_nonzero(np.bincount(pairs[0]) > 1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("source")
    parser.add_argument("--shape", type=int, nargs=3, default=[60, 256, 256])
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="idl-labels-"))
    work.mkdir(parents=True, exist_ok=True)
    volume = make_volume(Path(args.source), tuple(args.shape), work / "volume.tif")
    predict = str(Path(sys.executable).with_name("idl-predict"))
    common = [predict, args.model, str(volume), "--threads", "1"]
    blocks = ["--out-format", "zarr", "--block-size", str(args.block_size)]
    settings = {
        "whole volume": ["--out-format", "tif"],
        "blocks, one process": [*blocks, "--save-probabilities"],
        "blocks, dask local:2": [*blocks, "--dask", "local:2"],
    }
    from idl.infer.io.formats.ome_zarr import read_ome_zarr

    labels = {}
    print(
        f"volume {tuple(args.shape)} ({np.prod(args.shape) / 1e6:.1f} M voxels), blocks of {args.block_size}"
    )
    for name, extra in settings.items():
        out = work / re.sub(r"[^a-z0-9]+", "-", name)
        shutil.rmtree(out, ignore_errors=True)
        seconds, peak, log = run([*common, "--out", str(out), *extra])
        found = out / "volume.tif"
        labels[name] = tifffile.imread(found) if found.exists() else read_ome_zarr(out / "volume.ome.zarr")
        cut = re.search(r"(\d+) block\(s\) meet clusters", log)
        a = labels[name]
        note = f", {cut.group(1)} block(s) with cut clusters" if cut else ""
        print(
            f"  {name:<21} {seconds:6.1f} s, peak {peak / 2**20:5.0f} MB in all, "
            f"{len(np.unique(a)) - 1} objects (largest id {a.max()}, {a.dtype}){note}"
        )
    from idl.infer.post.instance_labels import labels_from_probabilities

    whole = labels["whole volume"]
    for name in list(settings)[1:]:
        same = same_objects(labels[name], whole)
        differ = np.count_nonzero((labels[name] > 0) != (whole > 0))
        print(
            f"  {name}: {'the same objects as' if same else 'not the same objects as'} the whole volume "
            f"predicted in memory ({differ} voxels differ in foreground)"
        )
    # the labelling itself, apart from the probabilities' rounding between tilings: the watershed of the
    # whole stored map against the labels made block by block from it
    stored = read_ome_zarr(work / "blocks-one-process" / "probabilities" / "volume.ome.zarr")
    exact = same_objects(labels["blocks, one process"], labels_from_probabilities(stored))
    print(
        f"  blocks: {'the same objects as' if exact else 'DIFFERENT objects from'} the watershed of the "
        "whole map of their probabilities"
    )
    one, two = labels["blocks, one process"], labels["blocks, dask local:2"]
    print(f"  dask local:2 {'identical to' if np.array_equal(one, two) else 'DIFFERENT from'} one process")
    print(f"  objects crossing a block border: {crossing(one, args.block_size)} of {len(np.unique(one)) - 1}")


if __name__ == "__main__":
    main()
