"""Where a catalogue image is: the one rule the images job and the HTTP side share.

Two sources say a host holds an image: the catalogue's record of a push (``image_hosts``,
written by ``imagepush.push`` when the host confirmed the SHA-256), and the host's latest
snapshot, whose ``images`` lists what its image directory holds (agents from issue 25 on;
older snapshots have no such list). The snapshot wins unless the push is newer than it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# image_hosts.at is written to the second (truncated): a push recorded at 12:00:00 may
# have ended at 12:00:00.9, after a snapshot taken at 12:00:00.5 that did not list it yet.
RECORD_SLACK_S = 1.0


def recorded_epoch(at: Any) -> float | None:
    """``image_hosts.at`` (ISO 8601) as epoch seconds; None when unreadable."""
    try:
        return datetime.fromisoformat(str(at)).timestamp()
    except ValueError:
        return None


def held(recorded_at: float | None, taken_at: float | None, in_snapshot: bool | None) -> bool:
    """Whether the host holds the image.

    ``in_snapshot``: True when its latest snapshot lists the digest, False when that
    snapshot lists images but not this one, None without a snapshot or a list in it.
    ``recorded_at``: when a push to it was recorded (None: never)."""
    if in_snapshot:
        return True
    if recorded_at is None:
        return False
    if in_snapshot is None or taken_at is None:
        return True
    # The snapshot says it is not there: believe it, unless the push came after it.
    return recorded_at + RECORD_SLACK_S > taken_at
