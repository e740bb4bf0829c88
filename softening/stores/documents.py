"""Old import path of the output documents, kept so stores written before they moved still load.

Documents stored by earlier versions name ``softening.stores.documents`` as their ``@module``;
monty's decoder imports it. Everything lives in :mod:`softening.schemas`.
"""

from __future__ import annotations

from softening.schemas import *  # noqa: F403
from softening.schemas import __all__  # noqa: F401
