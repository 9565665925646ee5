# Task records (Glance's tasks table): what an import did and why it failed. Records live in
# the `tasks` database, key = the task id's 16 raw bytes, value = msgpack of the fields.
# Invariants:
# - Status moves only along Glance's task machine: pending -> processing | failure,
#   processing -> success | failure; finished tasks get expires_at = finish + time to live.
# - Records are written only inside writer jobs (the caller's transaction); reads are short.
# - The tasks database stays small (one record per import, expiring after its time to live),
#   so per-image and filtered listings scan it; nothing else indexes it.
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tessera.engine.errors import InvalidInput, NotFound
from tessera.engine.index import pack, unpack
from tessera.engine.records import id_key, is_uuid

TASK_STATUSES = ("pending", "processing", "success", "failure")
_NEXT = {"pending": {"processing", "failure"}, "processing": {"success", "failure"},
         "success": set(), "failure": set()}
TASK_TYPES = ("import", "api_image_import", "location_import")


@dataclass(frozen=True)
class TaskRecord:
    id: str
    type: str
    status: str
    owner: str | None
    image_id: str | None
    request_id: str | None
    user_id: str | None
    input: dict = field(default_factory=dict)
    result: dict | None = None
    message: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float | None = None

    def moved(self, status: str, *, now: float, ttl: float, **changes: Any) -> "TaskRecord":
        if status != self.status and status not in _NEXT[self.status]:
            raise InvalidInput(f"Task status transition from {self.status} to {status} "
                               f"is not allowed")
        if status in ("success", "failure"):
            changes["expires_at"] = now + ttl
        return replace(self, status=status, updated_at=max(now, self.updated_at), **changes)


def put(txn: Any, db: Any, rec: TaskRecord) -> TaskRecord:
    txn.put(id_key(rec.id), pack(asdict(rec)), db=db)
    return rec


def load(txn: Any, db: Any, task_id: str) -> TaskRecord | None:
    if not is_uuid(task_id):
        return None
    raw = txn.get(id_key(task_id.lower()), db=db)
    return None if raw is None else TaskRecord(**unpack(raw))


def get(txn: Any, db: Any, task_id: str) -> TaskRecord:
    rec = load(txn, db, task_id)
    if rec is None:
        raise NotFound(f"Task with the given id {task_id} not found")
    return rec


def scan(txn: Any, db: Any) -> list[TaskRecord]:
    return [TaskRecord(**unpack(raw)) for _, raw in txn.cursor(db=db)]


def expired(txn: Any, db: Any, now: float) -> list[str]:
    return [t.id for t in scan(txn, db) if t.expires_at is not None and t.expires_at < now]


def delete(txn: Any, db: Any, task_id: str) -> None:
    txn.delete(id_key(task_id), db=db)
