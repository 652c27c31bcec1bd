# seqw.py FILE PATTERN BS DELAY: write PATTERN to FILE from offset 0, one
# O_DIRECT write of BS bytes at a time, DELAY seconds apart; stop at the
# first error.  Prints "acked BYTES err ERRNAME|none" (test-load).
import mmap
import os
import sys
import time

from common import errname

path, pat, bs, delay = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                        float(sys.argv[4]))
with open(pat, "rb") as f:
    data = f.read()
buf = mmap.mmap(-1, bs)
fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
done, err = 0, "none"
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
