"""Lengths in micrometres, from the units microscopy metadata names (OME's symbols, ImageJ's and
OME-Zarr's unit names)."""

from __future__ import annotations

import numpy as np

# micrometres per unit (OME's unit symbols, ImageJ's and OME-Zarr's unit names)
UNITS = {
    "m": 1e6,
    "meter": 1e6,
    "cm": 1e4,
    "centimeter": 1e4,
    "mm": 1e3,
    "millimeter": 1e3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "å": 1e-4,
    "angstrom": 1e-4,
}


def micrometres(value: object, unit: object = "µm") -> float | None:
    """``value`` in ``unit`` as micrometres, or None (no value, not positive, or an unknown unit)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    factor = UNITS.get(str(unit or "µm").strip().lower().replace("\\u00b5", "µ"))
    if factor is None or not np.isfinite(number) or number <= 0:
        return None
    return number * factor
