"""beam-etl packaging. Also Beam's ``--setup_file``: Flink/Dataflow workers install the
package (and its core dependencies) from this file."""

from setuptools import find_packages, setup

CORE = [
    "apache-beam==2.77.0",
    "pyarrow>=15",
    "pandas>=2",
    "sqlglot>=25",
    "pydantic>=2.6",
    "PyYAML>=6",
    "fastavro>=1.9",
    "openpyxl>=3.1",
    "SQLAlchemy>=2",
    "rich>=13",
    "httpx>=0.27",
    "tenacity>=8",
    # validate/clean/coerce are always registered (each imported only when first used)
    "email-validator>=2.1",
    "phonenumbers>=8.13",
    "nh3>=0.2.14",
]

# One extra per connector family; `test` pulls in everything the suite exercises.
EXTRAS = {
    "gcp": ["apache-beam[gcp]==2.77.0", "build>=1"],  # build: Dataflow stages setup.py as an sdist
    "aws": ["apache-beam[aws]==2.77.0", "boto3>=1.34"],
    "azure": ["apache-beam[azure]==2.77.0"],
    "sql": ["psycopg[binary]>=3.1", "psycopg-pool>=3.2", "PyMySQL>=1.1", "DBUtils>=3.1", "mysql-replication>=1.0"],
    "kafka": ["kafka-python>=2.2"],
    "rabbitmq": ["pika>=1.3"],
    "streams": ["websockets>=13", "httpx-sse>=0.4"],
    "quality": ["datasketches>=5"],
    "sketches": ["datasketches>=5"],  # approximate: true (HLL/KLL) in aggregate and profile
    "gx": ["great_expectations==1.24.1"],
    "bench": ["duckdb>=1.1", "polars>=1", "psutil>=5"],  # python -m benchmarks.run
}
EXTRAS["test"] = sorted(
    {dep for name in ("gcp", "aws", "azure", "sql", "kafka", "rabbitmq", "streams", "quality", "gx") for dep in EXTRAS[name]}
    | {"pytest>=8", "pytest-timeout>=2", "hypothesis>=6", "duckdb>=1.1", "moto[server]>=5", "gcp-storage-emulator>=2024.8.3", "polars>=1", "psutil>=5"}
)
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setup(
    name="beam-etl",
    version="0.1.0",
    description="A production ETL engine on Apache Beam: YAML specs, columnar Arrow batches, a dead-letter queue",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["beam_etl", "beam_etl.*"]),
    package_data={"beam_etl": ["data/*.json", "data/*.yaml", "data/*.csv"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["beam-etl=beam_etl.cli:main"]},
)
