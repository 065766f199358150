/*
 * pathres — turns the path of an HTTP request into a relative file name under
 * the web root, or refuses it. It is the one place that decides which names a
 * request may reach, so its rules are strict and its output is simple enough
 * to check by eye: a plain relative path with no "..", no leading '/', no
 * backslash, no control character and no hidden (dot) segment.
 *
 * Rules, in order:
 *  - the input is at most PATHRES_MAX_IN bytes and starts with '/';
 *  - everything from the first raw '?' or '#' on is dropped (query, fragment);
 *  - the rest is split at raw '/' and each segment is percent-decoded exactly
 *    once ("%252e" becomes the three characters "%2e", never "."); '+' is not
 *    a space (that is form encoding, not path encoding);
 *  - refused: a malformed escape ("%", "%4", "%zz"); a decoded '/' or '\\'
 *    inside a segment (%2f, %5c); any backslash; NUL, C0 and DEL control
 *    bytes; C1 controls (U+0080..U+009F); bytes >= 0x80 that do not form
 *    valid UTF-8 (so overlong forms such as %c0%ae or %e0%80%ae, surrogates
 *    and code points above U+10FFFF are refused);
 *  - empty segments ("//") collapse and "." segments are dropped;
 *  - refused: any segment starting with '.' (hidden files, "..", "...") and,
 *    to keep the output trivially free of "..", any segment containing ".."
 *    (so "a..b" is refused too);
 *  - a path naming a directory (empty, ending in '/', or ending in a "."
 *    segment) gets "index.html" appended: "/" -> "index.html",
 *    "/a/" -> "a/index.html", "/a/." -> "a/index.html".
 */
#ifndef PARLEY_PATHRES_H
#define PARLEY_PATHRES_H

#include <stddef.h>

/* Longest accepted request path, in bytes, query and fragment included. */
#define PATHRES_MAX_IN 1024
/* An out buffer of this size always fits a result. */
#define PATHRES_OUT_MAX (PATHRES_MAX_IN + sizeof("index.html"))

/*
 * Resolve url_path[0..len) (need not be NUL-terminated; an embedded NUL byte
 * is refused) into out, NUL-terminated. Returns 0 on success, -1 if the path
 * is refused or the result does not fit outsz (out is then "").
 * Thread: any; pure, no allocation.
 */
int pathres_resolve(const char *url_path, size_t len, char *out, size_t outsz);

#endif
