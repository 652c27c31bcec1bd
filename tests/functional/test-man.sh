#!/bin/bash
# test-man.sh - the manual pages in docs/man: well formed, in step with the
# code, and installed by make install.
#
# Every page: lexgrog parses its NAME line (what whatis and apropos index)
# and it names the page's command; .TH names the file's page and section
# and the version of fs/main.c; the sections a system page has are there;
# man renders it at 80 columns with no warning from groff (all warnings
# on), no line wider than 80 columns and no escape left raw; SEE ALSO
# names only tapfs pages that exist, and tapfs(8) names every other page.
#
# Completeness, against the code (where docs and code may disagree, the
# code): tapfs-img.1 has a section per verb of "tapfs-img --help" with
# every option of "tapfs-img VERB --help" as an item, and its exit codes;
# tapfs-ctl.7 a section per command of fs/ctl.c's table with its
# arguments, every errno fs/control.c and fs/ctl.c produce and every errno
# of docs/control-files.md's table in ERRORS, every .stats key and VBD
# state fs/control.c prints, every errno the fault filter injects;
# tapfs.8 every option of "tapfs --help" and of fs/main.c's parser as an
# item with its default, every generic option fs/main.c ignores;
# mount.tapfs.8 every option mount-helpers/mount.tapfs takes and where it
# looks for the daemon; block-tapfs.8 every xenstore node xen/block-tapfs
# reads or writes, its commands and its settings with their defaults.
#
# Then "make install DESTDIR=$T/root PREFIX=/usr" (build/ is not rebuilt:
# that part is skipped if the binaries are missing) puts each page in
# man1, man7 or man8, "man -M" finds and renders them, and make uninstall
# removes them.  Nothing is written outside $T.
. "$(dirname "$0")/lib.sh"
requires man lexgrog groff make "$PYTHON"

MANSRC=$TOP/docs/man
export MANWIDTH=80
unset MANPAGER PAGER MAN_KEEP_FORMATTING MANOPT

# ---- reading roff --------------------------------------------------------

# roff QUERY PAGE [SECTION [SUBSECTION]]: what a page says, from its roff
# source, as plain text (fonts dropped, \- as -, \(aq as ', ...):
#   th        the .TH arguments, one per line
#   sections  the .SH titles
#   heads     the .SS titles of SECTION
#   tags      the tags of the .TP/.TQ items in the scope, one per line
#   items     "TAG<tab>BODY" for each item in the scope
#   text      all the text of the scope
# SECTION matches a .SH title (case-insensitive); SUBSECTION the first
# word of a .SS title.
roff() {
	pylib roff "$@"
}

# tag_words [o]: the words that item tags (on stdin) stand for:
# "-U, --force-share" gives -U and --force-share, "-f format" -f,
# "TAPFS_MOUNT=dir" TAPFS_MOUNT, "0" 0; with o, "-o store=dir" gives
# "-o store" as well as -o.
tag_words() {
	sed -E 's/, /\n/g' | if [ "${1:-}" = o ]; then
		sed -E 's/^(-o) ([a-z_]+).*/\1\n\1 \2/; t; s/^([^ =]+).*/\1/'
	else
		sed -E 's/^([^ =]+).*/\1/'
	fi
}

# has_word WORD TEXT: WORD occurs in TEXT as a word of its own (a WORD
# ending in - or =, such as "x-", as the start of one).
has_word() {
	local tail='([^A-Za-z0-9_]|$)'
	case "$1" in *[-=]) tail= ;; esac
	printf '%s\n' "$2" |
		grep -Eq -- "(^|[^A-Za-z0-9_-])$(re_quote "$1")$tail"
}

re_quote() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }

# check_each NAME WHAT LIST TEXT: every word of LIST is a word of TEXT
# (one check); LIST must not be empty (an empty list means its source
# changed shape and this test no longer sees it).
check_each() {
	local name=$1 what=$2 list=$3 text=$4 w missing=
	if [ -z "$list" ]; then
		fail "$name" "found no $what in the code: has its format changed?"
		return 1
	fi
	for w in $list; do
		has_word "$w" "$text" || missing="$missing $w"
	done
	if [ -z "$missing" ]; then
		ok "$name: $(echo $list | wc -w) $what"
	else
		fail "$name" "missing $what:$missing"
	fi
}

# in_list WORD LIST
in_list() {
	local w
	for w in $2; do
		[ "$w" = "$1" ] && return 0
	done
	return 1
}

# check_tags NAME WHAT LIST TAGS: every word of LIST is an item of TAGS
# (the output of tag_words).
check_tags() {
	local name=$1 what=$2 list=$3 tags=$4 w missing=
	if [ -z "$list" ]; then
		fail "$name" "found no $what in the code: has its format changed?"
		return 1
	fi
	while IFS= read -r w; do
		[ -n "$w" ] || continue
		printf '%s\n' "$tags" | grep -Fxq -- "$w" || missing="$missing '$w'"
	done <<< "$list"
	if [ -z "$missing" ]; then
		ok "$name: $(printf '%s\n' "$list" | grep -c .) $what, each an item"
	else
		fail "$name" "no item for $what:$missing"
	fi
}

# ---- every page: form ----------------------------------------------------

VERSION=$(sed -n 's/^#define TAPFS_VERSION[[:space:]]*"\(.*\)"/\1/p' \
	"$TOP/fs/main.c")
check_match "fs/main.c: TAPFS_VERSION" '^[0-9]' "$VERSION"

pages=()
for p in "$MANSRC"/*.[1-8]; do
	[ -e "$p" ] && pages+=("$p")
done
for want in tapfs.8 mount.tapfs.8 tapfs-img.1 tapfs-ctl.7 block-tapfs.8; do
	check test -f "$MANSRC/$want"
done

for p in "${pages[@]}"; do
	f=${p##*/}
	name=${f%.*}
	sec=${f##*.}

	# whatis: "name - description"
	out=$(lexgrog "$p" 2>&1)
	check_match "$f: lexgrog parses NAME" \
		"^$(re_quote "$p"): \"$(re_quote "$name") - [^\"]{10,}\"$" "$out"

	mapfile -t th < <(roff th "$p")
	check_eq "$f: .TH title" "$(echo "$name" | tr '[:lower:]' '[:upper:]')" \
		"${th[0]:-}"
	check_eq "$f: .TH section" "$sec" "${th[1]:-}"
	check_match "$f: .TH date" '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' "${th[2]:-}"
	check_eq "$f: .TH source is this version" "tapfs $VERSION" "${th[3]:-}"

	secs=$(roff sections "$p")
	need="NAME SYNOPSIS DESCRIPTION FILES EXAMPLES SEE_ALSO"
	case "$f" in
	tapfs.8|mount.tapfs.8) need="$need OPTIONS EXIT_STATUS" ;;
	tapfs-img.1) need="$need COMMANDS EXIT_STATUS" ;;
	tapfs-ctl.7) need="$need COMMANDS ERRORS" ;;
	block-tapfs.8) need="$need COMMANDS EXIT_STATUS ENVIRONMENT" ;;
	esac
	missing=
	for s in $need; do
		printf '%s\n' "$secs" | grep -Fxq "${s//_/ }" ||
			missing="$missing ${s//_/ }"
	done
	check_eq "$f: has the sections $need" "" "$missing"
	check_eq "$f: NAME comes first" NAME "$(printf '%s\n' "$secs" | head -n1)"
	check_eq "$f: SEE ALSO comes last" "SEE ALSO" \
		"$(printf '%s\n' "$secs" | tail -n1)"

	# groff, every warning on (-ww); man's own complaints too.
	warn=$(man --warnings=w -l "$p" 2>&1 >/dev/null)
	check_eq "$f: man --warnings=w -l: no warning" "" "$warn"
	warn=$(man --warnings -l "$p" 2>&1 >/dev/null)
	check_eq "$f: man --warnings -l: no warning" "" "$warn"

	out=$(man -l -P cat "$p" 2>&1)
	rc=$?
	check_eq "$f: man -l renders (exit status)" 0 "$rc"
	check_match "$f: rendered header" \
		"^$(re_quote "${th[0]:-?}")\($sec\) .* $(re_quote "${th[0]:-?}")\($sec\)\$" \
		"$(printf '%s\n' "$out" | head -n1)"
	wide=$(printf '%s\n' "$out" | awk 'length > 80' | head -n 3)
	check_eq "$f: no rendered line wider than 80 columns" "" "$wide"
	raw=$(printf '%s\n' "$out" | grep -nE '\\[-&%(f*~]|^\.[A-Z]{1,2}( |$)' |
		head -n 3)
	check_eq "$f: no roff escape or request left in the output" "" "$raw"
	check_match "$f: rendered NAME line" \
		"^       $(re_quote "$name") - " \
		"$(printf '%s\n' "$out" | sed -n '/^NAME$/{n;p;q}')"

	# SEE ALSO: tapfs pages named exist; each page names some.
	refs=$(roff text "$p" "SEE ALSO" | grep -oE '[a-z][a-z0-9._-]*\([1-8]\)')
	bad=
	for r in $refs; do
		rn=${r%(*}
		rs=${r#*(}
		rs=${rs%)}
		case "$rn" in
		*tapfs*) [ -f "$MANSRC/$rn.$rs" ] || bad="$bad $r" ;;
		esac
		[ "$rn" = "$name" ] && bad="$bad $r(itself)"
	done
	check_eq "$f: SEE ALSO names existing tapfs pages" "" "$bad"
	check_match "$f: SEE ALSO names another tapfs page" 'tapfs' "$refs"
done

refs=$(roff text "$MANSRC/tapfs.8" "SEE ALSO")
missing=
for p in "${pages[@]}"; do
	f=${p##*/}
	[ "$f" = tapfs.8 ] && continue
	has_word "${f%.*}(${f##*.})" "$refs" || missing="$missing ${f%.*}(${f##*.})"
done
check_eq "tapfs.8: SEE ALSO names every other page" "" "$missing"

# ---- tapfs-img.1 -------------------------------------------------------

page=$MANSRC/tapfs-img.1
if [ -x "$TAPFS_IMG" ]; then
	help=$("$TAPFS_IMG" --help)
	verbs=$(printf '%s\n' "$help" |
		sed -n '/^Verbs:/,/^$/s/^  \([a-z][a-z0-9-]*\) .*/\1/p')
	heads=$(roff heads "$page" COMMANDS | awk '{ print $1 }')
	check_tags "tapfs-img.1: COMMANDS" "verbs of tapfs-img --help" \
		"$verbs" "$heads"
	synopsis=$(roff text "$page" SYNOPSIS)
	for v in $verbs; do
		check_match "tapfs-img.1: SYNOPSIS shows $v" \
			"tapfs-img $v( |$)" "$synopsis"
		vhelp=$("$TAPFS_IMG" "$v" --help)
		# Options: in the usage lines and at the head of option lines.
		opts=$( { printf '%s\n' "$vhelp" | sed -n '/^Usage:/,/^$/p'
			  printf '%s\n' "$vhelp" | sed -n 's/^  \(-.*\)/\1/p' |
				sed -E 's/   .*//'; } |
			grep -oE '(^|[][ ,|])(-[A-Za-z]|--[a-z][a-z-]*)' |
			sed -E 's/^[][ ,|]//' | sort -u)
		tags=$(roff tags "$page" COMMANDS "$v" | tag_words)
		check_tags "tapfs-img.1: $v" "options of tapfs-img $v --help" \
			"$opts" "$tags"
	done
	codes=$(printf '%s\n' "$help" | sed -n 's/^Exit status: //p' |
		grep -oE '(^|, )[0-9]+' | grep -oE '[0-9]+')
	check_tags "tapfs-img.1: EXIT STATUS" "exit codes of tapfs-img --help" \
		"$codes" "$(roff tags "$page" "EXIT STATUS" | tag_words)"
else
	echo "skip - tapfs-img.1 against tapfs-img --help: $TAPFS_IMG is not built"
fi

# ---- tapfs-ctl.7 -------------------------------------------------------

page=$MANSRC/tapfs-ctl.7
table=$(sed -n 's/^[[:space:]]*{ *"\([a-z]*\)", *CTL_[A-Z]*, *[0-9]*, *[0-9]*, *"\(.*\)" *},.*/\1\t\2/p' \
	"$TOP/fs/ctl.c")
words=$(printf '%s\n' "$table" | cut -f1)
heads=$(roff heads "$page" COMMANDS)
check_tags "tapfs-ctl.7: COMMANDS" "command words of fs/ctl.c" "$words" \
	"$(printf '%s\n' "$heads" | awk '{ print $1 }')"
while IFS=$'\t' read -r w usage; do
	[ -n "$w" ] || continue
	head=$(printf '%s\n' "$heads" | awk -v w="$w" '$1 == w')
	bad=
	for a in ${usage#"$w"}; do
		case "$a" in
		\[[A-Z]*\]) lc=$(echo "$a" | tr '[:upper:]' '[:lower:]')
			    [[ "$head" == *"$lc"* ]] || bad="$bad $a" ;;
		\[*\])	    lc=${a#[}
			    [[ "$head" == *"[${lc%]}"* ]] || bad="$bad $a" ;;
		*)	    for part in ${a//:/ }; do
				lc=$(echo "$part" | tr '[:upper:]' '[:lower:]')
				has_word "$lc" "$head" || bad="$bad $a"
			    done ;;
		esac
	done
	check_eq "tapfs-ctl.7: '$head' has the arguments of '$usage'" "" "$bad"
done <<< "$table"

errtags=$(roff tags "$page" ERRORS | tag_words)
errtext=$(roff text "$page" ERRORS)
# What the commands return (fs/control.c, fs/ctl.c), as strerrorname_np
# names them; EINPROGRESS (a command still running) and E2BIG (too many
# words, reported as EINVAL) never reach the writer.
code_errs=$(grep -hoE -- '-E[A-Z0-9]+' "$TOP/fs/control.c" "$TOP/fs/ctl.c" |
	sed 's/^-//; s/^ENOTSUP$/EOPNOTSUPP/; s/^EWOULDBLOCK$/EAGAIN/' |
	grep -vxE 'EINPROGRESS|E2BIG' | sort -u)
check_tags "tapfs-ctl.7: ERRORS" "errnos of fs/control.c and fs/ctl.c" \
	"$code_errs" "$errtags"
doc_table=$(sed -n '/^### Errno summary/,/^#/p' "$TOP/docs/control-files.md" |
	grep '^| `E')
doc_errs=$(printf '%s\n' "$doc_table" | sed -E 's/^\| `(E[A-Z0-9]+)`.*/\1/' |
	sort -u)
check_tags "tapfs-ctl.7: ERRORS" "errnos of docs/control-files.md's table" \
	"$doc_errs" "$errtags"
doc_more=$(sed -n '/^### Errno summary/,/^#/p' "$TOP/docs/control-files.md" |
	grep '^|' | grep -oE '`E[A-Z0-9]+`' | tr -d '`' | sort -u)
check_each "tapfs-ctl.7: ERRORS" "errnos named in docs/control-files.md's table" \
	"$doc_more" "$errtext"

stat_keys=$(grep -oE '%s\.[a-z_]+ ' "$TOP/fs/control.c" |
	sed -E 's/^%s\.//; s/ $//' | sort -u)
check_tags "tapfs-ctl.7: READING .STATS" ".stats keys of fs/control.c" \
	"$stat_keys" "$(roff tags "$page" "READING .STATS" | tag_words)"
states=$(sed -n '/^static const char \*state_name/,/^}/p' "$TOP/fs/control.c" |
	grep -oE 'return "[a-z]+"' | sed -E 's/return "(.*)"/\1/' | sort -u)
check_each "tapfs-ctl.7: READING .CTL" "VBD states of fs/control.c" \
	"$states" "$(roff text "$page" "READING .CTL")"
fault_errs=$(sed -n '/fault_errnos\[\] = {/,/^};/p' \
	"$TOP/drivers/fault/fault.c" | grep -oE '"E[A-Z0-9]+"' | tr -d '"')
check_each "tapfs-ctl.7: fault" "errnos of the fault filter" \
	"$fault_errs" "$(roff text "$page" COMMANDS fault)"
pathmax=$(sed -n 's/^#define CTL_PATH_MAX[[:space:]]*\([0-9]*\).*/\1/p' \
	"$TOP/fs/ctl.h")
linemax=$(sed -n 's/^#define CTL_LINE_MAX[[:space:]]*//p' "$TOP/fs/ctl.h")
linemax=$(( ${linemax//CTL_PATH_MAX/$pathmax} ))
check_match "tapfs-ctl.7: the longest command (fs/ctl.h)" "(^| )$linemax bytes" \
	"$(roff text "$page" DESCRIPTION)"

# ---- tapfs.8 -----------------------------------------------------------

page=$MANSRC/tapfs.8
tags=$(roff tags "$page" OPTIONS | tag_words o)
items=$(roff items "$page" OPTIONS)
# The parser is the truth; -o ro is parsed only to be refused.
parsed=$(sed -n '/^static int parse_options/,/^}/p' "$TOP/fs/main.c" |
	grep -oE 'strcmp\(opt, "[a-z_]+"\)' | sed -E 's/.*"(.*)".*/\1/' |
	grep -vx ro | sort -u)
check_tags "tapfs.8: OPTIONS" "-o options of fs/main.c" \
	"$(printf '%s\n' $parsed | sed 's/^/-o /')" "$tags"
check_match "tapfs.8: OPTIONS: -o ro is refused" '(^| )ro is refused' \
	"$(roff text "$page" OPTIONS | tr '\n' ' ')"
ignored=$(sed -n '/^static bool generic_mount_option/,/^}/p' "$TOP/fs/main.c" |
	sed -n '/ignored\[\] = {/,/};/p' | grep -oE '"[a-z_]+"' | tr -d '"')
ignored="$ignored $(sed -n '/^static bool generic_mount_option/,/^}/p' \
	"$TOP/fs/main.c" | grep -oE 'strncmp\(o, "[a-z_=-]+"' |
	sed -E 's/.*"(.*)"/\1/')"
check_each "tapfs.8: OPTIONS" "generic options fs/main.c ignores" \
	"$ignored" "$(roff text "$page" OPTIONS)"
if [ -x "$TAPFS" ]; then
	help=$("$TAPFS" --help)
	hopts=$(printf '%s\n' "$help" |
		sed -n 's/^  -o \([a-z_]*\).*/-o \1/p')
	check_tags "tapfs.8: OPTIONS" "-o options of tapfs --help" \
		"$hopts" "$tags"
	short=$(printf '%s\n' "$help" | sed -n 's/^  \(-[A-Za-z]\)\(, \(--[a-z-]*\)\)\{0,1\} .*/\1 \3/p' |
		tr ' ' '\n' | grep . | sort -u)
	check_tags "tapfs.8: OPTIONS" "flags of tapfs --help" "$short" "$tags"
	# Each default the help states is the page's.
	bad=
	while IFS=$'\t' read -r o def; do
		body=$(printf '%s\n' "$items" | awk -F '\t' -v o="$o" \
			'index($1, o) == 1 { print $2 }')
		[[ "$body" == *"default $def"* ]] || bad="$bad $o($def)"
	done < <(printf '%s\n' "$help" |
		sed -n 's/^  \(-o [a-z_]*\).*(default \([^)]*\)).*/\1\t\2/p')
	check_eq "tapfs.8: OPTIONS: the defaults of tapfs --help" "" "$bad"
	usage=$(printf '%s\n' "$help" | sed -n 's/^Usage: //p')
	if roff text "$page" SYNOPSIS | tr '\n' ' ' | grep -iqF -- "$usage"; then
		ok "tapfs.8: SYNOPSIS has '$usage'"
	else
		fail "tapfs.8: SYNOPSIS" "does not have '$usage'"
	fi
else
	echo "skip - tapfs.8 against tapfs --help: $TAPFS is not built"
fi
check_tags "tapfs.8: EXIT STATUS" "exit codes" "$(printf '0\n1\n')" \
	"$(roff tags "$page" "EXIT STATUS" | tag_words)"

# ---- mount.tapfs.8 -----------------------------------------------------

page=$MANSRC/mount.tapfs.8
helper=$TOP/mount-helpers/mount.tapfs
hopts=$(sed -n '/^while \[ \$# -gt 0 \]; do/,/^done/p' "$helper" |
	grep -oE '^[[:space:]]+-[^)]*\)' | tr -d '\t )' | tr '|' '\n' |
	grep -vE '\*' | sort -u)
check_tags "mount.tapfs.8: OPTIONS" "options of mount-helpers/mount.tapfs" \
	"$hopts" "$(roff tags "$page" OPTIONS | tag_words)"
env_text=$(roff text "$page" ENVIRONMENT)
check_each "mount.tapfs.8: ENVIRONMENT" "variables of mount.tapfs" \
	"$(grep -oE '\$\{?TAPFS_[A-Z_]+' "$helper" | tr -d '${' | sort -u)" \
	"$env_text"
check_each "mount.tapfs.8: ENVIRONMENT" "places mount.tapfs looks for tapfs" \
	"$(sed -n '/^find_daemon()/,/^}/p' "$helper" |
		grep -oE '(/[a-z]+)+/tapfs|\.\./build/tapfs' | sort -u)" \
	"$env_text"
check_each "mount.tapfs.8: OPTIONS" "-o options of fs/main.c" \
	"$parsed" "$(roff text "$page" OPTIONS)"
check_tags "mount.tapfs.8: EXIT STATUS" "exit codes" "$(printf '0\n1\n')" \
	"$(roff tags "$page" "EXIT STATUS" | tag_words)"

# ---- block-tapfs.8 -----------------------------------------------------

page=$MANSRC/block-tapfs.8
script=$TOP/xen/block-tapfs
nodes=$( { grep -oE '\$XENBUS_PATH/[a-z-]+' "$script" | sed 's/.*\///'
	   grep -oE 'be\[[a-z-]+\]' "$script" | sed -E 's/be\[(.*)\]/\1/'
	   grep -E '^[[:space:]]*be_need ' "$script" |
		sed -E 's/^[[:space:]]*be_need //' | tr ' ' '\n'; } |
	grep -v '^\$' | grep . | sort -u)
check_tags "block-tapfs.8: XENSTORE NODES" "xenstore nodes of xen/block-tapfs" \
	"$nodes" "$(roff tags "$page" "XENSTORE NODES" | tag_words)"
cmds=$(sed -n '/^case "\$command" in/,/^esac/p' "$script" |
	grep -oE '^[a-z]+\)' | tr -d ')')
check_tags "block-tapfs.8: COMMANDS" "commands of xen/block-tapfs" "$cmds" \
	"$(roff tags "$page" COMMANDS | tag_words)"
check_tags "block-tapfs.8: ENVIRONMENT" "environment of xen/block-tapfs" \
	"$(printf 'XENBUS_PATH\n%s\n' "$(grep -oE '^TAPFS_[A-Z_]+=\$\{' "$script" |
		sed 's/=.*//')")" \
	"$(roff tags "$page" ENVIRONMENT | tag_words)"
# The settings, each with its default.
settings=$(grep -E '^TAPFS_[A-Z_]+=' "$script")
conf_items=$(roff items "$page" CONFIGURATION; roff items "$page" ENVIRONMENT)
check_match "block-tapfs.8: settings found in xen/block-tapfs" . "$settings"
bad=
while IFS='=' read -r var def; do
	def=${def#\$\{*:-}
	def=${def%\}}
	body=$(printf '%s\n' "$conf_items" | awk -F '\t' -v v="$var" \
		'$1 == v || index($1, v "=") == 1 { print $2 }')
	[ -n "$body" ] && [[ "$body" == *"$def"* ]] || bad="$bad $var($def)"
done <<< "$settings"
check_eq "block-tapfs.8: settings and their defaults" "" "$bad"
check_tags "block-tapfs.8: EXIT STATUS" "exit codes" "$(printf '0\n1\n')" \
	"$(roff tags "$page" "EXIT STATUS" | tag_words)"

# ---- make install, man -M, make uninstall ------------------------------

# The binaries are not rebuilt: "make -o" takes them as they are (the
# build may be under way in another shell); missing, this part is skipped.
bdir=$(cd "$(dirname "$TAPFS")" 2>/dev/null && pwd)
root=$T/root
mk() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$TOP" \
		--no-print-directory BUILD="$bdir" -o "$bdir/tapfs" \
		-o "$bdir/tapfs-img" DESTDIR="$root" PREFIX=/usr "$@"
}
if [ -z "$bdir" ] || [ ! -x "$bdir/tapfs" ] || [ ! -x "$bdir/tapfs-img" ]; then
	echo "skip - make install: $(dirname "$TAPFS")/tapfs or tapfs-img is" \
		"not built (run make first); not building it here"
else
	check mk install
	mandir=$root/usr/share/man
	for p in "${pages[@]}"; do
		f=${p##*/}
		dst=$mandir/man${f##*.}/$f
		check cmp "$p" "$dst"
		check_eq "installed $f mode" 644 "$(file_mode "$dst")"
	done
	check_eq "nothing else in $mandir" \
		"$(printf '%s\n' "${pages[@]##*/}" | sort)" \
		"$(find "$mandir" -type f -printf '%f\n' | sort)"
	for p in "${pages[@]}"; do
		f=${p##*/}
		name=${f%.*}
		out=$(man -M "$mandir" -P cat "${f##*.}" "$name" 2>&1)
		check_match "man -M ... ${f##*.} $name renders it" \
			"^       $(re_quote "$name") - " \
			"$(printf '%s\n' "$out" | sed -n '/^NAME$/{n;p;q}')"
	done
	out=$(man -M "$mandir" -P cat tapfs-img 2>&1)
	check_match "man -M $mandir tapfs-img" '^TAPFS-IMG\(1\)' \
		"$(printf '%s\n' "$out" | head -n 1)"
	check test -x "$root/usr/sbin/tapfs"
	check mk uninstall
	check_eq "make uninstall leaves no page" "" \
		"$(find "$mandir" -type f 2>/dev/null)"
fi

summary
