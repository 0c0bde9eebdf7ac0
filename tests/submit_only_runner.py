"""A runner that behaves like a Flex Template launcher: it submits the job and returns at once.

``--runner=tests.submit_only_runner.SubmitOnlyRunner``: ``run_pipeline`` starts the job on Beam's FnApiRunner in a
background thread (the job "runs elsewhere") and returns a result that is still RUNNING, whose metrics cannot be
queried ("Job id is unknown", as a Dataflow template launch says) and whose ``wait_until_finish`` returns
immediately. Tests join ``SubmitOnlyRunner.jobs`` to learn how the job itself ended.
"""

from __future__ import annotations

import threading

from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState


class _Submitted(PipelineResult):
    def __init__(self):
        super().__init__(PipelineState.RUNNING)
        self.error: BaseException | None = None
        self.done = threading.Event()

    def wait_until_finish(self, duration=None):
        return self._state  # a launcher does not wait

    def metrics(self):
        raise RuntimeError("Can not query metrics. Job id is unknown.")


class SubmitOnlyRunner(PipelineRunner):
    jobs: list[tuple[threading.Thread, _Submitted]] = []

    def run_pipeline(self, pipeline, options):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        result = _Submitted()

        def job():
            try:
                FnApiRunner().run_pipeline(pipeline, options).wait_until_finish()
            except BaseException as error:  # noqa: BLE001 - recorded for the test
                result.error = error
            finally:
                result.done.set()

        thread = threading.Thread(target=job, daemon=True)
        thread.start()
        SubmitOnlyRunner.jobs.append((thread, result))
        return result
