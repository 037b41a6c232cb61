"""Synthetic social network and its ground-truth behaviour model (``python -m data_gen``).

One generative story (full version: docs/data_gen.md; each step's module holds the details):

1. ``population``: users belong to one or two of ``K`` overlapping communities; their latent taste
   ``p_u`` is their communities' centre mix plus noise (homophily). Activity is log-normal; a share
   of users are late joiners who sign up near the end of the simulated period (cold start).
2. ``graph``: follows from a degree-corrected community model (Pareto in-degree propensity, mostly
   within the follower's communities), plus triadic closure and reciprocity. Late joiners follow
   people right after signing up.
3. ``posts``: posts are created by users after they sign up, on topics drawn from the creator's
   interests; post factors mix the topic vector and the creator's taste; appeal is Gaussian.
4. ``simulate``: day by day, users open sessions; a logging feed policy fills slots from followees'
   posts, posts followees clicked, interest topics, trending posts (rich get richer) and random
   recent posts; each impression is clicked with the true probability of ``behavior`` (latent
   affinity + appeal + popularity + social influence of followees' clicks - age, times position
   bias); likes and shares are conditional on clicks.

Outputs: ``users/items/follows/interactions`` parquet (``feedrec_common.parquet_tables``), ``manifest.json``,
``CARD.md`` and the hidden ``truth/`` read through :class:`data_gen.truth.ClickModel`.
"""

__version__ = "1.0.0"
