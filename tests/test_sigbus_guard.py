# SPDX-License-Identifier: Apache-2.0
"""A pool file shrunk under a live process (cpp/src/posix/sigbus.hpp): anyone who can open it for
writing can ftruncate() it, and touching the mapping would then raise SIGBUS. The process must
survive, with Python's faulthandler enabled as pytest and ``python -X faulthandler`` enable it
(faulthandler hooks SIGBUS too), while a SIGBUS outside bips's mappings still reaches
faulthandler and kills as before.

Both run in children (PYTHONFAULTHANDLER=1 is ``-X faulthandler``): a regression would kill the
process, which must not be the test session."""

from __future__ import annotations

import os
import signal

from helpers import child, pool_path, read_message, reap

FAULTHANDLER = {"PYTHONFAULTHANDLER": "1"}

TRUNCATE_UNDER_NUMPY = """
import faulthandler
name, path = sys.argv[1], sys.argv[2]
prod = bips.Producer(name, capacity=2, shape=(3, 4096), dtype="uint8")
buf = prod.acquire(timeout=1)
a = buf.numpy()
a[:] = 7
fd = os.open(path, os.O_RDWR)
os.ftruncate(fd, 0)
os.close(fd)
a[:] = 1  # SIGBUS without the guard
emit(faulthandler=faulthandler.is_enabled(), size=os.stat(path).st_size, ones=int(a.sum()),
     cells=int(a.size))
try:
    prod.publish(buf)
    outcome = "published"
except bips.Error as e:
    outcome = f"{type(e).__name__}: {e}"
emit(outcome=outcome)
del a, buf
prod.close()
emit(closed=True)
"""


def test_writing_a_truncated_pool_through_numpy_does_not_kill(pool_name: str) -> None:
    with child(TRUNCATE_UNDER_NUMPY, pool_name, pool_path(pool_name), env=FAULTHANDLER) as proc:
        written = read_message(proc)
        assert written["faulthandler"] is True
        assert written["size"] == 0
        # The writes went to the private zero pages that replaced the lost mapping.
        assert written["ones"] == written["cells"]
        # Whether publish() noticed is producer.cpp's business; it must merely not crash.
        assert "outcome" in read_message(proc)
        assert read_message(proc) == {"closed": True}
        rc, _, err = reap(proc)
    assert rc == 0, err
    assert not os.path.exists(pool_path(pool_name))


FOREIGN_SIGBUS = """
import faulthandler, mmap, resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the death is expected: no core file
name, path = sys.argv[1], sys.argv[2]
prod = bips.Producer(name, capacity=1, buffer_size=4096)  # installs bips's SIGBUS handler
prod.close()
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.unlink(path)
os.ftruncate(fd, 2 * mmap.PAGESIZE)
m = mmap.mmap(fd, 2 * mmap.PAGESIZE)
os.ftruncate(fd, 0)
emit(faulthandler=faulthandler.is_enabled())
m[mmap.PAGESIZE] = 1  # not a bips mapping: SIGBUS, reported by faulthandler
emit(survived=True)
"""


def test_a_foreign_sigbus_still_reaches_faulthandler(pool_name: str) -> None:
    foreign = pool_path(pool_name) + ".foreign"
    with child(FOREIGN_SIGBUS, pool_name, foreign, env=FAULTHANDLER) as proc:
        assert read_message(proc) == {"faulthandler": True}
        rc, out, err = reap(proc)
    assert rc == -signal.SIGBUS, (out, err)
    assert "Fatal Python error: Bus error" in err
    assert "survived" not in out
