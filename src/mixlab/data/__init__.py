"""Data: from raw corpora to a prepared, per-domain shard store.

* :mod:`mixlab.data.readers` — stream :class:`~mixlab.data.readers.Document` records (text,
  domain, metadata, origin) from JSONL (plain / gz / zst), Parquet, text files and Hugging Face
  datasets saved to disk, with per-domain ingestion counters (``IngestStats``).

Importing this package imports none of its modules; import the one you need.
"""
