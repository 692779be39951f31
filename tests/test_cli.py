"""The `vae` command: the demo end to end (short), and one readable line on failure."""

from pipelines.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--library-only", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    for step in ("1. fit", "2. saved", "3. scored", "4. five synthetic rows", "5. embedded"):
        assert step in out
    assert (tmp_path / "m" / "model.json").is_file() and (tmp_path / "m" / "weights.pt").is_file()


def test_errors_print_one_line_and_exit_non_zero(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["demo", "--epochs", "1", "--library-only", "--out", str(blocker / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae: error:") and "a-file" in err[0]
