"""A bioimage.io package with several input or output tensors (or outputs of another size than the
input): every input read from its own file, every output written under its tensor's name, nothing to
evaluate by (its task is unknown)."""

from __future__ import annotations

from pathlib import Path

from idl.infer.core.errors import ConfigError
from idl.infer.tasks.base import Request, Task
from idl.infer.tasks.registry import TENSORS_KIND, register
from idl.infer.tiling.tensors import pair_inputs, predict_tensor_files


class TensorOutputs(Task):
    kind = TENSORS_KIND
    task = ""
    evaluates = False

    def samples(self, request: Request) -> list[dict[str, Path]]:
        """The inputs of each sample: ``request.named_inputs`` (``--input NAME=PATH``), or for a
        single-input network the INPUT files."""
        tensors = request.model.tensors
        named = dict(request.named_inputs or {})
        if not named and len(tensors.inputs) == 1:
            named = {tensors.inputs[0].id: list(request.files)}
        return pair_inputs(named, tensors)

    def check(self, request: Request) -> None:
        self.samples(request)

    def predict(self, request: Request) -> Path:
        if request.blocks is not None:
            raise ConfigError(
                "--dask shares the blocks of one volume among workers, for networks of one input and one "
                "output of its size; predict this package without it (--shard I/N shares its samples)."
            )
        predict_tensor_files(
            request.model, self.samples(request), request.out_dir, request.options, request.axes
        )
        return request.out_dir

    def done(self, request: Request, predictions: Path) -> str:
        names = ", ".join(f"{o.id}/" for o in request.model.tensors.outputs)
        return f"{len(self.samples(request))} sample(s) predicted; outputs in {request.out_dir} ({names})"


register(TensorOutputs())
