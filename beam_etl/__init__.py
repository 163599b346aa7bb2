"""beam-etl: ETL pipelines as YAML specs or PTransforms, run on Apache Beam over Arrow batches."""

__version__ = "0.1.0"
