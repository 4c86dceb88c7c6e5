"""The one map from dtype names (flags, configs, cache formats) to torch dtypes.

Every `--dtype` flag, the int8 backbone code, the feature cache and the dataset pipelines read
names through `resolve_dtype`, so the set of supported precisions and what "auto" means live here
alone. Importing this module does not import torch (argument parsers use `DTYPE_NAMES` for
`--help` and flag checks before any model is loaded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
AUTO = "auto"  # float16 on a CUDA device, float32 anywhere else


class UnsupportedDtype(ValueError):
    """A dtype name (or torch dtype) outside `DTYPE_NAMES`; the message names the choices."""


def resolve_dtype(dtype: "str | torch.dtype", device: Optional[str] = None) -> "torch.dtype":
    """A name in `DTYPE_NAMES` (or that torch dtype itself) -> the torch dtype.

    "auto" needs `device`: float16 on CUDA (half the memory, fast kernels), float32 elsewhere
    (CPU half-precision matmuls are slow and lossy)."""
    import torch

    if isinstance(dtype, torch.dtype):
        if str(dtype).removeprefix("torch.") in DTYPE_NAMES:
            return dtype
        raise UnsupportedDtype(f"dtype {dtype} is not supported; choose one of "
                               f"{list(DTYPE_NAMES)}")
    if dtype == AUTO and device is not None:
        dtype = "float16" if str(device).startswith("cuda") else "float32"
    if dtype not in DTYPE_NAMES:
        raise UnsupportedDtype(f"--dtype {dtype!r} is not supported; choose one of "
                               f"{list(DTYPE_NAMES)}")
    return getattr(torch, dtype)
