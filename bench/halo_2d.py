"""How much context (halo) do tiles need? Tiled vs whole-image probabilities for a trained U-Net.

    python bench/halo_2d.py PROJECT/model [--size 2048]

Prints, per tile size and halo, the largest and mean absolute probability difference to one
whole-image ONNX Runtime call, the number of mask pixels that change, and the time. The default halo
of idl models is the receptive field of their 3x3 convolutions (96 px for depth 4).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.service.load import load_model
from idl.infer.tiling.predict import predict_probabilities


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    model = load_model(args.model)
    info = model.info
    spec = NucleiSpec(size=args.size, objects=(args.size**2 // 14000, args.size**2 // 10000))
    image = synthetic_nuclei(np.random.default_rng(3), spec)[0][..., None]

    def run(tile: int, halo: int) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        p, _ = predict_probabilities(model.runner, image, model.io, tile, halo)
        return p, time.perf_counter() - start

    whole, whole_s = run(args.size, 0)
    print(f"{args.size}^2 image, model halo {info.halo} px; whole image: {whole_s:.2f} s")
    print(f"{'tile':>5}{'halo':>6}{'max |diff|':>12}{'mean |diff|':>13}{'mask px':>9}{'time (s)':>10}")
    for tile in (256, 512):
        for halo in sorted({0, 16, 32, 48, 64, 80, 96, info.halo}):
            if 2 * halo + info.size_multiple > tile:
                continue
            tiled, seconds = run(tile, halo)
            diff = np.abs(tiled - whole)
            flips = int(((tiled > 0.5) != (whole > 0.5)).sum())
            print(f"{tile:>5}{halo:>6}{diff.max():>12.2e}{diff.mean():>13.2e}{flips:>9}{seconds:>10.2f}")


if __name__ == "__main__":
    main()
