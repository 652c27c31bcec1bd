# seqw.py FILE PATTERN BS DELAY [START]: write PATTERN to FILE from offset
# START (0; a multiple of BS: where an earlier run stopped), one O_DIRECT
# write of BS bytes at a time, DELAY seconds apart; stop at the first
# error.  Prints "acked BYTES err ERRNAME|none", BYTES counted from offset
# 0 (test-load, test-handover).
import mmap
import os
import sys
import time

from common import errname

path, pat, bs, delay = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                        float(sys.argv[4]))
start = int(sys.argv[5]) if len(sys.argv) > 5 else 0
with open(pat, "rb") as f:
    data = f.read()
buf = mmap.mmap(-1, bs)
fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
done, err = start, "none"
try:
    while done < len(data):
        buf.seek(0)
        buf.write(data[done:done + bs])
        n = os.pwritev(fd, [buf], done)
        if n != bs:
            err = "short"
            break
        done += n
        time.sleep(delay)
except OSError as e:
    err = errname(e)
print("acked %d err %s" % (done, err), flush=True)
try:
    os.close(fd)
except OSError:
    pass
