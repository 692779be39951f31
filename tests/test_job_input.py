"""The job's input helpers that need no Ray cluster: the validation rows read on the
driver, and the pacing of Ray Data's scheduling loop."""

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.dataset import discover, validation_rows
from tests.tables import OVERRIDES, mixed_table
from vae_core import ColumnTransformer, TableStatistics, infer_schema
from vae_core.training import holdout_mask


def test_validation_rows_are_the_trainers_split_in_file_order_up_to_the_limit(tmp_path):
    for i in range(3):  # three files of 1,000 rows
        pq.write_table(mixed_table(1000, seed=i), tmp_path / f"part-{i}.parquet")
    table = pq.read_table(tmp_path)  # the rows as Parquet gives them back, in file order
    schema = infer_schema(table.schema, OVERRIDES)
    transformer = ColumnTransformer.fit(schema, TableStatistics.of(schema, table))
    is_val = holdout_mask(transformer.transform(table).x, 0.2, seed=3)
    expected = table.filter(pa.array(is_val))
    source = discover(str(tmp_path))

    everything = validation_rows(source, transformer, 0.2, 3, limit=10**6)
    assert everything.equals(expected.combine_chunks())
    assert 400 < everything.num_rows < 800  # about a fifth: the split, not all rows
    first = validation_rows(source, transformer, 0.2, 3, limit=250)  # spans two files
    assert first.equals(expected.slice(0, 250).combine_chunks())
    unsplit = validation_rows(source, transformer, 0.0, 3, limit=1500)
    assert unsplit.equals(table.slice(0, 1500).combine_chunks())


class _Executor:
    def __init__(self, consumer_waits: bool):
        self.consumer_waits = consumer_waits

    def _consumer_idling(self) -> bool:
        return self.consumer_waits


def test_ray_data_scheduling_pauses_only_while_its_consumer_is_busy(monkeypatch):
    from pipelines import ray_runtime

    sleeps = []
    monkeypatch.setattr(ray_runtime.time, "sleep", sleeps.append)
    pacing = ray_runtime.PacedScheduling()
    pacing.on_execution_step(_Executor(consumer_waits=True))  # it needs data: no pause
    assert sleeps == []
    pacing.on_execution_step(_Executor(consumer_waits=False))
    assert sleeps == [ray_runtime.PacedScheduling.PACE_S]
