"""Process start-up of every command, run by the ``pipelines`` and ``trainer`` packages before anything heavy.

:func:`prepare_process` (called from both packages' ``__init__``) does three things, in this one place:

- **Quiet native logs.** ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (TensorFlow's C++ INFO/WARNING lines off), and to
  3 on machines without an NVIDIA device, where TensorFlow's only start-up ERROR line is ``failed call to
  cuInit`` (a real failure still raises a Python exception with its message). A variable already set by
  the user wins. The lines TensorFlow's shared libraries print straight to the stderr file descriptor while
  it is imported (``Could not find cuda drivers``, the CPU-instructions banner, absl's pre-init warning) obey
  no setting, so the import of ``tensorflow`` runs with that descriptor filtered: those known lines are
  dropped, every other line is passed on.
- **Quiet Beam logs.** Beam's INFO chatter (``Converting string literal type hint to Any`` per type hint, file
  renames, cache sizes) is raised to WARNING; the Dataflow and portable runners keep INFO (job links, states).
  RunInference's per-batch "Resource module is not available" warning is dropped.
- **Fast ``--help``.** ``python -m pipelines.<job> --help`` (or ``trainer.<module>``) builds the job's parser
  with Beam, TensorFlow and Keras replaced by inert stand-ins, so help answers in about a second instead of
  the tens of seconds those imports take. Only ``-h``/``--help`` on the command line switches this on. Only a
  stand-in run that ends as help does (status 0, a ``usage:`` text) is shown; otherwise the command restarts
  itself with ``CPLANET_REAL_HELP=1`` (which turns the trick off) and answers with the real modules.
  ``tests/test_startup.py`` checks that every command's quick help equals its real help.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import types

HEAVY_PACKAGES = ("apache_beam", "tensorflow", "keras", "tf_keras", "tensorflow_hub")
_NATIVE_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|Could not find cuda drivers|"
    r"cpu_feature_guard\.cc|To enable the following instructions: |Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered|TF-TRT Warning|failed call to cuInit"
)
_BEAM_KEEP_INFO = ("apache_beam.runners.dataflow", "apache_beam.runners.portability.portable_runner")
_prepared = False


def prepare_process(package: str) -> None:
    """Everything above, once per process; ``package`` is the caller's package (``pipelines``/``trainer``)."""
    global _prepared
    if not _prepared:
        _prepared = True
        quiet_native_logs()
        quiet_beam_logs()
    answer_help_quickly(package)


# --------------------------------------------------------------------------------------------- native logs


def has_nvidia_device() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia/version"))


def quiet_native_logs() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_nvidia_device() else "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


@contextlib.contextmanager
def filtered_stderr_fd(noise: re.Pattern = _NATIVE_NOISE):
    """Route file descriptor 2 through a temporary file; afterwards pass on every line but known noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no real stderr descriptor (embedded, closed)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _FilteredLoader(importlib.abc.Loader):
    """Runs the wrapped loader with the stderr descriptor filtered; everything else is delegated."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr_fd():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual, once, and imports it with native start-up noise filtered."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


# ----------------------------------------------------------------------------------------------- Beam logs


def _not_beam_noise(record: logging.LogRecord) -> bool:
    # RunInference warns through the root logger, per batch, when it cannot read its own memory use.
    return not str(record.msg).startswith("Resource module is not available")


def quiet_beam_logs() -> None:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    for name in _BEAM_KEEP_INFO:
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger().addFilter(_not_beam_noise)


# ------------------------------------------------------------------------------------------------ fast help


class _Stub:
    """Any attribute, call, item, operator or base class of a heavy package while only help is answered."""

    def __init__(self, name: str = "stub"):
        self._name = name

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        return _Stub(f"{self._name}()")

    def __getitem__(self, key):
        return _Stub(f"{self._name}[]")

    def __mro_entries__(self, bases):
        # A fresh empty class per use, so a class with two stand-in bases still has a valid MRO.
        return (type(self._name.rsplit(".", 1)[-1], (), {}),)

    def __or__(self, other):
        return _Stub(self._name)

    __ror__ = __rshift__ = __rrshift__ = __or__

    def __iter__(self):
        return iter(())

    def __repr__(self):
        return f"<stand-in {self._name}>"


class _StubModule(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__path__ = []  # a package, so its submodules import too

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in HEAVY_PACKAGES:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        pass


def _help_target(package: str) -> str | None:
    """The module of ``python -m <package>.<module> ... --help``, else None."""
    argv = list(getattr(sys, "orig_argv", []))
    if "-m" not in argv or os.environ.get("CPLANET_REAL_HELP"):
        return None
    at = argv.index("-m")
    if at + 1 >= len(argv):
        return None
    target, rest = argv[at + 1], argv[at + 2 :]
    if not target.startswith(package + ".") or not ({"-h", "--help"} & set(rest)):
        return None
    return target


def answer_help_quickly(package: str) -> None:
    """Print ``--help`` of the module being run with heavy packages stood in for, and exit; or return.

    The stand-in run is trusted only when it ends as argparse's help does: status 0 with a ``usage:`` text.
    Its output is held back until then. Anything else (an error under the stand-ins, a usage error, a module
    that does not exit) restarts this very command with ``CPLANET_REAL_HELP=1``, so the answer comes from the
    module loaded for real in a fresh process: nothing imported next to the stand-ins is reused, and a
    launcher's error line produced by a stand-in is never shown.
    """
    import io
    import runpy

    target = _help_target(package)
    if target is None or not sys.executable or any(isinstance(f, _StubFinder) for f in sys.meta_path):
        return
    if any(name.split(".", 1)[0] in HEAVY_PACKAGES for name in sys.modules):
        return  # a heavy package is loaded already: nothing to save
    finder = _StubFinder()
    sys.meta_path.insert(0, finder)
    out, err = io.StringIO(), io.StringIO()
    code: object = "did not exit"
    try:
        spec = importlib.util.find_spec(target)
        sys.argv = [spec.origin if spec and spec.origin else target] + sys.argv[1:]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(target, run_name="__main__", alter_sys=False)
    except SystemExit as stop:
        code = stop.code
    except BaseException:  # noqa: BLE001 - any failure under the stand-ins: ask the real module instead
        code = "failed"
    if code in (0, None) and out.getvalue().startswith("usage:"):
        sys.stdout.write(out.getvalue())
        sys.stderr.write(err.getvalue())
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(0)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), {**os.environ, "CPLANET_REAL_HELP": "1"})
