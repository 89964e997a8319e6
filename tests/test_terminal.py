"""Console and results (serl_ext/loop/logging.py): each process's console copied into its run
folder with progress-bar redraws collapsed, --quiet, and the result table at the end of a run."""

import io
import sys

from tqdm import tqdm

from serl_ext.loop.logging import ProcessLog, _LogCopy, format_table, result_table, wilson_interval


def test_log_copy_keeps_what_the_terminal_finally_shows():
    terminal, log = io.StringIO(), io.StringIO()
    stream = _LogCopy(terminal, log)
    stream.write("\rbar 1%")
    stream.write("\rbar 2%\r      \r[actor] eval at 100 env steps\n")
    for i in range(1000):
        stream.write(f"\rbar {i}%")
    assert len(stream._pending) < 20  # redraws are not accumulated
    stream.write("\n")
    stream.close_line()
    assert log.getvalue() == "[actor] eval at 100 env steps\nbar 999%\n"
    assert terminal.getvalue().startswith("\rbar 1%\rbar 2%")  # the terminal gets everything


def test_process_log_copies_stdout_stderr_and_a_tqdm_bar(tmp_path, capsys):
    path = tmp_path / "logs" / "actor.log"
    with ProcessLog(str(path)):
        print("hello")
        bar = tqdm(total=3, desc="actor env steps", file=sys.stderr)
        for _ in range(3):
            bar.update(1)
        tqdm.write("[actor] a message")
        bar.close()
    text = path.read_text()
    assert "hello\n" in text and "[actor] a message\n" in text
    assert text.count("actor env steps") <= 3 and "3/3" in text
    assert "hello" in capsys.readouterr().out  # the terminal still shows it


def test_quiet_sends_only_fatal_lines_to_the_terminal(tmp_path, capfd):
    path = tmp_path / "learner.log"
    with ProcessLog(str(path), quiet=True) as plog:
        print("[learner] loaded 10 demo transitions")
        sys.stderr.write("a warning\n")
        plog.fatal("[learner] failed: boom")
    out, err = capfd.readouterr()
    assert "loaded" not in out + err and "a warning" not in out + err
    assert "[learner] failed: boom" in err
    text = path.read_text()
    assert "loaded 10 demo" in text and "a warning" in text and "failed: boom" in text


def test_result_table():
    summary = {"task": "pick-place", "algorithm": "hil_serl", "env_steps": 300, "wall_clock_s": 90.0,
               "eval_success_rate": 0.5, "eval_episodes": 2, "intervention_rate": 0.125,
               "eval_system_success_rate": None}
    table = result_table(summary, "runs/pick-place/hil_serl/seed0")
    header, rule, row, folder = table.splitlines()
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "task", "method", "env steps", "minutes", "final SR", "IR"]
    lo, hi = wilson_interval(1, 2)
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "pick-place", "hil_serl", "300", "1.5", f"0.50 (1/2, 95% CI {lo:.2f}-{hi:.2f})", "0.125"]
    assert folder == "run folder: runs/pick-place/hil_serl/seed0"
    assert set(rule) <= {"|", "-"}
    with_gate = result_table(dict(summary, eval_system_success_rate=1.0, eval_success_rate=None), "r")
    assert "SR with gate" in with_gate and "| -" in with_gate
    assert format_table(["a"], [[None]]).splitlines()[-1] == "| - |"
    assert wilson_interval(0, 0) == (0.0, 1.0)
