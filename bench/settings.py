"""Which prediction settings are fastest on this CPU: tile size, batch, threads and ONNX Runtime's
session options, each varied alone from idl-predict's defaults.

Every setting is one whole idl-predict process on the same image and model (wall time and peak RSS
from ``wait4``), run in rounds so that the machine's drift hits all settings alike; the table gives the
median time over the rounds, relative to the defaults of the same round, and whether the mask equals
the defaults' mask.

    python bench/settings.py --model PROJECT/model [--size 4096] [--rounds 2]

Session options that idl-predict does not expose are set in the child by replacing
``onnxruntime.SessionOptions`` with a factory that applies them (idl creates its sessions through
that name), so the measured code path is idl-predict's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure  # noqa: E402
from predict_2d import nuclei_image  # noqa: E402

# label -> (idl-predict arguments, onnxruntime.SessionOptions attributes)
SETTINGS: dict[str, tuple[list[str], dict[str, object]]] = {
    "defaults (512-px tiles, batch 1)": ([], {}),
    "tiles 256 px": (["--tile-size", "256"], {}),
    "tiles 384 px": (["--tile-size", "384"], {}),
    "tiles 768 px": (["--tile-size", "768"], {}),
    "tiles 1024 px": (["--tile-size", "1024"], {}),
    "batch 2": (["--batch-size", "2"], {}),
    "batch 4": (["--batch-size", "4"], {}),
    "1 thread": ([], {"intra_op_num_threads": 1}),
    "graph optimization: extended (no NCHWc layout)": (
        [],
        {"graph_optimization_level": "ORT_ENABLE_EXTENDED"},
    ),
    "graph optimization: basic": ([], {"graph_optimization_level": "ORT_ENABLE_BASIC"}),
    "parallel execution mode": ([], {"execution_mode": "ORT_PARALLEL"}),
    "memory patterns on": ([], {"enable_mem_pattern": True}),
    "CPU memory arena off": ([], {"enable_cpu_mem_arena": False}),
}


def _child(options: dict[str, object], argv: list[str]) -> None:
    """idl-predict in this process with ``options`` applied to every ONNX Runtime session."""
    import onnxruntime as ort

    from idl.cli.predict import main as idl_predict

    original = ort.SessionOptions

    def configured() -> ort.SessionOptions:
        made = original()
        for name, value in options.items():
            if name == "graph_optimization_level":
                value = getattr(ort.GraphOptimizationLevel, str(value))
            elif name == "execution_mode":
                value = getattr(ort.ExecutionMode, str(value))
            setattr(made, name, value)
        return made

    ort.SessionOptions = configured  # type: ignore[misc,assignment]
    idl_predict.main(argv, standalone_mode=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder or package")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("bench_settings_work"))
    parser.add_argument("--only", help="comma-separated labels (substrings) to run besides the defaults")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child is not None:
        _child(json.loads(args.child), rest)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    image = nuclei_image(args.size, args.work)  # the synthetic image of bench/predict_2d.py
    labels = list(SETTINGS)
    if args.only:
        wanted = args.only.split(",")
        labels = [labels[0]] + [label for label in labels[1:] if any(w in label for w in wanted)]
    times: dict[str, list[float]] = {label: [] for label in labels}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for index, label in enumerate(labels):
            extra, options = SETTINGS[label]
            out = args.work / f"out{index}"
            cmd = [sys.executable, __file__, "--model", str(args.model), "--child", json.dumps(options)]
            cmd += [str(args.model), str(image), "--out", str(out), "--quiet", "--overwrite", *extra]
            run = measure(label, cmd)
            times[label].append(run.seconds)
            peaks[label] = max(peaks.get(label, 0.0), run.peak_mb)
    import tifffile

    reference = tifffile.imread(args.work / "out0" / image.name)
    base = statistics.median(times[labels[0]])
    print(f"\n{args.size} x {args.size} image, model {args.model}, median of {args.rounds} round(s)")
    print("| setting | time (s) | vs defaults | peak RSS (MB) | mask pixels differing |")
    print("|---|---:|---:|---:|---:|")
    for index, label in enumerate(labels):
        mask = tifffile.imread(args.work / f"out{index}" / image.name)
        differ = int(np.count_nonzero(mask != reference))
        seconds = statistics.median(times[label])
        print(f"| {label} | {seconds:.2f} | {seconds / base:.2f}x | {peaks[label]:.0f} | {differ} |")


if __name__ == "__main__":
    main()
