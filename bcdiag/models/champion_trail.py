"""The champion as bcdiag's audit trail records it.

MLflow's ``champion`` alias can be moved by anyone who reaches MLflow: the MLflow UI
refuses it (`bcdiag.platform.registry_guard`), but a researcher's notebook reaches the
tracking server itself. bcdiag's database is out of researchers' reach, and every
champion move bcdiag makes is recorded there as one of `CHAMPION_MOVES`, with the target
``model:<name>/<version>`` of the version made champion:

- ``model.promoted``: the quality gate passed (`bcdiag.lifecycle.gate.record_decision`,
  for ``bcdiag promote``, the retraining cycle and the first start alike);
- ``model.promoted-forced``: an administrator skipped the gate (``bcdiag promote
  --force``, `force_champion`);
- ``model.rolled-back``: ``bcdiag rollback`` restored the previous champion.

A champion has a passing gate record when it is the version of the newest such event
for its model (`recorded_champion`); `bcdiag.serving.inference.Predictor` scores with
no other. Run tags (``gate_decision``) are not evidence: they are MLflow data too.
"""

from __future__ import annotations

from sqlalchemy import select

from bcdiag.models.registry import ModelVersionInfo, rollback, set_champion
from bcdiag.storage import Storage
from bcdiag.storage.database import database_errors
from bcdiag.storage.models import AuditEvent

PROMOTED, PROMOTED_FORCED, ROLLED_BACK = (
    "model.promoted",
    "model.promoted-forced",
    "model.rolled-back",
)
CHAMPION_MOVES = (PROMOTED, PROMOTED_FORCED, ROLLED_BACK)


def target(name: str, version: str | int) -> str:
    """The audit target of a registered version: ``model:<name>/<version>``."""
    return f"model:{name}/{version}"


def recorded_champion(storage: Storage, name: str) -> str | None:
    """The version bcdiag last made champion of `name`; None if it never did.

    Raises:
        StorageError: the database failed.
    """
    query = (
        select(AuditEvent.target)
        .where(
            AuditEvent.action.in_(CHAMPION_MOVES),
            AuditEvent.target.startswith(target(name, ""), autoescape=True),
        )
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    with storage.sessions() as session, database_errors(storage.engine, "reading the audit trail"):
        newest = session.scalar(query)
    return None if newest is None else newest.rsplit("/", 1)[1]


def force_champion(
    name: str, version: str | int, *, storage: Storage, user: str
) -> ModelVersionInfo | None:
    """Make `version` the champion without the gate, recorded as ``model.promoted-forced``
    (``bcdiag promote --force``, administrators); returns the champion it replaced."""
    replaced = set_champion(name, version)
    storage.record_audit(
        user=user,
        action=PROMOTED_FORCED,
        target=target(name, version),
        details={
            "replaced": None if replaced is None else replaced.version,
            "reason": "forced: the gate was skipped",
        },
    )
    return replaced


def roll_back_champion(name: str, *, storage: Storage, user: str) -> tuple[str, str]:
    """`bcdiag.models.registry.rollback`, recorded as ``model.rolled-back``; returns the
    (restored, withdrawn) versions."""
    restored, withdrawn = rollback(name)
    storage.record_audit(
        user=user,
        action=ROLLED_BACK,
        target=target(name, restored),
        details={"withdrawn": withdrawn},
    )
    return restored, withdrawn
