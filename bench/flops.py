"""How much of the CPU's arithmetic idl-predict uses: useful multiply-adds per second against the
machine's measured fp32 matrix-multiply peak.

- Peak: the best of several float32 ``numpy.matmul`` calls of 2048 x 2048 matrices (BLAS, all cores),
  counted as 2 n^3 floating-point operations.
- Useful work: the network's convolutions over the image once (multiply-adds of every ``Conv`` and
  ``ConvTranspose`` of the ONNX graph, from ONNX shape inference at the image's padded size), counted
  as 2 operations per multiply-add. Halo recomputation, normalization, thresholding and file I/O are
  overhead by this count.
- idl-predict's time: one whole process on the image (as ``bench/predict_2d.py`` runs it), and the
  network alone (ONNX Runtime on one tile, its multiply-adds over its time), to separate the runtime's
  efficiency from the tiling's.

    python bench/flops.py --model PROJECT/model [--size 4096]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure  # noqa: E402
from predict_2d import nuclei_image  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matrix-multiply rate in GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def conv_macs(onnx_path: Path, shape: tuple[int, ...]) -> int:
    """Multiply-adds of every Conv and ConvTranspose of the graph for an input of ``shape``."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    }
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        weight = weights[node.input[1]]
        if node.op_type == "Conv":  # (out, in/groups, k...): every output element sums in/groups * k
            total += int(np.prod(shapes[node.output[0]])) * int(np.prod(weight[1:]))
        else:  # (in, out/groups, k...): every input element is spread over out/groups * k outputs
            total += int(np.prod(shapes[node.input[0]])) * int(np.prod(weight[1:]))
    return total


def network_rate(onnx_path: Path, side: int) -> float:
    """GFLOP/s of ONNX Runtime (idl's session settings) on one ``side`` x ``side`` tile."""
    from idl.infer.runtime.session import OnnxRunner

    runner = OnnxRunner(onnx_path, "cpu")
    x = np.random.default_rng(0).random((1, 1, side, side), np.float32)
    runner(x)
    seconds = min(_timed(lambda: runner(x)) for _ in range(3))
    return 2 * conv_macs(onnx_path, x.shape) / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder (model.onnx)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--work", type=Path, default=Path("bench_flops_work"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    image = nuclei_image(args.size, args.work)  # the synthetic image of bench/predict_2d.py
    onnx_path = args.model / "model.onnx"
    from idl.infer.service.load import load_model

    multiple = load_model(args.model).info.size_multiple
    padded = -(-args.size // multiple) * multiple
    useful = 2 * conv_macs(onnx_path, (1, 1, padded, padded))
    cmd = [sys.executable, "-m", "idl.cli.predict", str(args.model), str(image)]
    run = measure("idl-predict", [*cmd, "--out", str(args.work / "out"), "--quiet", "--overwrite"])
    peak = matmul_peak()
    tile = network_rate(onnx_path, 512 + 2 * load_model(args.model).info.halo)
    rate = useful / run.seconds / 1e9
    print(f"fp32 matmul peak (numpy, 2048 x 2048): {peak:.1f} GFLOP/s")
    share = f"{tile:.1f} GFLOP/s = {tile / peak:.0%} of peak"
    print(f"network on one tile (ONNX Runtime, convolutions only): {share}")
    print(
        f"idl-predict on {args.size} x {args.size}: {useful / 1e9:.0f} GFLOP of convolutions in "
        f"{run.seconds:.1f} s = {rate:.1f} GFLOP/s = {rate / peak:.0%} of peak (target >= 40 %)"
    )


if __name__ == "__main__":
    main()
