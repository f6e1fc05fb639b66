"""Imports every domain's tables so that Base.metadata is complete (for Alembic and tests)."""

from __future__ import annotations


def import_all_models() -> None:
    from app.audit import models as _audit  # noqa: F401
    from app.registry import models as _registry  # noqa: F401
    from app.datasets import models as _datasets  # noqa: F401
    from app.evals import models as _evals  # noqa: F401
    from app.labeling import models as _labeling  # noqa: F401
    from app.prompts import models as _prompts  # noqa: F401
    from app.runs import models as _runs  # noqa: F401
    from app.users import models as _users  # noqa: F401
