"""fiojson.py - read fio's JSON output (--output-format=json; anything
fio printed before the document is skipped).

  fiojson.py check JSON     one verify job passed: error 0, something
                            written, every written byte read back ->
                            "OK BYTES" or what went wrong
  fiojson.py sum JSON...    check each; print the failures and
                            "runs N bad N verified BYTES"
  fiojson.py get JSON KEY.. fields of the first job, one line, space
                            separated (read.io_bytes: a dotted path)
"""
import json
import sys


def first_job(path):
    with open(path) as f:
        text = f.read()
    return json.loads(text[text.index("{"):])["jobs"][0]


def field(job, key):
    for k in key.split("."):
        job = job[k]
    return job


def verdict(job):
    """None if the verify job passed, else why not."""
    r, w = job["read"]["io_bytes"], job["write"]["io_bytes"]
    if job["error"]:
        return "error %d" % job["error"]
    if w == 0:
        return "nothing written"
    if r != w:
        return "verified %d of %d bytes written" % (r, w)
    return None


def cmd_check(path):
    try:
        j = first_job(path)
    except Exception as e:
        print("unreadable fio output: %s" % e)
        return
    why = verdict(j)
    print(why if why else "OK %d" % j["write"]["io_bytes"])


def cmd_sum(paths):
    bad, total = 0, 0
    for p in paths:
        try:
            j = first_job(p)
            r, w, e = (j["read"]["io_bytes"], j["write"]["io_bytes"],
                       j["error"])
        except Exception as x:
            print("%s: unreadable: %s" % (p, x))
            bad += 1
            continue
        if verdict(j):
            print("%s: error %d, %d written, %d verified" % (p, e, w, r))
            bad += 1
        else:
            total += w
    print("runs %d bad %d verified %d" % (len(paths), bad, total))


def main(a):
    if len(a) == 3 and a[1] == "check":
        cmd_check(a[2])
    elif len(a) >= 2 and a[1] == "sum":
        cmd_sum(a[2:])
    elif len(a) >= 4 and a[1] == "get":
        j = first_job(a[2])
        print(" ".join(str(field(j, k)) for k in a[3:]))
    else:
        sys.exit("usage: fiojson.py check JSON | sum JSON... | "
                 "get JSON KEY...")


if __name__ == "__main__":
    main(sys.argv)
