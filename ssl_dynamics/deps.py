"""Optional-looking dependencies that the package requires: a clear message when one is absent.

xarray, pandas, pyarrow and h5netcdf are install requirements (setup.py). An environment
that lacks one anyway (a partial install, a frozen cluster image) gets one line naming the
package to install instead of an ImportError traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# import name -> name on the package index, where they differ
PIP_NAMES: dict[str, str] = {}


def need(module: str, what: str) -> ModuleType:
    """Import `module`, or raise UserError saying which package `what` needs."""
    from .errors import UserError

    try:
        return importlib.import_module(module)
    except ImportError:
        pip = PIP_NAMES.get(module, module)
        raise UserError(f"{what} needs the Python package {pip}: pip install {pip}") from None
