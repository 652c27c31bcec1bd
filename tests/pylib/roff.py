# roff.py QUERY PAGE [SECTION [SUBSECTION]]: what a manual page says,
# from its roff source, as plain text (test-man: roff).
#   th        the .TH arguments, one per line
#   sections  the .SH titles
#   heads     the .SS titles of SECTION
#   tags      the tags of the .TP/.TQ items in the scope, one per line
#   items     "TAG<tab>BODY" for each item in the scope
#   text      all the text of the scope
# SECTION matches a .SH title (case-insensitive); SUBSECTION the first
# word of a .SS title.
import re
import sys

query, path = sys.argv[1], sys.argv[2]
want_sh = sys.argv[3].upper() if len(sys.argv) > 3 else None
want_ss = sys.argv[4] if len(sys.argv) > 4 else None

SPECIAL = {"aq": "'", "lq": '"', "rq": '"', "dq": '"', "em": "--",
           "en": "-", "bu": "*", "hy": "-", "ga": "`", "ti": "~"}

def unescape(s):
    def repl(m):
        e = m.group(1)
        if e[0] in "fF":
            return ""
        if e[0] == "(":
            return SPECIAL.get(e[1:], "?" + e[1:])
        if e[0] == "[":
            return SPECIAL.get(e[1:-1], "?" + e[1:-1])
        return {"-": "-", "~": " ", " ": " ", "e": "\\", "%": "", "&": "",
                ":": "", "c": "", "|": "", "^": "", "0": " "}.get(e, e)
    return re.sub(r"\\(f(?:\[[^]]*\]|\(..|.)|\(..|\[[^]]*\]|.)", repl, s)

def split_args(s):
    args, i, n = [], 0, len(s)
    while i < n:
        while i < n and s[i] == " ":
            i += 1
        if i >= n:
            break
        if s[i] == '"':
            i += 1
            a = ""
            while i < n:
                if s[i] == '"':
                    if i + 1 < n and s[i + 1] == '"':
                        a += '"'
                        i += 2
                        continue
                    i += 1
                    break
                a += s[i]
                i += 1
        else:
            j = i
            while j < n and s[j] != " ":
                j += 1
            a = s[i:j]
            i = j
        args.append(a)
    return args

# The page as a list of (kind, value): ("SH", title), ("SS", title),
# ("TP",), ("brk",) for paragraph macros, ("text", line).
doc, th = [], []
for raw in open(path, encoding="utf-8"):
    line = raw.rstrip("\n")
    if line.startswith(('.\\"', "'\\\"", '.\\#')) or line in (".", "'"):
        continue
    if line[:1] in ".'":
        m = re.match(r"[.'](\S+)\s*(.*)", line)
        if not m:
            continue
        mac, args = m.group(1), split_args(m.group(2))
        if mac == "TH":
            th = [unescape(a) for a in args]
        elif mac in ("SH", "SS"):
            doc.append((mac, unescape(" ".join(args))))
        elif mac in ("TP", "TQ"):
            doc.append(("TP",))
        elif mac in ("B", "I", "SM", "SB", "SY"):
            doc.append(("text", unescape(" ".join(args))))
        elif mac in ("BR", "BI", "IR", "IB", "RB", "RI"):
            doc.append(("text", unescape("".join(args))))
        elif mac in ("PP", "P", "LP", "IP", "RS", "RE", "SH", "YS"):
            doc.append(("brk",))
            if mac == "IP" and args:
                doc.append(("text", unescape(args[0])))
        continue
    doc.append(("text", unescape(line)))

# The entries of the scope.
scope, sh, ss = [], None, None
for e in doc:
    if e[0] == "SH":
        sh, ss = e[1].upper(), None
        continue
    if e[0] == "SS":
        ss = e[1]
        if sh == want_sh and query == "heads":
            print(ss)
    if want_sh and sh != want_sh:
        continue
    if want_ss and (ss is None or ss.split()[0] != want_ss):
        continue
    scope.append(e)

if query == "th":
    print("\n".join(th))
elif query == "sections":
    for e in doc:
        if e[0] == "SH":
            print(e[1].upper())
elif query == "text":
    for e in scope:
        if e[0] in ("text", "SS"):
            print(e[-1])
elif query in ("tags", "items"):
    i = 0
    while i < len(scope):
        if scope[i][0] != "TP":
            i += 1
            continue
        i += 1
        while i < len(scope) and scope[i][0] != "text":
            i += 1
        if i >= len(scope):
            break
        tag, body = scope[i][1], []
        i += 1
        while i < len(scope) and scope[i][0] == "text":
            body.append(scope[i][1])
            i += 1
        if query == "tags":
            print(tag)
        else:
            print(tag + "\t" + " ".join(body))
elif query != "heads":
    sys.exit("roff: unknown query " + query)
