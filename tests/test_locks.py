"""Per-unit locks: a second holder refuses with a message; a dead holder holds nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from lite_cpt.run.locks import UnitLocked, lock_holder, unit_lock


def _hold_in_child(unit_dir):
    code = textwrap.dedent(f"""
        import sys, time
        from lite_cpt.run.locks import unit_lock
        with unit_lock({str(unit_dir)!r}):
            print("held", flush=True)
            time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_second_holder_in_the_same_process_is_refused(tmp_path):
    unit = tmp_path / "run" / "rft"
    with unit_lock(unit):
        assert lock_holder(unit)["pid"] == os.getpid()
        with pytest.raises(UnitLocked, match=str(unit)):
            with unit_lock(unit):
                pass
    with unit_lock(unit):  # released on exit
        pass


def test_other_process_is_refused_and_its_death_releases_the_lock(tmp_path):
    unit = tmp_path / "run" / "sft"
    child = _hold_in_child(unit)
    try:
        with pytest.raises(UnitLocked) as refused:
            with unit_lock(unit):
                pass
        assert f"process {child.pid}" in str(refused.value)
        assert re.search(r"\(since \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}: ", str(refused.value)), str(refused.value)
        assert "run the same command again" in str(refused.value)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # the lock file stays behind, the lock does not
    assert (unit / ".lock").exists()
    with unit_lock(unit):
        pass


def test_different_units_of_one_run_lock_independently(tmp_path):
    with unit_lock(tmp_path / "run" / "sft"), unit_lock(tmp_path / "run" / "rft"):
        pass


def test_waiting_lock_lets_one_process_build_and_the_others_reuse(tmp_path):
    import threading
    import time

    from lite_cpt.run.locks import waiting_lock

    built, order = tmp_path / "built", []

    def builder():
        with waiting_lock(tmp_path / "x.lock"):
            order.append("builder has the lock")
            time.sleep(0.3)
            built.write_text("done")

    thread = threading.Thread(target=builder)
    thread.start()
    while not order:
        time.sleep(0.01)
    with waiting_lock(tmp_path / "x.lock"):  # blocks until the builder has finished
        order.append("waiter has the lock")
        assert built.read_text() == "done"
    thread.join()
    assert order == ["builder has the lock", "waiter has the lock"]
