"""vae_cli: the `vae` command line, its own thin layer over pipelines and serving.

    parser.py     every command and flag, each with its help, default and unit
    job_flags.py  the training job's keys as flags, their help read from the config fields
    commands.py   what each command does (imports pipelines / serving lazily)
    demo.py       `vae demo`: the product end to end on the bundled Adult table

Quiet by default: the CLI's own lines go to stdout, Ray's and MLflow's logs to a log file
named in the first line (pipelines.logs); ``--verbose`` (or VAE_VERBOSE=1) shows them.
Bad input prints one line, ``vae: error: …``, and exits with status 2.
"""

from vae_cli.main import console, main

__all__ = ["console", "main"]
