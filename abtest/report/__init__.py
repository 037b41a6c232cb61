"""The A/B report: from event rows to a decision in plain words, Markdown and one HTML page.

* :mod:`~abtest.report.analysis`: :class:`~abtest.report.analysis.ReportInputs` ->
  :class:`~abtest.report.analysis.ExperimentAnalysis` (every number, frozen);
* :mod:`~abtest.report.plots`, :mod:`~abtest.report.pages`: PNG plots, Markdown and HTML;
* :mod:`~abtest.report.render`: ``render_report`` / ``write_report`` and ``python -m abtest report``;
* :mod:`~abtest.report.guardrails`, :mod:`~abtest.report.prometheus`: latency / error-rate guardrails from
  the service's ``/metrics``.
"""
