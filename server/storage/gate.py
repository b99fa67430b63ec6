"""One gate in front of every write to the store, for what must be true before any write: a
local store has room and is writable (disk.py), this process still holds an object store's
writer lease (lock.py). Wrapping the library handles, rather than each call site, covers the
journal, checkpoints, marks and every view alike, including writes added later."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

# Library methods that may write to the store.
WRITES = (
    "append", "append_batch", "compact_data", "compact_data_batch", "compact_symbol_list",
    "defragment_symbol_data", "delete", "delete_batch", "delete_data_in_range",
    "delete_snapshot", "delete_staged_data", "finalize_staged_data", "list_symbols",
    "merge_experimental", "prune_previous_versions", "snapshot",
    "sort_and_finalize_staged_data", "stage", "update", "update_batch", "write", "write_batch",
    "write_metadata", "write_metadata_batch", "write_pickle", "write_pickle_batch",
)  # fmt: skip


def gate_writes(
    arctic: Any,
    before: Callable[[], None],
    failed: Callable[[Exception], None] = lambda error: None,
) -> None:
    """Makes every library `arctic.get_library` returns from now on call `before` ahead of
    each write (it raises to refuse the write) and `failed` with a write's error."""
    get_library = arctic.get_library

    @functools.wraps(get_library)
    def gated_library(*args: Any, **kwargs: Any) -> Any:
        library = get_library(*args, **kwargs)
        for name in WRITES:
            method = getattr(library, name, None)
            if method is not None:
                setattr(library, name, _gated(method, before, failed))
        return library

    arctic.get_library = gated_library


def _gated(
    method: Callable[..., Any], before: Callable[[], None], failed: Callable[[Exception], None]
) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        before()
        try:
            return method(*args, **kwargs)
        except Exception as error:
            failed(error)
            raise

    return write
