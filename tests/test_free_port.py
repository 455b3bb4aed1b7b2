"""``free_port`` hands out listening ports a client connection cannot take first."""

from __future__ import annotations

import socket

import pytest

from driftline.local import broker
from driftline.local.broker import free_port


def test_ports_are_below_the_ephemeral_range_bindable_and_never_repeated() -> None:
    start = broker._ephemeral_start()
    if start is None:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here")
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(broker._LISTEN_PORTS_FROM <= p < start for p in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_a_listening_port_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        # Make the taken port the only candidate: a range of exactly one port plus the floor.
        monkeypatch.setattr(broker, "_LISTEN_PORTS_FROM", taken)
        monkeypatch.setattr(broker, "_ephemeral_start", lambda: taken + 1000)
        monkeypatch.setattr(broker.random, "Random", lambda _seed: _Fixed(taken))
        assert free_port() != taken


class _Fixed:
    def __init__(self, port: int) -> None:
        self.port = port

    def randrange(self, _low: int, _high: int) -> int:
        return self.port
