"""Benchmarks of CPlaNet (``python -m benchmarks.run_all``, ``make bench``); each module says what it measures.

Before any benchmark imports Beam or TensorFlow: the project's start-up quieting (schemas.startup), so the
benchmark processes and the jobs they start print no cuInit/CUDA noise lines and no Beam INFO chatter.
"""

from schemas.startup import quiet_beam_logs, quiet_native_logs

quiet_native_logs()
quiet_beam_logs()
