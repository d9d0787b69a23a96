"""Interleaved steps for `ferrolab bench` peers.

With FERROLAB_LOCKSTEP=1 a peer waits for a line on stdin before each step and reports the
step's time on stdout afterwards, so that the two engines' steps alternate.
"""
import os
import sys

LOCKSTEP = os.environ.get("FERROLAB_LOCKSTEP") == "1"


def wait():
    """Blocks until `ferrolab bench` lets this step start (no-op without lockstep)."""
    if LOCKSTEP and not sys.stdin.readline():
        # the driver has gone (stopped with Ctrl-C): so does this peer
        sys.exit(3)


def report(ms):
    """Tells `ferrolab bench` how long the step took (no-op without lockstep)."""
    if LOCKSTEP:
        print(f"lockstep_ms={ms:.3f}", flush=True)
