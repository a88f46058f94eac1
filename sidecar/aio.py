"""Small asyncio helpers shared by the worker pool and the audit writer."""

from __future__ import annotations

import asyncio
from typing import Any


def settle(future: asyncio.Future[Any], outcome: Any) -> None:
    """Resolve `future` with `outcome` (raised if it is an exception), unless the caller
    has gone away (cancelled) or it was settled already."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
