"""The `ik` executable: a short-lived process, started and ended the cheap way.

To launch a run `ik` imports Dagster, about 170,000 objects, and exits a few seconds later.
Two costs in that life do no work: the cyclic garbage collector walking those objects again
and again while they are imported (0.15-0.2 s here), and the interpreter tearing every module
down at exit (0.3-0.5 s). So the collector runs less often while `ik` lives, and once a
command has finished (its output flushed, logging shut down, no thread of its own left) the
process ends without the teardown. Tests and library users call `cli.main`, which keeps
Python's defaults. With `INFRAKITCHEN_SERVER` set, the command runs in a fork of a warm
launcher instead (`warm/`), which has paid for the imports already.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading


def run() -> None:
    """Entry point of the `ik` console script."""
    gc.set_threshold(100_000, 50, 100)
    from .warm import SERVER_ENV

    code = None
    if server := os.environ.get(SERVER_ENV):  # a warm launcher (ik serve)
        from .warm.client import run_through_server

        code = run_through_server(server, sys.argv[1:])
    if code is None:
        from .cli import main

        code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(code)  # something still works: let the interpreter wait for it
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to flush
            stream.flush()
    os._exit(code)
