"""Tiled prediction: the tile grid with halos, the tiled runner (in memory and out of core) and the
stitching of objects across tiles."""
