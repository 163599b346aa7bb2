"""The beam-etl benchmark: one ETL job in beam-etl, DuckDB, Polars, pandas and row-by-row Beam.

``python -m benchmarks.run --rows 1000000 10000000`` (see ``benchmarks/run.py``).
"""
