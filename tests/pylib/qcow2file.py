"""qcow2file.py - read and damage qcow2 images (16-bit refcounts assumed
where refcounts are touched).

  qcow2file.py get IMG FIELD        a header field, decimal
  qcow2file.py get IMG l1entry N    the Nth L1 entry
  qcow2file.py get IMG l2entry N    entry N of the first L2 table
  qcow2file.py dirty IMG            1 if the dirty bit is set (v3), else 0
  qcow2file.py edit IMG FIELD VALUE overwrite a big-endian header field
                                    ("|BITS": OR them in)
  qcow2file.py edit IMG OP ARGS:
    l1entry N VALUE      the Nth L1 entry
    l2entry N VALUE      entry N of the first L2 table
    l2copy N M           entry M of the first L2 table := entry N
    l2reftable N         entry N := the refcount table's cluster, copied
    l1reftable N         L1 entry N := the refcount table's cluster
    l1offset VALUE       the header's L1 table offset (= l1_offset)
    refcount N VALUE     the refcount of cluster N (first block)
    leak                 one more cluster at the end of the file, counted,
                         unused (qemu-img ignores refcounts past the end
                         of the file)
    zeroblocks I J       refcount blocks I..J (table entries) zeroed, as
                         a lazy-refcounts crash leaves them
    bytes OFF HEX        raw bytes
    feature BIT NAME     retarget the feature name table's first entry
    drop-ext TYPE        the header extension of TYPE (hex) becomes the
                         end of the extensions
FIELDS lists the header fields.
"""
import sys

FIELDS = {
    "magic": (0, 4), "version": (4, 4), "backing_offset": (8, 8),
    "backing_size": (16, 4), "cluster_bits": (20, 4), "size": (24, 8),
    "crypt": (32, 4), "l1_size": (36, 4), "l1_offset": (40, 8),
    "reft_offset": (48, 8), "reft_clusters": (56, 4),
    "nb_snapshots": (60, 4), "snapshots_offset": (64, 8),
    "incompat": (72, 8), "compat": (80, 8), "autoclear": (88, 8),
    "refcount_order": (96, 4), "header_length": (100, 4),
    "compression_type": (104, 1),
}
OFFSET_MASK = 0x00fffffffffffe00        # of an L1 or L2 entry
COPIED = 1 << 63
FEATURE_NAME_TABLE = bytes.fromhex("6803f857")
DIRTY = 1                               # incompatible feature bit 0


class Image:
    def __init__(self, path, mode="rb"):
        self.f = open(path, mode)
        self.h = self.f.read(65536)

    def be(self, off, n):
        return int.from_bytes(self.h[off:off + n], "big")

    def field(self, name):
        return self.be(*FIELDS[name])

    def read_be(self, off, n=8):
        self.f.seek(off)
        return int.from_bytes(self.f.read(n), "big")

    def put(self, off, n, v):
        self.f.seek(off)
        self.f.write(int(v).to_bytes(n, "big"))

    def l1_at(self, i):
        return self.field("l1_offset") + 8 * i

    def l2_at(self, i):
        """Where entry i of the first L2 table is."""
        return (self.read_be(self.field("l1_offset")) & OFFSET_MASK) + 8 * i

    def refblock(self, i=0):
        return self.read_be(self.field("reft_offset") + 8 * i)


def cmd_get(img, what, args):
    if what in FIELDS:
        return img.field(what)
    if what == "l1entry":
        return img.read_be(img.l1_at(int(args[0])))
    if what == "l2entry":
        return img.read_be(img.l2_at(int(args[0])))
    sys.exit("qcow2file.py: unknown field " + what)


def cmd_edit(img, op, a):
    if op in FIELDS:
        off, n = FIELDS[op]
        v = (img.be(off, n) | int(a[0][1:], 0) if a[0].startswith("|")
             else int(a[0], 0))
        img.put(off, n, v)
    elif op == "l1entry":
        img.put(img.l1_at(int(a[0])), 8, int(a[1], 0))
    elif op == "l2entry":
        img.put(img.l2_at(int(a[0])), 8, int(a[1], 0))
    elif op == "l2copy":
        e = img.read_be(img.l2_at(int(a[0])))
        img.put(img.l2_at(int(a[1])), 8, e)
    elif op == "l2reftable":
        img.put(img.l2_at(int(a[0])), 8, COPIED | img.field("reft_offset"))
    elif op == "l1reftable":
        img.put(img.l1_at(int(a[0])), 8, COPIED | img.field("reft_offset"))
    elif op == "l1offset":
        img.put(*FIELDS["l1_offset"], int(a[0], 0))
    elif op == "refcount":
        img.put(img.refblock() + 2 * int(a[0]), 2, int(a[1], 0))
    elif op == "leak":
        cs = 1 << img.field("cluster_bits")
        img.f.seek(0, 2)
        c = (img.f.tell() + cs - 1) // cs
        img.f.seek(c * cs)
        img.f.write(bytes(cs))
        img.put(img.refblock() + 2 * c, 2, 1)
    elif op == "zeroblocks":
        cs = 1 << img.field("cluster_bits")
        for i in range(int(a[0]), int(a[1]) + 1):
            rb = img.refblock(i)
            assert rb, "no refcount block %d" % i
            img.f.seek(rb)
            img.f.write(bytes(cs))
    elif op == "bytes":
        img.f.seek(int(a[0], 0))
        img.f.write(bytes.fromhex(a[1]))
    elif op == "feature":
        at = img.h.find(FEATURE_NAME_TABLE)
        assert at > 0, "no feature name table"
        name = a[1].encode()
        img.f.seek(at + 8)
        img.f.write(bytes([0, int(a[0])]) + name + bytes(46 - len(name)))
    elif op == "drop-ext":
        at = img.h.find(bytes.fromhex(a[0]))
        assert at > 0, "no header extension %s" % a[0]
        img.put(at, 4, 0)
    else:
        sys.exit("qcow2file.py: unknown edit " + op)


def main(a):
    if len(a) >= 4 and a[1] == "get":
        print(cmd_get(Image(a[2]), a[3], a[4:]))
    elif len(a) == 3 and a[1] == "dirty":
        img = Image(a[2])
        print(img.field("incompat") & DIRTY
              if img.field("version") >= 3 else 0)
    elif len(a) >= 4 and a[1] == "edit":
        img = Image(a[2], "r+b")
        cmd_edit(img, a[3], a[4:])
        img.f.close()
    else:
        sys.exit("usage: qcow2file.py get IMG FIELD [N] | dirty IMG | "
                 "edit IMG OP ARGS")


if __name__ == "__main__":
    main(sys.argv)
