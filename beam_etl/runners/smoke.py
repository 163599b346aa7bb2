"""A runner smoke test: a tiny Arrow-batch pipeline with a shuffle, and a coder check.

``python -m beam_etl.runners.smoke --runner=FlinkRunner`` runs it with the same defaults the
CLI uses (:func:`beam_etl.runners.prepare_pipeline_args`) and checks the result, so a
runner setup (job-server jar, cluster, Prism binary) can be verified without a spec. The
batches cross a ``GroupByKey``, so on a portable runner they are encoded by
:class:`beam_etl.batch.ArrowBatchCoder` over the Fn API.

Example:
    >>> import apache_beam as beam
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     build_smoke_pipeline(p, "/tmp/smoke/out")
"""

from __future__ import annotations

import glob
import json
import sys
import tempfile
import time
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batch import ArrowBatchCoder

__all__ = [
    "SMOKE_ELEMENTS",
    "smoke_batch",
    "double_values",
    "expected_sums",
    "build_smoke_pipeline",
    "read_smoke_output",
    "arrow_coder_pcollections",
    "main",
]

#: How many input batches the smoke pipeline makes (each 3 rows, keys alternate).
SMOKE_ELEMENTS = 6


def smoke_batch(seed: int) -> pa.RecordBatch:
    """Batch ``seed``: three rows ``k = seed % 2``, ``v = seed, seed+1, seed+2``."""
    return pa.RecordBatch.from_pydict({"k": pa.array([seed % 2] * 3, pa.int64()), "v": pa.array(range(seed, seed + 3), pa.int64())})


def double_values(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with ``v`` doubled (vectorized)."""
    return batch.set_column(1, "v", pc.multiply(batch.column(1), 2))


def _key(batch: pa.RecordBatch) -> tuple[str, pa.RecordBatch]:
    return str(batch.column(0)[0].as_py()), batch


def _total(item: tuple[str, Iterable[pa.RecordBatch]]) -> str:
    key, batches = item
    total = sum(pc.sum(batch.column(1)).as_py() or 0 for batch in batches)
    return json.dumps({"k": key, "sum": total})


def expected_sums(elements: int = SMOKE_ELEMENTS) -> dict[str, int]:
    """What the smoke pipeline must write, computed without Beam."""
    sums: dict[str, int] = {}
    for seed in range(elements):
        batch = double_values(smoke_batch(seed))
        key = str(seed % 2)
        sums[key] = sums.get(key, 0) + pc.sum(batch.column(1)).as_py()
    return sums


def build_smoke_pipeline(pipeline: Any, output_prefix: str, elements: int = SMOKE_ELEMENTS) -> Any:
    """Add the smoke graph to ``pipeline``: Create -> batches -> double -> GroupByKey -> text.

    Args:
        pipeline: a ``beam.Pipeline``.
        output_prefix: ``WriteToText`` prefix for the JSON result lines.
        elements: number of input batches.
    """
    import apache_beam as beam

    return (
        pipeline
        | "Seeds" >> beam.Create(list(range(elements)))
        | "MakeBatches" >> beam.Map(smoke_batch).with_output_types(pa.RecordBatch)
        | "Double" >> beam.Map(double_values).with_output_types(pa.RecordBatch)
        | "Key" >> beam.Map(_key).with_output_types(tuple[str, pa.RecordBatch])
        | "Group" >> beam.GroupByKey()
        | "Total" >> beam.Map(_total)
        | "Write" >> beam.io.WriteToText(output_prefix)
    )


def read_smoke_output(output_prefix: str) -> dict[str, int]:
    """The ``{key: sum}`` the smoke pipeline wrote under ``output_prefix``."""
    result: dict[str, int] = {}
    for path in sorted(glob.glob(output_prefix + "*")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    result[row["k"]] = row["sum"]
    return result


def arrow_coder_pcollections(pipeline_proto: Any) -> dict[str, str]:
    """PCollection id -> unique name for every PCollection encoded with ArrowBatchCoder.

    Custom Python coders appear in the proto as ``beam:coder:pickled_python:v1`` whose
    payload is the pickled coder (DESIGN §3); we unpickle it and check the class, looking
    through wrapping coders (KV, windowed value, length prefix) via their components.

    Args:
        pipeline_proto: a ``beam_runner_api_pb2.Pipeline`` (``pipeline.to_runner_api()``).
    """
    from apache_beam.coders.coders import deserialize_coder
    from apache_beam.portability import python_urns

    coders = pipeline_proto.components.coders
    memo: dict[str, bool] = {}

    def carries_arrow(coder_id: str) -> bool:
        if coder_id not in memo:
            memo[coder_id] = False  # guards against cycles
            spec = coders[coder_id]
            found = False
            if spec.spec.urn == python_urns.PICKLED_CODER:
                found = isinstance(deserialize_coder(spec.spec.payload), ArrowBatchCoder)
            memo[coder_id] = found or any(carries_arrow(child) for child in spec.component_coder_ids)
        return memo[coder_id]

    return {
        pcoll_id: pcoll.unique_name
        for pcoll_id, pcoll in pipeline_proto.components.pcollections.items()
        if carries_arrow(pcoll.coder_id)
    }


def main(argv: list[str] | None = None) -> int:
    """Run the smoke pipeline with CLI-style Beam args; print one line; 0 when correct."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_etl.errors import BeamEtlError
    from beam_etl.runners import prepare_pipeline_args

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = prepare_pipeline_args(args)
    except BeamEtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prefix = tempfile.mkdtemp(prefix="beam-etl-smoke-") + "/out"
    started = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    build_smoke_pipeline(pipeline, prefix)
    pipeline.run().wait_until_finish()
    got, want = read_smoke_output(prefix), expected_sums()
    runner = next((a.split("=", 1)[1] for a in args if a.startswith("--runner=")), "DirectRunner")
    if got != want:
        print(f"FAILED on {runner}: got {got}, expected {want}", file=sys.stderr)
        return 1
    print(f"ok: {runner} ran the Arrow-batch smoke pipeline in {time.monotonic() - started:.1f} s ({prefix})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
