"""Image formats by suffix: one module per format, each registered in :mod:`.registry`.

Built in, registered here in this order (the order of the suffixes in messages): TIFF (:mod:`.tiff`),
PNG and JPEG (:mod:`.skimage`), NumPy (:mod:`.npy`), OME-Zarr (:mod:`.ome_zarr`) and CZI, ND2 and LIF
through bioio (:mod:`.bioio`, the ``[formats]`` extra). A format of one's
own is an :class:`ImageFormat` given to :func:`register`.
"""

from idl.infer.io.formats import bioio, npy, ome_zarr, skimage, tiff
from idl.infer.io.formats.output import open_sink, write_image
from idl.infer.io.formats.registry import (
    ImageFormat,
    Sink,
    format_of,
    formats,
    output_format,
    output_formats,
    register,
    unregister,
)

for _builtin in (tiff.TIFF, skimage.PNG, skimage.JPEG, npy.NPY, ome_zarr.OME_ZARR, bioio.BIOIO):
    register(_builtin)

__all__ = [
    "ImageFormat",
    "Sink",
    "format_of",
    "formats",
    "open_sink",
    "output_format",
    "output_formats",
    "register",
    "unregister",
    "write_image",
]
