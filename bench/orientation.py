"""The classifier's flips and quarter turns, decided from the data, on real class sets with and
without an up or down (issue 32).

Three projects, each trained with the default (``idl-train PROJECT --task classification``):

- ``bccd-cells``: blood cells, which look the same mirrored or turned: the plan should keep flips
  and quarter turns, and the accuracy stay where the old default (always flips and turns) had it.
- ``letters b/d/p/q``: the letters b, d, p and q, mirror images and half turns of each other,
  rendered from the TrueType fonts matplotlib ships (serif, sans, mono, bold, italic; several sizes,
  places and small slants) in a stain-like colour onto real blood-smear crops of bccd-cells, with
  sensor noise. A mirrored ``b`` is a ``d``: the plan should leave flips and turns off, and the
  default beat a logistic regression on the pixels.
- InstantDL's classification example (MNIST 1 vs 9) through its unchanged config file.

Each row gives the test accuracy of the default, the plan's decision (plan.json), the logistic
regression on the pixels (bench/_baselines.py) and, with ``--old``, a run with the old default
``--augment flip,rot90``; times are the whole idl-train command.

    python bench/orientation.py DATA_DIR [--out DIR] [--only NAME,...] [--old]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_data  # noqa: E402

from idl.infer.io.images import read_image, write_text, write_tiff  # noqa: E402

LETTERS = ("b", "d", "p", "q")
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)
SIDE = 64
PER_CLASS = {"train": 100, "test": 50}


def _fonts() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in FONTS if (folder / name).is_file()]


def _letter(letter: str, font: Path, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``letter`` in ``font`` on an RGB ``background`` crop: a random size, place and slant."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(30, 44))
    glyph = Image.new("L", (SIDE, SIDE), 0)
    face = ImageFont.truetype(str(font), size)
    draw = ImageDraw.Draw(glyph)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=face)
    x = (SIDE - (right - left)) / 2 - left + rng.integers(-6, 7)
    y = (SIDE - (bottom - top)) / 2 - top + rng.integers(-6, 7)
    draw.text((x, y), letter, fill=255, font=face)
    glyph = glyph.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
    alpha = np.asarray(glyph, np.float32)[..., None] / 255 * rng.uniform(0.55, 0.85)
    stain = np.array([90, 40, 120], np.float32) * rng.uniform(0.7, 1.2)
    image = background.astype(np.float32) * (1 - alpha) + stain * alpha
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_letters(data: Path, target: Path, seed: int = 0) -> Path:
    """The letters project under ``target`` (backgrounds: bccd-cells' crops of the same split)."""
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    for split, per_class in PER_CLASS.items():
        crops = sorted((data / "bccd-cells" / split / "image").glob("*.tif"))
        rows = ["filename,groundtruth"]
        for i in range(per_class * len(LETTERS)):
            letter = LETTERS[i % len(LETTERS)]
            background = read_image(crops[int(rng.integers(len(crops)))])
            image = _letter(letter, fonts[int(rng.integers(len(fonts)))], background, rng)
            write_tiff(target / split / "image" / f"{i:04d}.tif", image)
            rows.append(f"{i:04d}.tif,{letter}")
        write_text(target / split / "groundtruth" / "groundtruth.csv", "\n".join(rows) + "\n")
    return target


PROJECTS = (
    *(p for p in real_data.PROJECTS if p.name == "bccd-cells 3 classes"),
    real_data.Project("letters b/d/p/q on blood smears", "letters-bdpq", "classification"),
    *(p for p in real_data.PROJECTS if p.name == "InstantDL classification"),
)


def run(project: real_data.Project, data: Path, root: Path, extra: list[str]) -> dict:
    folder = real_data.prepare(project, data, root)
    wall = real_data.train(project, folder, root, extra)
    plan = json.loads((folder / "model" / "plan.json").read_text())
    augment = json.loads((folder / "model" / "config.json").read_text())["augment"]
    return {
        "accuracy": real_data.test_score(project, folder),
        "augmentation": plan.get("augmentation") or ", ".join(augment),
        "steps": real_data.steps_trained(folder),
        "wall_seconds": wall,
        "baseline": real_data.baseline(project, folder)[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="the real-data folder (with bccd-cells, instantdl-examples)")
    parser.add_argument("--out", type=Path, default=Path("bench_orientation"))
    parser.add_argument("--only", help="comma-separated project names (or parts of them)")
    parser.add_argument("--old", action="store_true", help="also train with the old default flip,rot90")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    generated = args.out / "data"
    if not (generated / "letters-bdpq").is_dir():
        make_letters(args.data, generated / "letters-bdpq")
    for link in ("bccd-cells", real_data.INSTANTDL):
        if not (generated / link).exists():
            (generated / link).symlink_to((args.data / link).resolve())
    wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
    rows = []
    print(
        "| project | default accuracy | plan's augmentation | logistic regression | old default flip,rot90 |"
    )
    print("|---|---:|---|---:|---:|")
    for project in PROJECTS:
        if wanted and not any(w in project.name.lower() for w in wanted):
            continue
        slug = project.name.replace(" ", "_").replace("/", "")
        result = run(project, generated, args.out / slug / "default", [])
        if args.old:
            old = run(project, generated, args.out / slug / "old", ["--augment", "flip,rot90"])
            result["old"], result["old_wall_seconds"] = old["accuracy"], old["wall_seconds"]
        rows.append({"project": project.name, **result})
        (args.out / "results.json").write_text(json.dumps(rows, indent=2))
        old_cell = f"{result['old']:.3f}" if "old" in result else "-"
        print(
            f"| {project.name} | {result['accuracy']:.3f} ({result['wall_seconds'] / 60:.1f} min) | "
            f"{result['augmentation']} | {result['baseline']:.3f} | {old_cell} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
