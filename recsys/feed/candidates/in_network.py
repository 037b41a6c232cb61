"""In-network fresh posts: the newest posts of the accounts the user follows."""

from __future__ import annotations

import numpy as np

from recsys.feed.candidates.base import FeedContext, Request, top_eligible


class InNetworkFresh:
    """Followees' posts inside the age cap, newest first.

    Args:
        context (FeedContext): Shared feed context.
        quota (int): Posts returned. (default: 200)
    """

    name = "in_network"

    def __init__(self, context: FeedContext, quota: int = 200) -> None:
        self.context, self.quota = context, quota

    def candidates(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        followees = self.context.store.followees(request.user)
        items = self.context.creator_posts(followees)
        return top_eligible(request, items, self.context.catalog.created_ts[items].astype(np.float64), self.quota)
