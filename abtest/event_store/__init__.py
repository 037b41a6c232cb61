"""Backends of :class:`abtest.events.EventLog` and the pieces they share.

* :mod:`~abtest.event_store.file_log`: segment files + Parquet (embedded default).
* :mod:`~abtest.event_store.redis_log`: Redis streams + Parquet (``REDIS_URL``).
* :mod:`~abtest.event_store.segments`: JSON-lines segments, group-commit writer, torn-line tolerant reader.
* :mod:`~abtest.event_store.tables`: Arrow/Parquet conversion, atomic Parquet files, read-time dedup.
* :mod:`~abtest.event_store.shown_index`: bounded request -> shown items index (file backend).
* :mod:`~abtest.event_store.crashcheck`: SIGKILL durability harness (ACK protocol + audit).

Import the backend you need from its module (``redis`` is imported only by ``redis_log``), or use
:func:`abtest.events.open_event_log`.
"""
