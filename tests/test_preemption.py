"""Signal handling: a first signal in training is deferred, outside it stops at once, a second
signal ends the process immediately."""

from __future__ import annotations

import os
import signal

import pytest

from lite_cpt.run.preemption import Preempted, preemption_handlers, requested_by, stop_deferred, stop_requested


def test_signal_during_training_only_requests_a_stop():
    before = signal.getsignal(signal.SIGTERM)
    with preemption_handlers():
        with stop_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop_requested() and requested_by() == "SIGTERM"
    assert not stop_requested()  # handlers and state restored
    assert signal.getsignal(signal.SIGTERM) == before


def test_signal_outside_training_raises_preempted():
    # a process started in the background (as CI starts it) inherits SIGINT ignored: the
    # handlers must come back to whatever was there before, not to Python's default
    before = signal.getsignal(signal.SIGINT)
    with preemption_handlers():
        with pytest.raises(Preempted, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == before


def test_second_signal_exits_at_once():
    pid = os.fork()
    if pid == 0:  # child: defer the first signal, the second must end the process
        try:
            with preemption_handlers(), stop_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                os._exit(0)  # not reached
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGTERM


def test_run_command_turns_preempted_into_exit_75_and_the_resume_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import lite_cpt.run.continual
    from lite_cpt.cli import app
    from lite_cpt.run.preemption import PREEMPTED_EXIT_CODE
    from tests.helpers import tiny_recipe, write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path))

    def preempted(*args, **kwargs):
        raise Preempted("SIGTERM outside training")

    monkeypatch.setattr(lite_cpt.run.continual, "run_recipe", preempted)
    monkeypatch.setattr("sys.argv", ["lite-cpt", "run", str(recipe)])
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == PREEMPTED_EXIT_CODE
    assert "SIGTERM outside training" in result.output
    assert f"lite-cpt run {recipe}" in " ".join(result.output.split())


class _Exited(Exception):
    pass


def test_the_second_signal_exits_with_128_plus_its_number(monkeypatch):
    """In process (the forked version above is out of reach of coverage tools): the first
    SIGTERM is deferred, the second exits with 143 through os._exit (no cleanup to wait for)."""
    import lite_cpt.run.preemption as preemption

    class QuietOs:  # the module's os, whose exit is caught and whose messages go nowhere
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            return len(data)

        def _exit(self, code):
            raise _Exited(code)

    monkeypatch.setattr(preemption, "os", QuietOs())
    monkeypatch.setattr(preemption, "_state", preemption._State())
    with stop_deferred():
        preemption._handle(signal.SIGTERM, None)
        assert requested_by() == "SIGTERM"
        with pytest.raises(_Exited) as exited:
            preemption._handle(signal.SIGTERM, None)
    assert exited.value.args == (128 + signal.SIGTERM,)


@pytest.mark.parametrize("argv0, program", [("/venv/bin/lite-cpt", "lite-cpt"), ("/src/lite_cpt/cli.py", "lite-cpt"),
                                            ("/usr/lib/python3/lite_cpt/__main__.py", "lite-cpt"), ("lcpt", "lcpt")])
def test_the_resume_command_is_the_command_that_was_run(monkeypatch, argv0, program):
    from lite_cpt.run.preemption import resume_command

    monkeypatch.setattr("sys.argv", [argv0, "run", "recipes/my run.yaml", "--arm", "rft"])
    assert resume_command() == f"{program} run 'recipes/my run.yaml' --arm rft"
