"""fednas.heap: freed memory kept for reuse, so a new tensor does not fault its pages in again."""

import os
import subprocess
import sys

import pytest

from fednas import heap

# Ten times: six 27 MB buffers (the inversion's flat [32, P] ones) alive at once, then all freed, as in one
# evaluation; prints the minor page faults of the last eight rounds (the first two fill the heap).
CHURN = """
import resource, torch
from fednas.heap import retain_freed_memory, retained
assert retain_freed_memory() == retained()
print(retained())
base = torch.ones(32, 208962)
for round in range(10):
    if round == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [base * float(i) for i in range(6)]
    del buffers
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn(setting: str, **malloc: str) -> tuple[bool, int]:
    env = {**os.environ, heap.ENV: setting, **malloc}
    out = subprocess.run([sys.executable, "-c", CHURN], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_retained_heap_stops_the_page_faults_of_every_new_buffer():
    applied, retained = _churn("1")
    if not applied:
        pytest.skip("mallopt is not available (not glibc): the heap is left as it is")
    # glibc's starting threshold, before it adapts to the first large block freed (whether and when it adapts
    # depends on what the process freed before: it varies from run to run)
    off, released = _churn("0", MALLOC_MMAP_THRESHOLD_=str(128 << 10))
    assert not off
    buffers = 8 * 6 * (32 * 208962 * 4 // 4096)     # pages of the last eight rounds' buffers
    assert released > 0.9 * buffers                  # every new buffer faulted in again
    assert retained < 0.25 * buffers                 # retained: reused
