"""adapters/heap.py: the objects alive when a job starts are frozen while it runs, and only while it runs;
a freeze made by someone else is left as it is."""

from __future__ import annotations

import gc

from optline.adapters import heap


def test_objects_are_frozen_while_a_job_runs_and_released_after() -> None:
    assert gc.get_freeze_count() == 0
    with heap.frozen():
        assert gc.get_freeze_count() > 0
        with heap.frozen():  # a second job at once shares the freeze
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0  # the first job still runs
    assert gc.get_freeze_count() == 0


def test_a_freeze_made_by_someone_else_is_left_in_place() -> None:
    gc.freeze()
    try:
        with heap.frozen():
            pass
        # Not an equality with the count before: frozen objects freed meanwhile (by another thread of the
        # test process) leave the permanent generation. Undoing the freeze would empty it.
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
