"""The plumbing of the flags2 scripts, which a reader of the book can skip.

The scripts at the top level (flags2_common.py and its three variants,
flags_server.py, flags2_compare.py) read like the book's listings; what they
need beyond that lives here, one concern a module:

- ``codes``: the country codes that have a flag.
- ``options``: checking the command line; usage errors.
- ``failures``: what counts as a bad flag, and the words for each failure.
- ``clients``: the one HTTP client of a run, with room for exactly concur_req
  connections, and each flag's time limit.
- ``interrupts``: what Ctrl-C and SIGTERM need in each variant.
- ``files``: writing a flag atomically, with the mode the umask gives.
- ``servers``: starting and stopping the bundled flags server, and reading
  its /stats pages.
- ``wire``: the bundled server's HTTP/1.1 wire code and the faults it writes.
- ``tables`` and ``charts``: flags2_compare.py's output.
"""
