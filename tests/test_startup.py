"""Start-up of every command (schemas.startup): --help without Beam/TensorFlow, quiet native and Beam logs.

The speed check is a ratio measured in this test run, not a timeout: each command's ``--help`` must finish in
under a quarter of the time of a bare ``python -c "import tensorflow"``.
"""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHON = sys.executable
NATIVE_NOISE = ("cudart_stub", "Could not find cuda drivers", "absl::InitializeLog", "cpu_feature_guard",
                "failed call to cuInit")


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the project's own default is under test
    return env


def beam_jobs() -> list[str]:
    """Every module under pipelines/ that imports Beam (found from the sources, so new jobs are covered)."""
    jobs = []
    for path in sorted((ROOT / "pipelines").glob("*.py")):
        text = path.read_text()
        if "import apache_beam" in text and '__name__ == "__main__"' in text:
            jobs.append(f"pipelines.{path.stem}")
    return jobs


COMMANDS = ["trainer.train", "trainer.export"] + beam_jobs()


def _timed(args, **env) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run([PYTHON, *args], cwd="/", env=_env(**env), capture_output=True, text=True, timeout=900)
    return time.perf_counter() - started, done


@pytest.fixture(scope="module")
def quick_helps() -> dict[str, tuple[float, subprocess.CompletedProcess]]:
    return {module: _timed(["-m", module, "--help"]) for module in COMMANDS}


REAL_HELP_SCRIPT = r"""
import contextlib, importlib.util, io, runpy, sys
for module in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [importlib.util.find_spec(module).origin, "--help"]
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(module, run_name="__main__")
        except SystemExit:
            pass
    print(f"=== {module}\n{out.getvalue()}", end="")
import tensorflow as tf
print("=== tf"); print(int(tf.constant(1) + 1))
"""


@pytest.fixture(scope="module")
def real_helps() -> tuple[dict[str, str], str]:
    """Help texts printed by the modules loaded for real (Beam and TensorFlow imported), and that stderr."""
    _, done = _timed(["-c", REAL_HELP_SCRIPT, *COMMANDS])
    assert done.returncode == 0, done.stderr[-2000:]
    texts, current = {}, None
    for line in done.stdout.splitlines(keepends=True):
        if line.startswith("=== "):
            current = line[4:].strip()
            texts[current] = ""
        elif current:
            texts[current] += line
    return texts, done.stderr


def test_beam_jobs_are_found():
    assert {"pipelines.bucket_cells", "pipelines.make_examples", "pipelines.batch_predict"} <= set(beam_jobs())


def test_help_answers_in_under_a_quarter_of_a_tensorflow_import(quick_helps):
    tf_seconds, done = _timed(["-c", "import tensorflow"])
    assert done.returncode == 0, done.stderr[-2000:]
    for module, (seconds, result) in quick_helps.items():
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
        assert result.stdout.startswith("usage:"), module
        assert "Traceback" not in result.stdout + result.stderr, module
        assert seconds < tf_seconds / 4, f"{module} --help took {seconds:.1f} s; import tensorflow {tf_seconds:.1f} s"


def test_quick_help_is_the_real_help(quick_helps, real_helps):
    texts, _ = real_helps
    for module, (_, result) in quick_helps.items():
        assert texts[module].startswith("usage:"), module
        assert result.stdout == texts[module], module


@pytest.mark.skipif(any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl")), reason="GPU machine")
def test_tensorflow_prints_no_banner_or_cuinit_error_without_a_gpu(real_helps):
    texts, stderr = real_helps
    assert texts["tf"].strip() == "2"
    for noise in NATIVE_NOISE:
        assert noise not in stderr


def test_the_stderr_filter_drops_known_noise_and_keeps_the_rest(capfd):
    from schemas.startup import filtered_stderr_fd

    with filtered_stderr_fd():
        os.write(2, b"I0000 00:00 123 cudart_stub.cc:31] Could not find cuda drivers on your machine\n")
        os.write(2, b"a real problem: disk full\n")
    captured = capfd.readouterr()
    assert captured.err == "a real problem: disk full\n"


def test_beam_type_hint_chatter_is_off_and_runner_links_stay():
    import pipelines  # noqa: F401  (runs the start-up)

    spam = logging.getLogger("apache_beam.typehints.native_type_compatibility")
    assert not spam.isEnabledFor(logging.INFO) and spam.isEnabledFor(logging.WARNING)
    assert logging.getLogger("apache_beam.runners.dataflow.dataflow_runner").isEnabledFor(logging.INFO)


FAKE_JOB = '''
import os
import sys

if os.environ.get("CPLANET_REAL_HELP"):
    print("usage: the real help")
    raise SystemExit(0)
import apache_beam as beam
from schemas.cli import run_command

# As every command's __main__ does: errors become one line and a status. Under the stand-ins this fails
# (a stand-in is no number); the old quick path then printed that error line and exited 1.
sys.exit(run_command(lambda argv: int(beam.DEFAULT_BATCH), prog="fakejob"))
'''


def test_quick_help_that_fails_under_stand_ins_answers_with_the_real_module(tmp_path):
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(FAKE_JOB)
    script = ("import sys; from schemas import startup; "
              "sys.orig_argv = [sys.executable, '-m', 'fakepkg.job', '--help']; "
              "startup.answer_help_quickly('fakepkg'); print('not reached')")
    done = subprocess.run([PYTHON, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**_env(), "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert (done.returncode, done.stdout, done.stderr) == (0, "usage: the real help\n", "")
