"""Candidate sources of the feed (one class per file, one interface: :mod:`.base`)."""

from recsys.feed.candidates.base import CandidateSource, FeedContext, Request, top_eligible
from recsys.feed.candidates.gnn import GNNRetrieval
from recsys.feed.candidates.in_network import InNetworkFresh
from recsys.feed.candidates.interest import FreshByInterest
from recsys.feed.candidates.social import SocialEngaged
from recsys.feed.candidates.trending import Trending

#: Source name -> class, for configuration files.
SOURCES = {cls.name: cls for cls in (GNNRetrieval, InNetworkFresh, SocialEngaged, Trending, FreshByInterest)}

__all__ = [
    "SOURCES", "CandidateSource", "FeedContext", "Request", "top_eligible",
    "GNNRetrieval", "InNetworkFresh", "FreshByInterest", "SocialEngaged", "Trending",
]  # fmt: skip
