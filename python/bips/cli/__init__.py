# SPDX-License-Identifier: Apache-2.0
"""bips: look at the shared-memory frame pools on this host, tap them, and measure them.

  bips list [--json]                 every pool: producer, consumers, rates, drops, owner
  bips info NAME [--json]            one pool's settings and a row per consumer slot
  bips top [--interval S]            live view of every pool (q or Ctrl-C quits)
  bips tap NAME [--every-second]     attach as a consumer and print a line per frame
  bips snapshot NAME out.png         save the next frame as an image (needs Pillow)
  bips clean [--dry-run] [NAME ...]  remove pools whose processes are all dead
  bips bench [--quick] [--json]      hand-off rate and wake-up latency on this machine
  bips demo                          a producer and three consumers on a test pattern

Statistics are read from the shared segments without attaching and without locks: they work
for any pool you can read, whoever made it. Errors are one line on stderr and exit status 1.

The JSON of ``list --json`` and ``info --json`` is described in bips.cli.format.JSON_SCHEMA
(and by ``bips list --help``).

One module per command (list_cmd, info, top, tap, snapshot, clean, bench, demo), each with an
``add_parser(sub)`` that declares its arguments and a ``run(args)``; app holds the parser and
main(), errors the one-line error reporting, options the argument types the commands share,
format the units and JSON of pools, image the frame -> image conversion of snapshot.
Commands import what they need (numpy, rich, Pillow) only when they run.
"""

from bips.cli.app import main

__all__ = ["main"]
