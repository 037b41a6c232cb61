"""Social proof: posts the user's followees clicked recently, by decayed click count."""

from __future__ import annotations

import numpy as np

from recsys.feed.candidates.base import FeedContext, Request, top_eligible


class SocialEngaged:
    """Posts followees clicked in the store's social window, scored by their clicks decayed with a
    one-day half-life (two followees yesterday beat one last week).

    Args:
        context (FeedContext): Shared feed context.
        quota (int): Posts returned. (default: 200)
    """

    name = "social"

    def __init__(self, context: FeedContext, quota: int = 200) -> None:
        self.context, self.quota = context, quota

    def candidates(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        items, scores = self.context.store.followee_engaged(request.user, request.now)
        return top_eligible(request, items, scores, self.quota)
