"""Keep glibc's malloc from handing a CPU training step's big buffers back to the kernel.

Why
    A CPU training step allocates and frees the same large tensors every step (activations,
    logits, gradients: tens of MB each for a 1M-parameter model at batch 16 x 128). glibc
    serves any block above its mmap threshold (128 KiB, rising by itself to at most 32 MiB)
    with a fresh ``mmap`` and returns it with ``munmap`` on free, and it trims the top of the
    heap whenever 128 KiB are free there. So every step the kernel maps, zero-fills and
    unmaps the same memory again: ~35,000 minor page faults per step for llama-1m at batch
    16 x 128. Raising the limits makes its steps 21% faster at 2 threads and 14% at 1, and
    llama-tiny's 36% at 1 (``benchmarks/bench_malloc.py``).

What
    :func:`tune_cpu_allocator` raises three ``mallopt`` limits for the process: blocks up to
    ``MMAP_THRESHOLD`` come from the heap, the heap is trimmed only when ``TRIM_THRESHOLD``
    is free at its top, and each heap growth takes ``TOP_PAD`` extra. Freed memory is then
    reused by the next step instead of faulted in again. The cost is resident memory: the
    process keeps up to ~1 GiB of freed heap instead of returning it (peak RSS of a llama-1m
    run +34-130 MB). Numerics do not change: PyTorch aligns every CPU tensor to 64 bytes
    whichever way the memory was obtained.

    Setting ``M_MMAP_THRESHOLD`` or ``M_TRIM_THRESHOLD`` turns off glibc's self-adjusting
    threshold, so the three are set together: the trim threshold alone pins the mmap threshold
    at 128 KiB and nearly doubles the step time. It is the same tuning as the environment
    variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_``
    (which a user may set instead; with any of them set, mixlab leaves malloc alone), and a
    lighter alternative to preloading jemalloc or tcmalloc.

When
    mixlab's Trainer calls it when it trains on the CPU and ``train.tune_malloc`` is on (the
    default). It is process-wide and cannot be undone, so the adapters for other trainers do
    not call it; call it yourself at the start of a CPU training script. It does nothing (and
    returns False) off Linux/glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 1 << 29
ENV_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_tuned = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (not musl)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_cpu_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds for this process (see the module docstring).

    Returns True when the limits are in force (set now or by an earlier call), False when
    this is not glibc, the user set one of :data:`ENV_VARS` (their choice is kept), or glibc
    refused a value. Safe to call more than once.
    """
    global _tuned
    if _tuned:
        return True
    if any(v in os.environ for v in ENV_VARS):
        logger.info("malloc: %s set in the environment; left as it is", "/".join(ENV_VARS))
        return False
    libc = _glibc()
    if libc is None:
        return False
    limits = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    ok = all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in limits)
    if not ok:
        logger.warning("malloc: glibc refused the mmap/trim thresholds; CPU steps stay slower")
        return False
    _tuned = True
    logger.debug("malloc: mmap and trim thresholds raised to 1 GiB (train.tune_malloc)")
    return True
