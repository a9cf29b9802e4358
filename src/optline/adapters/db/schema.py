"""Every table module, imported so that ``metadata`` is complete (for Alembic and tests)."""

from optline.adapters.db import tables
from optline.adapters.db.tables import metadata

__all__ = ["metadata", "tables"]
