"""The `vae` command: the demo end to end (short), one readable line on failure, help on
every flag, the batch job types built by keywords, and a quiet terminal (Ray's and
MLflow's logs in a file, not on stdout)."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import logs
from pipelines.batch import JOBS, EmbedJob, GenerateJob, ScoreJob, job_for
from pipelines.progress import epoch_line
from vae_cli import main
from vae_cli.commands import condition_flags
from vae_cli.parser import build_parser

VAE = str(Path(sys.executable).with_name("vae"))


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--library-only", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    for step in ("1. fit", "2. saved", "3. scored", "4. five synthetic rows", "5. embedded"):
        assert step in out
    assert (tmp_path / "m" / "model.json").is_file() and (tmp_path / "m" / "weights.pt").is_file()
    assert "Ray and MLflow logs: " in out.splitlines()[0]
    assert (tmp_path / "m.log").is_file()


def test_errors_print_one_line_and_exit_non_zero(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["demo", "--epochs", "1", "--library-only", "--out", str(blocker / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae: error:") and "a-file" in err[0]


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--model", "m", "--output", "o"])  # --input missing
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vae score: error: the following arguments are required: --input "
                   "(see vae score --help)"]


def test_an_unknown_preset_is_one_line_listing_the_known_ones(tmp_path, capsys):
    data = tmp_path / "rows.parquet"
    data.write_bytes(b"")  # never read: the preset is checked with the config, first
    assert main(["train", "--data", str(data), "--preset", "anomalies"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vae: error: preset 'anomalies' is not one of synthesis, anomaly, embedding"]


def test_an_unknown_placement_is_one_line_listing_the_known_ones(tmp_path, capsys):
    data = tmp_path / "rows.parquet"
    data.write_bytes(b"")
    assert main(["train", "--data", str(data), "--workers", "2", "--placement", "even"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vae: error: placement 'even' is not one of pack, spread"]


def test_a_lost_working_directory_is_named(tmp_path, monkeypatch):
    from vae_cli.main import one_line

    gone = tmp_path / "job"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(FileNotFoundError) as lost:
        os.getcwd()
    assert one_line(lost.value) == ("[Errno 2] No such file or directory: the working "
                                    "directory was removed")
    assert one_line(FileNotFoundError(2, "No such file or directory", "x.parquet")) == \
        "[Errno 2] No such file or directory: 'x.parquet'"


def _commands(parser: argparse.ArgumentParser, prefix: str = "vae"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _commands(sub, f"{prefix} {name}")


def test_every_option_of_every_command_has_help_with_its_default():
    commands = dict(_commands(build_parser()))
    assert {"vae train", "vae score", "vae serve", "vae schedule", "vae models promote"
            } <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{name} {action.option_strings or action.dest}"
            assert action.help and len(action.help) > 10, where
            if action.option_strings:
                assert "(default:" in action.help or "(required)" in action.help or (
                    "default: " in action.help), where
        assert parser.format_help()  # every help text formats (no stray % signs)


def test_train_flags_take_their_help_and_default_from_the_config_fields():
    train = dict(_commands(build_parser()))["vae train"]
    helps = {a.dest: a.help for a in train._actions}
    assert helps["epochs"].endswith("(default: 40)") and "passes over" in helps["epochs"]
    assert helps["hidden"].endswith("(default: 128,128)")
    assert helps["workers"].endswith("(default: 0)") and "local mode" in helps["workers"]
    args = build_parser().parse_args(["train", "--data", "d", "--epochs", "3", "--hidden",
                                      "64,32"])
    assert (args.epochs, args.hidden, args.beta) == (3, [64, 32], None)  # unset: the file's


def test_batch_jobs_are_built_by_keywords_only():
    score = ScoreJob(model="models:/m@champion", output="out/s", input="in/", top_k=2)
    assert (score.action, score.verb, score.top_k, score.iwae_samples) == (
        "score", "scored", 2, None)
    with pytest.raises(TypeError):
        ScoreJob("models:/m@champion", "out/s")  # positional: refused
    assert isinstance(job_for("embed", model="m", output="o", input="i", return_std=True),
                      EmbedJob)
    generate = job_for("generate", model="m", output="o", n=10, conditions={"income": ">50K"})
    assert isinstance(generate, GenerateJob) and generate.input is None
    assert generate.to_dict()["action"] == "generate"
    assert set(JOBS) == {"embed", "score", "generate"}
    with pytest.raises(ValueError, match="unknown batch action 'predict'"):
        job_for("predict", model="m", output="o")
    with pytest.raises(TypeError):
        job_for("embed", model="m", output="o", top_k=3)  # a score field on an embed job


def test_generate_checks_its_conditions_before_any_ray_work(adult_cvae):
    job = GenerateJob(model="m", output="o", n=5, conditions={"colour": "red"})
    with pytest.raises(ValueError, match="'colour': it is not a column of this model"):
        job.validate(adult_cvae, None)
    with pytest.raises(ValueError, match="'old' is not a int64"):
        GenerateJob(model="m", output="o", n=5, conditions={"age": "old"}).validate(
            adult_cvae, None)
    with pytest.raises(ValueError, match="not both"):
        GenerateJob(model="m", output="o", conditions={"income": ">50K"}).validate(adult_cvae, 9)
    with pytest.raises(ValueError, match="--n ≥ 1"):
        GenerateJob(model="m", output="o").validate(adult_cvae, None)
    assert GenerateJob(model="m", output="o", n=7, conditions={"income": ">50K"}).validate(
        adult_cvae, None) == 7
    with pytest.raises(ValueError, match="needs --input"):
        ScoreJob(model="m", output="o").validate(adult_cvae, None)


def test_epoch_line_reads_the_reported_metrics():
    line = epoch_line({"epoch": 3, "epochs": 40, "train_loss": 17.54, "train_kl": 6.6,
                       "val_elbo": -21.5, "rows_per_second": 17260.0, "best": True})
    assert line.split() == ["epoch", "3/40", "loss", "17.540", "KL", "6.60", "val", "ELBO",
                            "-21.500", "17260", "rows/s", "*"]
    assert "nan" in epoch_line({"epoch": 1, "train_loss": 1.0, "train_kl": 0.1}, epochs=2)


def test_captured_stderr_lands_in_the_file_attach_names(tmp_path, capsys):
    logs.capture()
    try:
        os.write(2, b"before the place is known\n")
        assert logs.attach(tmp_path / "job.log") == tmp_path / "job.log"
        os.write(2, b"after\n")
        print("\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started")
        print("our line", flush=True)
        assert logs.attach(tmp_path / "other.log") == tmp_path / "job.log"  # first one wins
    finally:
        logs.release()
    out, err = capsys.readouterr()
    assert out == "our line\n" and "(raylet)" in err  # Ray's stdout lines go to stderr
    assert (tmp_path / "job.log").read_text() == "before the place is known\nafter\n"
    assert not (tmp_path / "other.log").exists() and not logs.capturing()
    assert logs.attach(tmp_path / "x.log") is None and not (tmp_path / "x.log").exists()
    assert logs.beside("out/scores") == Path("out/scores.log")
    assert str(logs.beside("s3://b/scores/")).startswith("logs/scores-")


@pytest.mark.integration
def test_a_batch_job_prints_two_lines_and_no_ray_logs(adult_cvae, tmp_path):
    """`vae generate` starts a local Ray: stdout holds the start line (naming the log file)
    and the summary; Ray's INFO lines are in that file; stderr is empty."""
    model = adult_cvae.save(tmp_path / "model")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VAE_VERBOSE")}
    out = subprocess.run([VAE, "generate", "--model", str(model), "--n", "500", "--output",
                          str(tmp_path / "g")], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("generated 500 rows in "), lines
    assert f"logs: {tmp_path / 'g.log'}" in lines[0]
    assert out.stderr == "" and "INFO" not in out.stdout
    assert "INFO" in (tmp_path / "g.log").read_text()  # Ray's own lines, kept


def test_evaluate_writes_its_report_and_names_bad_input_in_one_line(adult_cvae, adult_test,
                                                                    tmp_path, capsys):
    import pyarrow.parquet as pq

    model = str(adult_cvae.save(tmp_path / "m"))
    real, empty, narrow = (tmp_path / f"{n}.parquet" for n in ("real", "empty", "narrow"))
    pq.write_table(adult_test.slice(0, 600), real)
    pq.write_table(adult_test.slice(0, 0), empty)
    pq.write_table(adult_test.slice(0, 50).drop(["age"]), narrow)
    out_dir = tmp_path / "report"
    base = ["evaluate", "--model", model, "--real", str(real)]
    assert main([*base, "--n", "400", "--target", "income", "--output", str(out_dir)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "detection ROC-AUC" in line and "TSTR" in line and str(out_dir) in line
    assert (out_dir / "report.html").is_file() and (out_dir / "report.json").is_file()
    for extra, words in ((["--target", "salary"], "target 'salary' is not a modelled column"),
                         (["--synthetic", str(narrow)], "column 'age' is missing"),
                         (["--synthetic", str(empty)], "holds no rows"),
                         (["--holdout", str(tmp_path / "nope")], "no such file or folder"),
                         (["--synthetic", str(real), "--n", "5"], "not both")):
        assert main([*base, *extra, "--output", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (extra, err)


def test_condition_flags_read_values_sets_and_bounds():
    flags = ["age>=30", "age<40", "workclass=Private", "workclass=State-gov", "income=>50K",
             "sex=Female"]
    assert condition_flags(flags) == {"age": {">=": "30", "<": "40"},
                                      "workclass": ["Private", "State-gov"],
                                      "income": ">50K", "sex": "Female"}
    assert condition_flags(["age >= 30", "age < 40"]) == {"age": {">=": "30", "<": "40"}}
    for bad in (["age"], ["=30"], ["age>="], ["age=30", "age<40"], ["age>30", "age>40"]):
        with pytest.raises(ValueError, match="--condition"):
            condition_flags(bad)
