"""Default training on real, small projects next to a classical baseline and a 4x-budget run.

For every project of the shared real-data folder (its README.md describes them) this trains with
``idl-train PROJECT --task T`` and nothing else (InstantDL's four examples: ``idl-train --config
<Task>_example_config.json``, the files unchanged), then prints one table: the test score of the
default run, the classical baseline (bench/_baselines.py, fitted on the training split), the score of
a run with 4x the planned budget (``--epochs 4E``: how far the default is from converged), and the
time of the default run (training alone, and the whole idl-train command with export, test prediction
with 20 Monte Carlo samples, evaluation and the validated bioimage.io package).

Scores: binary and multi-class segmentation Jaccard over all test pixels (multi-class: the mean over
foreground classes), instance AP50:95, regression the median per-image Pearson r, classification
accuracy; all from the test predictions of the exported ONNX model (the project's
evaluation/summary.json, or the same evaluation run here where a config switches it off).

    python bench/real_data.py DATA_DIR [--out DIR] [--only NAME,...] [--no-4x] [--reuse]

All default runs come first (their times are measured one at a time), then the 4x runs. ``--reuse``
keeps the runs recorded in ``--out/results.json`` and adds only the missing ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _baselines as baselines  # noqa: E402

from idl.infer.core.project import pair_files  # noqa: E402
from idl.infer.io.images import read_image, write_tiff  # noqa: E402
from idl.infer.post.classes import labelled_images  # noqa: E402

SCORES = {
    "semantic": "jaccard",
    "instance": "ap50_95",
    "regression": "pearson_median",
    "classification": "accuracy",
}
INSTANTDL = "instantdl-examples"
BBBC039_FIRST = "IXMtest_A02_s1_w1051DAA7C-7042-435F-99F0-1E847D9B42CB.tif"  # one whole training image


@dataclass(frozen=True)
class Project:
    """One benchmark project: where its data comes from and how to make it a project."""

    name: str
    source: str  # folder in DATA_DIR
    task: str
    config: str | None = None  # InstantDL's example config (relative to the copied source)
    subdir: str = "."  # the project folder inside the copied source
    binary: bool = False  # ground truth is label images: train on binary masks (labels > 0)
    keep_train: tuple[str, ...] = ()  # only these training files (e.g. one volume)
    gt_from: str | None = None  # copy test ground truth from here (InstantDL's recovered masks)
    tiles: tuple[int, int, int] | None = None  # (training, test, side): one central tile per image
    args: tuple[str, ...] = field(default_factory=tuple)


PROJECTS = (
    Project("bbbc039 binary", "bbbc039-small", "semantic", binary=True),
    Project("bbbc039 instance", "bbbc039-small", "instance"),
    Project("bbbc039 12 tiles binary", "bbbc039-small", "semantic", binary=True, tiles=(12, 4, 128)),
    Project("bbbc039 12 tiles instance", "bbbc039-small", "instance", tiles=(12, 4, 128)),
    Project("bbbc039 instance stardist", "bbbc039-small", "instance", args=("--model", "stardist")),
    Project(
        "bbbc039 12 tiles instance stardist",
        "bbbc039-small",
        "instance",
        tiles=(12, 4, 128),
        args=("--model", "stardist"),
    ),
    Project("bbbc039 instance flows", "bbbc039-small", "instance", args=("--model", "flows")),
    Project(
        "bbbc039 12 tiles instance flows",
        "bbbc039-small",
        "instance",
        tiles=(12, 4, 128),
        args=("--model", "flows"),
    ),
    Project("bbbc039 one image instance", "bbbc039-small", "instance", keep_train=(BBBC039_FIRST,)),
    Project(
        "bbbc039 one image instance flows",
        "bbbc039-small",
        "instance",
        keep_train=(BBBC039_FIRST,),
        args=("--model", "flows"),
    ),
    Project("sstem-vnc 5-class", "sstem-vnc", "semantic"),
    Project("bbbc039 binary segnet", "bbbc039-small", "semantic", binary=True, args=("--model", "segnet")),
    Project("sstem-vnc 5-class segnet", "sstem-vnc", "semantic", args=("--model", "segnet")),
    Project("nuclei3d 3D binary", "nuclei3d-cells3d", "semantic", binary=True),
    Project(
        "nuclei3d 3D, one volume", "nuclei3d-cells3d", "semantic", binary=True, keep_train=("nuclei_q00.tif",)
    ),
    Project("bccd-cells 3 classes", "bccd-cells", "classification"),
    Project(
        "InstantDL semantic",
        INSTANTDL,
        "semantic",
        config="SemanticSegmentation_example_config.json",
        subdir="examples/data/SemanticSegmentation",
        gt_from="recovered/SemanticSegmentation-test-groundtruth",
    ),
    Project(
        "InstantDL instance",
        INSTANTDL,
        "instance",
        config="InstanceSegmentation_example_config.json",
        subdir="examples/data/InstanceSegmentation",
    ),
    Project(
        "InstantDL instance stardist",
        INSTANTDL,
        "instance",
        config="InstanceSegmentation_example_config.json",
        subdir="examples/data/InstanceSegmentation",
        args=("--model", "stardist"),
    ),
    Project(
        "InstantDL instance flows",
        INSTANTDL,
        "instance",
        config="InstanceSegmentation_example_config.json",
        subdir="examples/data/InstanceSegmentation",
        args=("--model", "flows"),
    ),
    Project("nuclei3d 3D instance", "nuclei3d-cells3d", "instance"),
    Project("nuclei3d 3D instance flows", "nuclei3d-cells3d", "instance", args=("--model", "flows")),
    Project(
        "InstantDL regression 3D",
        INSTANTDL,
        "regression",
        config="Regression_example_config.json",
        subdir="examples/data/Regression",
    ),
    Project(
        "InstantDL classification",
        INSTANTDL,
        "classification",
        config="Classification_example_config.json",
        subdir="examples/data/Classification",
    ),
)


def _writable_copy(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def _cut_tiles(folder: Path, n_train: int, n_test: int, side: int) -> None:
    """Keep one central ``side`` px tile of the first ``n_train`` training and ``n_test`` test images
    (a lab's first small annotated set)."""
    for split, n in (("train", n_train), ("test", n_test)):
        images = sorted((folder / split / "image").iterdir())
        for i, path in enumerate(images):
            gt = folder / split / "groundtruth" / path.name
            if i >= n:
                path.unlink()
                gt.unlink()
                continue
            image, truth = read_image(path), read_image(gt)
            y, x = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
            window = (slice(y, y + side), slice(x, x + side))
            write_tiff(path, image[window])
            cut = truth[window]
            write_tiff(gt, cut if cut.max() <= 1 else _relabel(cut))


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels 1..N in order of first appearance (objects cut by the tile keep their piece)."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels)[0].astype(np.uint16)


def prepare(project: Project, data: Path, target: Path) -> Path:
    """A writable copy of the project's data, made into the project; returns the project folder."""
    _writable_copy(data / project.source, target)
    folder = target / project.subdir
    if project.binary:
        for gt in sorted((folder).glob("*/groundtruth/*.tif")):
            write_tiff(gt, (read_image(gt) > 0).astype(np.uint8))
    if project.tiles:
        _cut_tiles(folder, *project.tiles)
    if project.keep_train:
        for part in ("image", "groundtruth"):
            for path in (folder / "train" / part).iterdir():
                if path.name not in project.keep_train:
                    path.unlink()
    if project.gt_from:
        gt_dir = folder / "test" / "groundtruth"
        gt_dir.mkdir(parents=True, exist_ok=True)
        for path in (target / project.gt_from).iterdir():
            shutil.copy(path, gt_dir / path.name)
    return folder


def train(project: Project, folder: Path, root: Path, extra: list[str]) -> float:
    """Run idl-train as a user would; returns the wall time. The log goes to ``folder/train.log``."""
    idl_train = str(Path(sys.executable).with_name("idl-train"))
    if project.config:
        command, cwd = [idl_train, "--config", project.config], root
    else:
        command, cwd = [idl_train, str(folder), "--task", project.task], None
    command += [*project.args, *extra, "--quiet"]
    start = time.perf_counter()
    with open(folder.parent / f"{folder.name}.train.log", "w") as log:
        done = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"{project.name}: idl-train failed; see {folder.parent / (folder.name + '.train.log')}"
        )
    return seconds


def test_score(project: Project, folder: Path) -> float:
    """The test score from the evaluation idl-train wrote, or from the same evaluation run here."""
    summary_path = folder / "evaluation" / "summary.json"
    if not summary_path.is_file():
        from idl.infer.tasks.base import Folders
        from idl.infer.tasks.registry import task_named

        task = task_named(project.task)
        plan = json.loads((folder / "model" / "plan.json").read_text())
        test = folder / "test"
        results, evaluation, dims = folder / "results", folder / "evaluation", plan.get("dims", 2)
        groundtruth = task.groundtruth_folder(test)
        task.evaluate_folder(
            Folders(results, groundtruth, evaluation, test / "image", dims=dims, progress=False)
        )
    return float(json.loads(summary_path.read_text())[SCORES[project.task]])


def steps_trained(folder: Path) -> int:
    """Optimizer steps the run took (its epochs, early stopping and budget extensions included)."""
    import torch

    state = torch.load(folder / "model" / "last.pt", weights_only=True)["state"]
    plan = json.loads((folder / "model" / "plan.json").read_text())
    return int(state["epoch"]) * int(plan["steps_per_epoch"])


def training_seconds(folder: Path) -> float:
    """Seconds the training loop took (from the last checkpoint)."""
    import torch

    return float(torch.load(folder / "model" / "last.pt", weights_only=True)["state"]["seconds"])


def baseline(project: Project, folder: Path) -> tuple[str, float]:
    """The classical baseline's name and test score."""
    if project.task == "classification":
        train = [(i.image, i.label) for i in labelled_images(folder / "train")]
        test = [(i.image, i.label) for i in labelled_images(folder / "test")]
        size = read_image(train[0][0]).shape[:2]
        return "logistic regression on pixels", baselines.logistic_accuracy(train, test, size)
    train, test = pair_files(folder / "train"), pair_files(folder / "test")
    dims = 3 if read_image(train[0].image).ndim == 3 and min(read_image(train[0].image).shape) > 4 else 2
    if project.task == "instance":
        return "Otsu + connected components", baselines.otsu_instance_ap(train, test, dims)
    if project.task == "regression":
        return "linear fit of the smoothed input", baselines.linear_fit_pearson(train, test, dims)
    classes = max(int(read_image(p.groundtruth).max()) for p in train) + 1
    if project.binary or classes <= 2 or set(np.unique(read_image(train[0].groundtruth))) <= {0, 255}:
        return "Otsu threshold", baselines.otsu_jaccard(train, test, dims)
    return "logistic regression per pixel", baselines.pixel_classifier_jaccard(train, test, classes)


def run_default(project: Project, data: Path, out: Path) -> dict:
    """The default run and the baseline of one project."""
    root = out / _slug(project) / "default"
    folder = prepare(project, data, root)
    wall = train(project, folder, root, [])
    plan = json.loads((folder / "model" / "plan.json").read_text())
    result = {
        "project": project.name,
        "task": project.task,
        "score_name": SCORES[project.task],
        "default": test_score(project, folder),
        "epochs": plan["epochs"],
        "steps": steps_trained(folder),
        "train_seconds": training_seconds(folder),
        "wall_seconds": wall,
        "plan": plan,
    }
    result["baseline_name"], result["baseline"] = baseline(project, folder)
    return result


def run_four_x(project: Project, data: Path, out: Path, epochs: int) -> tuple[float, float]:
    """The test score and wall time of a run with 4x the default epochs (no Monte Carlo samples and
    no package: only its score is reported)."""
    root = out / _slug(project) / "x4"
    folder = prepare(project, data, root)
    extra = ["--epochs", str(4 * epochs), "--no-uncertainty", "--no-package"]
    wall = train(project, folder, root, extra)
    score = test_score(project, folder)
    shutil.rmtree(root)  # models and results: up to 100 MB a run
    return score, wall


def _slug(project: Project) -> str:
    return project.name.replace(" ", "_").replace(",", "")


HEADER = (
    "| project | score | default | baseline | vs baseline | 4x budget | default / 4x | steps | train "
    "| idl-train |"
)


def table(results: list[dict]) -> str:
    """The Markdown table of all projects."""
    lines = [HEADER, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        x4 = r.get("x4")
        cells = [
            r["project"],
            r["score_name"],
            f"{r['default']:.3f}",
            f"{r['baseline']:.3f} ({r['baseline_name']})",
            f"{r['default'] - r['baseline']:+.3f}",
            f"{x4:.3f}" if x4 is not None else "-",
            f"{r['default'] / x4:.1%}" if x4 else "-",
            str(r["steps"]),
            f"{r['train_seconds'] / 60:.1f} min",
            f"{r['wall_seconds'] / 60:.1f} min",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="the real-data folder (with bbbc039-small, ...)")
    parser.add_argument("--out", type=Path, default=Path("bench_real_data"))
    parser.add_argument(
        "--only", help="comma-separated project names (a full name: that project; a part: every match)"
    )
    parser.add_argument("--no-4x", dest="four_x", action="store_false", help="skip the 4x-budget runs")
    parser.add_argument("--reuse", action="store_true", help="keep finished projects from --out/results.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "results.json"
    done: dict[str, dict] = {}
    if args.reuse and store.is_file():
        done = {r["project"]: r for r in json.loads(store.read_text())}
    wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
    exact = {p.name.lower() for p in PROJECTS} & set(wanted or ())  # a full name: that project alone
    chosen = [
        p
        for p in PROJECTS
        if wanted is None
        or p.name.lower() in exact
        or any(w in p.name.lower() for w in wanted if w not in exact)
    ]
    for project in chosen:  # every default run first (timed on a quiet machine), then the 4x runs
        if project.name not in done:
            print(f"== {project.name}", flush=True)
            done[project.name] = run_default(project, args.data, args.out)
            print(table([done[project.name]]).splitlines()[-1], flush=True)
            store.write_text(json.dumps(list(done.values()), indent=2))
    for project in chosen if args.four_x else []:
        if done[project.name].get("x4") is None:
            print(f"== {project.name}: 4x budget", flush=True)
            result = done[project.name]
            result["x4"], result["wall_seconds_4x"] = run_four_x(
                project, args.data, args.out, result["epochs"]
            )
            print(table([result]).splitlines()[-1], flush=True)
            store.write_text(json.dumps(list(done.values()), indent=2))
    ordered = [done[p.name] for p in PROJECTS if p.name in done]
    print()
    print(table(ordered))


if __name__ == "__main__":
    main()
