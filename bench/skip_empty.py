"""``idl-predict --skip-empty``: its threshold on real sets, and its speed on a sparse image.

1. The threshold (``contrast``): every image of four real sets is cut into windows (128 px in 2D,
   16 x 64 x 64 voxels in 3D) and each window's contrast is measured as the tile test measures it
   (:func:`idl.infer.tiling.empty.contrast`: the range of 4 px block means in units of the pixel
   noise). For thresholds from 2 to 12 noise units the table gives the share of windows without
   ground-truth foreground that would be skipped and the share of ground-truth foreground pixels in
   windows that would be skipped (what skipping could lose). Sets: BBBC039 nuclei (2D fluorescence),
   the 3D nuclei volume (fluorescence), InstantDL's lung CT slices and the sstem-vnc EM slices
   (texture everywhere: nothing should be skipped).
2. The speed (``sparse``): BBBC039 test fields placed on an empty 8192 x 8192 canvas, about 20 % of
   it, the rest an empty region of the slide: the fields' background level (median of pixels 15 px
   and more from any nucleus) with Gaussian noise of the fields' pixel noise (as the test estimates
   it: median absolute difference of neighbours); a
   binary U-Net (trained here by ``idl-train`` with its defaults on BBBC039, or ``--model``) predicts
   it with and without ``--skip-empty`` (out of core: the canvas is an uncompressed 128 MB TIFF),
   alternately; printed: the times, their ratio, the tiles skipped and the foreground pixels whose
   mask differs, as a share of the full prediction's foreground.

    python bench/skip_empty.py DATA_DIR [--part contrast|sparse|both] [--model MODEL] [--out DIR]
        [--layout scattered|clustered] [--repeats N]
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from idl.infer.tiling.empty import DEFAULT_THRESHOLD, contrast

THRESHOLDS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0)
SETS = {
    "BBBC039 nuclei (2D fluorescence)": "bbbc039-small/*/{}/*.tif",
    "3D nuclei (fluorescence)": "nuclei3d-cells3d/*/{}/*.tif",
    "InstantDL lung CT": "instantdl-examples/examples/data/SemanticSegmentation/train/{}/*.tif",
    "sstem-vnc EM": "sstem-vnc/*/{}/*.tif",
}


def windows(image: np.ndarray, labels: np.ndarray):
    """Non-overlapping windows of an image and its ground truth (128 px, or 16 x 64 x 64)."""
    size = (128, 128) if image.ndim == 2 else (16, 64, 64)
    starts = [range(0, n - s + 1, s) for n, s in zip(image.shape, size, strict=True)]
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, image.ndim):
        box = tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))
        yield image[box], labels[box]


def contrast_table(data: Path) -> None:
    print("\n| set | windows (with foreground) | " + " | ".join(f"t = {t:g}" for t in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    for name, pattern in SETS.items():
        found = []  # (contrast, foreground pixels)
        for path in sorted(glob.glob(str(data / pattern.format("image")))):
            truth_path = Path(path.replace("/image/", "/groundtruth/"))
            if not truth_path.is_file():
                continue
            image, truth = tifffile.imread(path).astype(np.float32), tifffile.imread(truth_path)
            if image.ndim == truth.ndim + 1:  # channels last
                image = image[..., 0]
            for window, labels in windows(image, truth):
                found.append((contrast(window[np.newaxis]), int((labels > 0).sum())))
        values = np.array([c for c, _ in found])
        foreground = np.array([f for _, f in found])
        background = foreground == 0
        cells = []
        for t in THRESHOLDS:
            skipped = values <= t
            share = skipped[background].mean() if background.any() else 0.0
            lost = foreground[skipped].sum() / max(1, foreground.sum())
            cells.append(f"{100 * share:.0f} % / {100 * lost:.2f} %")
        low = values[~background].min() if (~background).any() else float("nan")
        print(
            f"| {name} | {len(values)} ({(~background).sum()}; lowest contrast {low:.1f}) | "
            + " | ".join(cells)
            + " |"
        )
    print(
        "\ncells: share of windows without foreground skipped / share of foreground pixels in skipped windows"
    )


def canvas(
    data: Path, out: Path, side: int = 8192, cover: float = 0.2, seed: int = 0, layout: str = "scattered"
) -> tuple[Path, Path]:
    """The sparse image and its ground truth (binary): the fields at random places of a grid
    (``scattered``) or side by side from the top left, as a specimen in one part of a slide
    (``clustered``)."""
    from scipy import ndimage

    from idl.infer.tiling.empty import noise_level

    rng = np.random.default_rng(seed)
    fields, levels, noises = [], [], []
    for path in sorted(glob.glob(str(data / "bbbc039-small/test/image/*.tif"))):
        image = tifffile.imread(path)
        truth = tifffile.imread(path.replace("/image/", "/groundtruth/"))
        fields.append((image, truth > 0))
        far = ndimage.distance_transform_edt(truth == 0) > 15  # background away from the nuclei' halos
        levels.append(np.median(image[far]))
        noises.append(noise_level(image.astype(np.float32)))
    # an empty region of the slide: the fields' background level and their pixel noise
    level, noise = float(np.median(levels)), float(np.median(noises))
    print(f"background: level {level:.0f}, noise {noise:.1f} (medians over the test fields)")
    image = np.clip(np.rint(rng.normal(level, noise, size=(side, side))), 0, 65535).astype(np.uint16)
    truth = np.zeros((side, side), np.uint8)
    h, w = fields[0][0].shape
    cells = [(r, c) for r in range(0, side - h, h) for c in range(0, side - w, w)]
    count = int(round(cover * side * side / (h * w)))
    places = rng.choice(len(cells), size=count, replace=False) if layout == "scattered" else range(count)
    columns = (side - w) // w + 1
    if layout == "clustered":  # a block about as wide as high
        across = max(1, int(np.ceil(np.sqrt(count * h / w))))
        places = [(k // across) * columns + k % across for k in range(count)]
    for k, index in enumerate(places):
        r, c = cells[index]
        field, mask = fields[k % len(fields)]
        image[r : r + h, c : c + w] = field
        truth[r : r + h, c : c + w] = mask
    out.mkdir(parents=True, exist_ok=True)
    image_path, truth_path = out / "images" / "canvas.tif", out / "truth" / "canvas.tif"
    image_path.parent.mkdir(exist_ok=True)
    truth_path.parent.mkdir(exist_ok=True)
    tifffile.imwrite(image_path, image)  # uncompressed: read window by window
    tifffile.imwrite(truth_path, truth, compression="zlib")
    share = 100 * count * h * w / side**2
    print(f"canvas {side} x {side}: {count} BBBC039 fields {layout} ({share:.0f} % of it)")
    return image_path, truth_path


def train_model(data: Path, out: Path) -> Path:
    project = out / "bbbc039-binary"
    if not (project / "model").is_dir():
        shutil.rmtree(project, ignore_errors=True)
        for split in ("train", "test"):
            shutil.copytree(data / "bbbc039-small" / split / "image", project / split / "image")
            (project / split / "groundtruth").mkdir(parents=True)
            for path in sorted((data / "bbbc039-small" / split / "groundtruth").glob("*.tif")):
                tifffile.imwrite(
                    project / split / "groundtruth" / path.name, (tifffile.imread(path) > 0).astype(np.uint8)
                )
        subprocess.run(["idl-train", str(project), "--task", "semantic", "--quiet"], check=True)
    return project / "model"


def sparse(data: Path, out: Path, model: Path | None, repeats: int, layout: str = "scattered") -> None:
    image, truth = canvas(data, out / f"canvas-{layout}", layout=layout)
    model = model or train_model(data, out)
    times: dict[str, list[float]] = {"all tiles": [], "--skip-empty": []}
    for _ in range(repeats):
        for label, extra in (("all tiles", []), ("--skip-empty", ["--skip-empty"])):
            target = out / ("full" if not extra else "skip")
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            done = subprocess.run(
                ["idl-predict", str(model), str(image), "--out", str(target), *extra],
                check=True,
                capture_output=True,
                text=True,
            )
            times[label].append(time.perf_counter() - start)
            skipped = [line for line in done.stderr.splitlines() if "--skip-empty" in line]
            if skipped:
                print(skipped[-1].split("INFO")[-1].strip())
    full = tifffile.imread(out / "full" / "canvas.tif") > 0
    skip = tifffile.imread(out / "skip" / "canvas.tif") > 0
    gt = tifffile.imread(truth) > 0
    differ = int((full != skip).sum())
    jaccard = {k: float((m & gt).sum() / (m | gt).sum()) for k, m in (("all", full), ("skip", skip))}
    a, b = np.median(times["--skip-empty"]), np.median(times["all tiles"])
    print(
        json.dumps(
            {
                "seconds all tiles": [round(t, 1) for t in times["all tiles"]],
                "seconds --skip-empty": [round(t, 1) for t in times["--skip-empty"]],
                "speed-up (median all / median skip)": round(b / a, 2),
                "foreground pixels (all tiles)": int(full.sum()),
                "pixels whose mask differs": differ,
                "differing / foreground": f"{100 * differ / max(1, int(full.sum())):.4f} %",
                "Jaccard vs ground truth": jaccard,
                "threshold": DEFAULT_THRESHOLD,
            },
            indent=1,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("--part", choices=("contrast", "sparse", "both"), default="both")
    parser.add_argument("--model", type=Path, help="a binary BBBC039 model (default: train one)")
    parser.add_argument("--out", type=Path, default=Path("bench_skip_empty"))
    parser.add_argument("--repeats", type=int, default=1, help="alternating pairs of predictions")
    parser.add_argument("--layout", choices=("scattered", "clustered"), default="scattered")
    args = parser.parse_args()
    if args.part in ("contrast", "both"):
        contrast_table(args.data)
    if args.part in ("sparse", "both"):
        sparse(args.data, args.out, args.model, args.repeats, args.layout)


if __name__ == "__main__":
    sys.exit(main())
