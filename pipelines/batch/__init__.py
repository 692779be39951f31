"""Batch jobs over Parquet with Ray Data: embed, score, generate.

    jobs.py    EmbedJob, ScoreJob, GenerateJob: each job's checks, compute and summary verb
    runner.py  plan (every check before Ray) → read → actor pool → atomic commit (_SUCCESS)
    reader.py  row groups read with row numbers; runs of consecutive rows
    actor.py   the model actor; errors located in the input file and rows

Every row gets what one in-process ``TabularVAE`` call on the whole input gives it: the IWAE
noise and the generated rows are addressed by row number (vae_core.row_streams), so neither
depends on how Ray cuts the input into batches. Every output row carries ``row_index``, its
row number in the input (or in the generated stream): Ray Data writes blocks as they finish,
so the files are not in input order (even ``preserve_order`` reordered rows in our tests).

Everything that can be checked without Ray is checked first (output path, model, input
files and schema, conditions), so a typo fails in seconds with one line naming the culprit.

    run(ScoreJob(model="models:/adult@champion", input="data/", output="out/scores"))
"""

from pipelines.batch.actor import ROW_INDEX
from pipelines.batch.jobs import JOBS, BatchJob, EmbedJob, GenerateJob, ScoreJob, job_for
from pipelines.batch.runner import SUCCESS, BatchOutcome, run

__all__ = ["JOBS", "ROW_INDEX", "SUCCESS", "BatchJob", "BatchOutcome", "EmbedJob",
           "GenerateJob", "ScoreJob", "job_for", "run"]
