"""``registry.core.collector.paused``: the cyclic collector off inside, and as it was after."""

from __future__ import annotations

import gc
import os
import threading

import pytest

from registry.core import collector


@pytest.fixture(autouse=True)
def _collector_on_after():
    yield
    gc.enable()


def test_the_collector_is_off_inside_and_on_again_after_even_on_an_error():
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector.paused():
        assert not gc.isenabled()
        raise RuntimeError("inside")
    assert gc.isenabled()


def test_a_collector_found_off_is_left_off_and_a_nested_pause_does_not_switch_it_on():
    with collector.paused():
        with collector.paused():
            pass
        assert not gc.isenabled()  # the inner one found it off
    assert gc.isenabled()
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_blocks_of_two_threads_that_overlap_leave_the_collector_as_the_first_found_it():
    # A begins, B begins, A ends (B still inside: off), B ends: on again. Each block on its own switched
    # it on at A's end, under B, and a B that read "off" just before A's end left it off for good.
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def a() -> None:
        with collector.paused():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with collector.paused():
            b_in.set()
            a_out.wait(5)
            seen.append(gc.isenabled())

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [False]  # off while B is inside, though A, which switched it off, had ended
    assert gc.isenabled()


def _in_child(run) -> bytes:
    """Fork; in the child, ``run()``'s bytes go back through a pipe and the child ends."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, run())
        finally:
            os._exit(0)
    return _from_child(pid, read, write)


def _from_child(pid: int, read: int, write: int) -> bytes:
    """In the parent: what child ``pid`` wrote to the pipe, once it has ended."""
    os.close(write)
    os.waitpid(pid, 0)
    got = os.read(read, 64)
    os.close(read)
    return got


def _child_state() -> bytes:
    on = gc.isenabled()
    with collector.paused():
        off = not gc.isenabled()
    return b"%d%d%d" % (on, off, gc.isenabled())


def test_a_child_forked_while_another_thread_pauses_runs_with_the_collector_on():
    # The child has only the forking thread: the other thread's pause never ends there.
    inside, leave = threading.Event(), threading.Event()

    def pausing() -> None:
        with collector.paused():
            inside.set()
            leave.wait(10)

    other = threading.Thread(target=pausing)
    other.start()
    inside.wait(5)
    try:
        assert not gc.isenabled()
        assert _in_child(_child_state) == b"111"
    finally:
        leave.set()
        other.join(10)
    assert gc.isenabled()


def test_a_child_forked_inside_its_own_pause_gets_the_collector_back_when_the_pause_ends():
    read, write = os.pipe()
    with collector.paused():
        pid = os.fork()
        if pid == 0:
            os.write(write, b"%d" % gc.isenabled())  # its own block is still open: off
    if pid == 0:
        try:
            os.write(write, b"%d" % gc.isenabled())  # the block ended: on again
            os.write(write, _child_state())
        finally:
            os._exit(0)
    assert _from_child(pid, read, write) == b"01111"
    assert gc.isenabled()
