"""``registry.core.collector.paused``: the cyclic collector off inside, and as it was after."""

from __future__ import annotations

import gc
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
