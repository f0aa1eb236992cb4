"""Datasets from label files (csv, tsv, jsonl) and from one folder split by val_fraction."""
