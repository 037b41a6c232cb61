"""Column contracts of the parquet files that ``data_gen`` writes and ``recsys.data`` reads.

One place names every column and its dtype, so the generator, the validator and the loaders agree.
Timestamps are int64 seconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from typing import Final

#: Interaction event kinds, in funnel order: an impression precedes any engagement with the item.
EVENT_KINDS: Final = ("impression", "click", "like", "share")
#: Events that count as positive feedback for training (impressions are exposure, not preference).
ENGAGEMENT_EVENTS: Final = ("click", "like", "share")

USERS: Final = {
    "user_id": "int64",
    "signup_ts": "int64",
    "region": "string",
    "age_bucket": "string",
    "activity_level": "float32",
}
ITEMS: Final = {
    "item_id": "int64",
    "creator_id": "int64",
    "created_ts": "int64",
    "topic": "int16",
    "media_type": "string",
}
FOLLOWS: Final = {
    "follower_id": "int64",
    "followee_id": "int64",
    "ts": "int64",
}
INTERACTIONS: Final = {
    "user_id": "int64",
    "item_id": "int64",
    "ts": "int64",
    "event": "string",
    "position": "int16",
    "dwell_ms": "int32",
}

#: Table name -> required columns. Extra columns are allowed (generators may add features).
TABLES: Final = {"users": USERS, "items": ITEMS, "follows": FOLLOWS, "interactions": INTERACTIONS}
