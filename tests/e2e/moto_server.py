"""Starts moto's server (the ASL engine of these tests) with room for deep recursion.

moto's interpreter evaluates an inline Map's iterations through nested calls, about one more
level per iteration: past roughly 950 iterations it hits Python's default recursion limit
(1,000) and fails the execution with States.Runtime "maximum recursion depth exceeded". The
definition runs up to 2,500 iterations, so the engine's process gets a higher limit and larger
thread stacks; its code is untouched."""

import sys
import threading

sys.setrecursionlimit(1_000_000)
threading.stack_size(1024 * 1024 * 1024)  # virtual: pages are committed only when used

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
