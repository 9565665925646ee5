# Glance's upload rules on a Verdict: which detected formats a declared disk_format accepts,
# which failed checks are fatal, and which virtual_size the record gets.
# Invariants: pure functions of (verdict, declared disk_format, container_format); refusals
# are UnsupportedFormat with Glance's exact 415 messages.
# Rules (glance-api.md 5.6, with require_image_format_match on, Glance's default):
# - Content matching several formats, or failing a safety check, is refused whatever the
#   container ("Image failed safety checks"); the MBR check is not fatal for aki/ari.
#   (Glance inspects only container_format=bare; tessera still refuses unsafe content in
#   other containers, since the upload is the only place that sees every byte.)
# - For container_format=bare the detected format must be one the declared disk_format
#   accepts ("Image disk_format X does not match stream data Y"): raw accepts raw, gpt and
#   iso content; ami/aki/ari/ploop accept raw (and gpt for the ami family); every other
#   declared format accepts only itself.
# - virtual_size: the header's when the detected format is the declared one, the stream
#   size for raw-like content, otherwise unknown (None).
from __future__ import annotations

from tessera.engine.errors import UnsupportedFormat
from tessera.engine.formats.verdict import Verdict

ACCEPTS = {
    "raw": frozenset({"raw", "gpt", "iso"}),
    "ami": frozenset({"raw", "gpt"}),
    "aki": frozenset({"raw", "gpt"}),
    "ari": frozenset({"raw", "gpt"}),
    "ploop": frozenset({"raw"}),
}
RAW_CONTENT = frozenset({"raw", "gpt", "iso"})
MBR_NONFATAL = frozenset({"aki", "ari"})
SAFETY_MESSAGE = "Image failed safety checks"


def accepted_formats(declared: str | None) -> frozenset[str]:
    if declared is None:
        return frozenset({"raw"})
    return ACCEPTS.get(declared, frozenset({declared}))


def fatal_problems(verdict: Verdict, declared: str | None) -> tuple:
    return tuple(p for p in verdict.reasons
                 if not (p.check == "mbr" and declared in MBR_NONFATAL))


def decide(verdict: Verdict, declared: str | None, container: str | None) -> int | None:
    """The virtual_size to record, or UnsupportedFormat."""
    if verdict.format is None or fatal_problems(verdict, declared):
        raise UnsupportedFormat(SAFETY_MESSAGE)
    detected = verdict.format
    if container == "bare" and detected not in accepted_formats(declared):
        raise UnsupportedFormat(
            f"Image disk_format {declared} does not match stream data {detected}")
    if detected == declared:
        if verdict.virtual_size is None and detected in RAW_CONTENT:
            return verdict.size
        return verdict.virtual_size
    if declared in ACCEPTS and detected in RAW_CONTENT:
        return verdict.size
    return None
