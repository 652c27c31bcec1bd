"""jsonget.py [-d DEFAULT] KEY...: print fields of the JSON document on
stdin, space separated.  A KEY is a dotted path into nested objects (a
number indexes a list); KEY# is the number of elements of the list or
object KEY; with -d, a missing field prints DEFAULT.  Exits 1
if stdin is not JSON, or a field is missing and there is no default."""
import json
import sys


def lookup(v, key):
    count = key.endswith("#")
    for k in key.rstrip("#").split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    return len(v) if count else v


def main(a):
    default = None
    if len(a) > 2 and a[1] == "-d":
        default, a = a[2], a[2:]
    if len(a) < 2:
        sys.exit("usage: jsonget.py [-d DEFAULT] KEY...")
    try:
        doc = json.load(sys.stdin)
    except ValueError as e:
        sys.exit("jsonget.py: not JSON: %s" % e)
    out = []
    for key in a[1:]:
        try:
            out.append(str(lookup(doc, key)))
        except (KeyError, IndexError, TypeError):
            if default is None:
                sys.exit("jsonget.py: no field %s" % key)
            out.append(default)
    print(" ".join(out))


if __name__ == "__main__":
    main(sys.argv)
