"""A/B statistics: pure functions of aggregated data (no web framework, no Redis, no event log).

* :mod:`~abtest.stats.sufficient_statistics`: sufficient statistics per arm (frozen, add with ``+``);
* :mod:`~abtest.stats.aggregate`: per-user metrics -> those statistics, per arm;
* :mod:`~abtest.stats.lift`: the vectorised core (lifts, Fieller's relative interval, p-values);
* :mod:`~abtest.stats.significance`: Welch, two-proportion, delta-method ratio and CUPED tests;
* :mod:`~abtest.stats.results`: :class:`~abtest.stats.results.TestResult` and its wording;
* :mod:`~abtest.stats.srm`, :mod:`~abtest.stats.multiple_testing`: sample ratio mismatch, Holm / BH;
* :mod:`~abtest.stats.sequential`: the always-valid test (mSPRT);
* :mod:`~abtest.stats.power`: power, minimum detectable effect, sample size;
* :mod:`~abtest.stats.normality`: is an arm large enough for the normal approximation;
* :mod:`~abtest.stats.formatting`: how percentages, intervals and p-values are written.
"""
