"""Simulators of the upstream APIs Parley talks to, and a loopback server to run them (or
Parley itself) in tests and `parley demo`. They depend on nothing else in Parley."""

from parley.testing.faults import Fault, Recorded
from parley.testing.graph_sim import GraphSimulator
from parley.testing.openai_sim import OpenAISimulator, SimTurn, echo_reply
from parley.testing.server import ServerThread, wait_until_ready

__all__ = [
    "Fault",
    "GraphSimulator",
    "OpenAISimulator",
    "Recorded",
    "ServerThread",
    "SimTurn",
    "echo_reply",
    "wait_until_ready",
]
