"""What a tile costs: idl-predict's peak RSS and time per tile side, against the memory estimate from
the network's graph (infer/runtime/footprint.py). Justifies the arena factor (measured RSS over the
graph's live peak) and the default --max-memory cap (where larger tiles stop paying).

    python bench/tile_memory.py PROJECT/model [--size 4096] [--tiles 256,512,1024,1536,2048,2560]

Each run is its own process (wall time and peak RSS, bench/_measure.py) on the image of
bench/predict_2d.py; the smallest tile's peak RSS is the base the others add their activations to
(it holds the image, its outputs and the session).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure  # noqa: E402
from predict_2d import nuclei_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", default="256,512,1024,1536,2048,2560")
    parser.add_argument("--mc-samples", type=int, default=0, help="measure the Monte Carlo graph instead")
    parser.add_argument("--work", type=Path, default=Path("bench_out/predict_2d"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    from idl.infer.runtime.footprint import ARENA_FACTOR
    from idl.infer.service.load import load_model

    image = nuclei_image(args.size, args.work)
    cost = load_model(args.model).footprint(mc=args.mc_samples > 0)
    assert cost is not None, "the graph gives no estimate"
    tiles = [int(t) for t in args.tiles.split(",")]
    rows = []
    for tile in tiles:
        cmd = [sys.executable, "-m", "idl.cli.predict", str(args.model), str(image), "--out"]
        cmd += [str(args.work / "tile_memory"), "--tile-size", str(tile), "--quiet", "--overwrite"]
        if args.mc_samples:
            cmd += ["--mc-samples", str(args.mc_samples)]
        rows.append((tile, measure(str(tile), cmd)))
    base = rows[0][1].peak_mb
    graph_px = cost.per_pixel / ARENA_FACTOR
    print(f"\n{args.size} x {args.size}, model {args.model}; graph: {graph_px:.0f} B per px")
    print(f"{'tile':>6}{'time (s)':>10}{'peak RSS (MB)':>15}{'over base':>11}{'graph (MB)':>12}{'ratio':>7}")
    for tile, m in rows:
        graph = cost.bytes_for((tile, tile)) / ARENA_FACTOR / 2**20
        over = m.peak_mb - base
        print(f"{tile:>6}{m.seconds:>10.2f}{m.peak_mb:>15.0f}{over:>11.0f}{graph:>12.0f}{over / graph:>7.2f}")


if __name__ == "__main__":
    main()
