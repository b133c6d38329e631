"""One ONNX Runtime CPU memory arena for the process's tile sessions, its first region large enough
for a tile.

ONNX Runtime's default CPU arena starts with 1 MB and grows by regions of doubling size. Between two
tiles of nearly the same size its peak can jump by a third: on idl's depth-4 U-Net a 1504-px tile held
1221 MB over the process's base where a 1432-px one held 768 MB, because a freed block in one region
does not serve a larger tensor that needs the next. One arena whose first region holds every tensor
of the tile leaves nothing to jump: the region is reserved, not touched, so only the pages the tensors
use count as memory. On the BBBC039 U-Net, five runs of one tile, the peak RSS fell from 1332, 1497,
2215 and 2977 MB to 847, 1251, 1958 and 1700 MB at 1504, 1888, 2048 and 2240 px, at the same speed
(docs/benchmarks.md). Where the tile's tensors exceed the region the arena doubles past it again; a
3D U-Net's 8-GB tile held 7 % more than with the default arenas, so such sessions keep them.

The arena is the process's: ONNX Runtime registers one per device and never replaces it. Sessions
opt in (``session.use_env_allocators``), so a session that runs tiles beyond the region, the
export's checks and the footprint probes keep their own.
"""

from __future__ import annotations

import threading

# the first region's bytes: ONNX Runtime reads OrtArenaCfg's initial chunk as a 32-bit number
REGION = 2**31 - 2**20
_lock = threading.Lock()
_registered: bool | None = None  # None: not tried yet; False: ONNX Runtime refused


def fits_shared_arena(expected: float | None) -> bool:
    """Whether a session whose calls are expected to take ``expected`` bytes (the tile's estimate,
    :class:`~idl.infer.runtime.footprint.Footprint`, which already counts the arena's slack) should
    run in the shared arena: where they fit its first region, and once it is registered."""
    if expected is None or expected > REGION:
        return False
    return _register()


def _register() -> bool:
    """Register the shared CPU arena once per process; False where this ONNX Runtime cannot."""
    global _registered
    with _lock:
        if _registered is None:
            import onnxruntime as ort

            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            # no limit, regions of doubling size (kNextPowerOfTwo) after the first, ONNX Runtime's
            # default for the rest
            config = ort.OrtArenaCfg(0, 0, REGION, -1)
            try:
                ort.create_and_register_allocator(info, config)
                _registered = True
            except Exception:  # an older build, or an arena registered by the embedding program
                _registered = False
        return _registered
