"""A bioimage.io package made elsewhere, whose task idl does not know: its post-processed output is
written as it is, and there is nothing to evaluate it by."""

from __future__ import annotations

from idl.infer.tasks.pixels import PixelTask
from idl.infer.tasks.registry import register


class PackageOutput(PixelTask):
    kind = "package"
    task = ""
    evaluates = False


register(PackageOutput())
