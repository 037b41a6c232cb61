"""Drift monitoring: is live traffic still what the served model was trained and validated on?

* :mod:`monitoring.features`: the monitored inputs, one row per request (lookups from the training data);
* :mod:`monitoring.profile`: reference profiles (from the dataset or from a period of logged events);
* :mod:`monitoring.detectors`: KS, chi-square, PSI, Holm (pure functions);
* :mod:`monitoring.drift`: window-by-window comparison and the alarm rule;
* :mod:`monitoring.report`, :mod:`monitoring.prometheus`: Markdown/HTML reports, Prometheus gauges;
* :mod:`monitoring.scenarios`: a simulator with drift injected at a known time (reads ``truth/``);
* ``python -m monitoring drift --events DIR --reference DATA_OR_PROFILE --out DIR``.

Design and validation: ``docs/monitoring.md``.
"""
