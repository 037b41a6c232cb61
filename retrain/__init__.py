"""The retraining loop: the service's flushed event logs -> a dataset -> challengers -> a simulated
A/B test against the champions -> promotion on ship (``python -m retrain run --help``)."""
