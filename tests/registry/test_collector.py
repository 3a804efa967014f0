"""``registry.core.collector.paused``: the cyclic collector off inside, and as it was after."""

from __future__ import annotations

import gc

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
