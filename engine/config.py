# Engine configuration: one frozen dataclass, built once by the composition root and passed
# down. Invariants: nothing here reads the environment or any global; defaults are the
# embedded defaults (a node runs with none of them changed).
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


@dataclass(frozen=True)
class EngineConfig:
    data_dir: Path
    node_id: str = "local"
    # Segment files are sealed when they pass this size.
    segment_size: int = 256 * MiB
    # Initial LMDB map size; MapFullError grows it (doubling), so this is only a start.
    map_size: int = 1 * GiB
    # Byte budget for chunks with `cache` residency (the pruner keeps them under it).
    cache_budget: int = 10 * GiB
    # Seconds an unreferenced chunk survives before the reaper may drop it.
    reaper_grace: float = 3600.0
    # Segments whose live share falls under this fraction are compacted by the reaper.
    compact_below: float = 0.5
    # Largest accepted upload (Glance's image_size_cap, default 1 TiB).
    image_size_cap: int = 1 * TiB
    # A read sends a local chunk without hashing it again when it passed verification less
    # than this many seconds ago (at ingest, on arrival, by an earlier read, which records
    # the time); older ones are verified on read. 0: every read verifies every chunk.
    trust_verified_for: float = 3600.0
    # Fsync segment files and commit LMDB with sync before acknowledging. Tests of logic may
    # turn it off for speed; crash tests and production keep it on.
    durable: bool = True
    # Cap on the bytes held in segment files (None = until the disk is full). Reaching it
    # fails an upload with StorageFull exactly as a full disk does.
    max_stored_bytes: int | None = None
    # Per-image limits (Glance's legacy quotas; negative = unlimited).
    image_property_quota: int = 128
    image_tag_quota: int = 128
    image_member_quota: int = 128
    image_location_quota: int = 10
    # Per-project totals (Glance's unified limits; None or negative = unlimited, the default
    # as in Glance without Keystone limits). Sizes are MiB, as Glance counts them.
    image_count_total: int | None = None
    image_size_total: int | None = None
    image_stage_total: int | None = None
    image_count_uploading: int | None = None
    # Import tasks (engine/importer.py): finished task records live this long (Glance's
    # task_time_to_live, 48 h); an import lock whose task is idle this long may be taken over.
    task_ttl: float = 48 * 3600.0
    import_lock_stale: float = 3600.0
    # The cleaner drops staged bytes no live staging record claims, and staged images idle
    # longer than this (a stage never imported).
    staging_stale: float = 86400.0
    # Named stores (engine/stores.py StoreConfig values, the `[[stores]]` tables); empty:
    # one unnamed store, the data directory, and no multi-store API.
    stores: tuple = ()
    # Delayed delete (Glance's delayed_delete / scrub_time): DELETE leaves an image with data
    # pending_delete; the scrubber deletes those older than scrub_time, scrub_batch a round.
    delayed_delete: bool = False
    scrub_time: float = 0.0
    scrub_batch: int = 100
    # The image cache API (/v2/cache, off as in Glance without image_cache_dir); its byte
    # budget is cache_budget; fills idle past the stall time are removed by the cleaner.
    image_cache: bool = False
    image_cache_stall_time: float = 86400.0
    # Periodic processes (engine/processes.py): seconds between rounds, and the prefetcher's
    # read rate (bytes per second).
    prefetch_interval: float = 5.0
    cache_prune_interval: float = 300.0
    cache_clean_interval: float = 600.0
    scrub_interval: float = 300.0
    reap_interval: float = 600.0
    prefetch_rate: int = 256 * MiB

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def segments_dir(self) -> Path:
        return self.data_dir / "segments"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"
