"""An assembly worker: ``python -m proxy.assembly_worker``, started by ``AssemblyPool``.

Reads length-prefixed pickled batches of packed recordings on stdin, writes each batch's replies
and notes back on stdout, and exits at the end of its input (its parent closed the pipe or died).
It imports the fold and nothing heavier: it is a second process on a small machine.
"""

from __future__ import annotations

import pickle
import sys

from proxy.assembly_pool import assemble_packed, read_frame, write_frame


def main() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries frames only
    read = sys.stdin.buffer.read
    while (frame := read_frame(read)) is not None:
        out.write(write_frame(pickle.dumps(assemble_packed(pickle.loads(frame)), protocol=5)))
        out.flush()


if __name__ == "__main__":
    main()
