"""Reading and writing images: TIFF, PNG, OME-Zarr, lazy windows of images larger than memory, and
outputs written tile by tile."""
