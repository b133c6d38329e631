"""Reading and writing images: formats by suffix in one registry (:mod:`.formats`: TIFF, PNG/JPEG, NumPy,
OME-Zarr), lazy windows of images larger than memory, outputs written tile by tile, atomic writes and a
full disk named (:mod:`.disk`), output folders checked, and the record of what idl wrote."""
