"""What every layer of feedrec shares, and nothing else: it imports no other feedrec package.

* :mod:`feedrec_common.parquet_tables`: the column contracts of a dataset directory's parquet tables
  and where their files are (one file or a folder of parts);
* :mod:`feedrec_common.config`: YAML configuration validated by pydantic, ``--set key=value``
  overrides;
* :mod:`feedrec_common.hashing`: sha256 of files and arrays (manifests, fingerprints).

Why a package of its own: ``data_gen`` (which writes the tables) and ``recsys`` (which reads them)
must agree on these, yet ``data_gen`` must not depend on the model library and ``recsys`` must not
import any application (``docs/architecture.md``, "Layers").
"""
