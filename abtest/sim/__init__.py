"""Simulators that know the truth, to check the A/B layer end to end.

* :mod:`~abtest.sim.world`: data_gen users, their arrival process and the rankers' lists (reads ``truth/``);
* :mod:`~abtest.sim.closed_loop`: ``python -m abtest simulate``: real HTTP traffic against the service,
  clicks from the true click model;
* :mod:`~abtest.sim.offline`: one simulated world, many re-randomised experiments (``--offline``);
* :mod:`~abtest.sim.synthetic`: synthetic per-user data (incl. heavy-tailed users) for the statistics alone.
"""
