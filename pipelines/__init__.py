"""Beam jobs and command-line tools of CPlaNet (see the README); each module's docstring says how to run it."""

# Before any job imports Beam or TensorFlow: quiet native logs, quiet Beam logs, fast --help.
from schemas.startup import prepare_process

prepare_process(__name__)
