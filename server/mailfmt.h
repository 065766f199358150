/*
 * mailfmt — the notification e-mail as bytes: an RFC 5322 message (headers,
 * CRLF line ends, a quoted-printable or base64 text/plain UTF-8 body) and
 * its mboxrd form for the embedded mailbox. Pure functions, no I/O, no
 * shared state: safe on any thread.
 *
 * Nothing user-controlled reaches a header unchecked: addresses must pass
 * mailfmt_valid_addr (a message with a bad one is refused), and user and
 * room names keep only the characters of the name pattern
 * ([A-Za-z0-9_.-], and ':' for room ids), so a CR, LF or any other byte
 * cannot start a new header. Message texts only ever go into the encoded
 * body, after CRs, control characters and invalid UTF-8 are replaced.
 * Dot-stuffing for SMTP is libcurl's job, not ours.
 */
#ifndef PARLEY_MAILFMT_H
#define PARLEY_MAILFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAILFMT_ADDR_MAX 254 /* RFC 5321's limit on a forward path */
#define MAILFMT_DATE_MAX 40
/* An item's text is cut (at a code point, with "…") past this many bytes. */
#define MAILFMT_TEXT_MAX 2000
/* A message lists at most this many items and counts the rest. */
#define MAILFMT_LIST_MAX 100

enum mailfmt_cte {
    MAILFMT_QP,     /* quoted-printable: readable raw, compact for mostly-ASCII chat */
    MAILFMT_BASE64, /* base64: fixed 4/3 overhead whatever the script */
};

/* One notification as it is listed in the body. */
struct mail_item {
    bool dm;          /* a direct message (room is not shown) */
    const char *from; /* sender's user name */
    const char *room; /* mention: the room it was said in */
    const char *text; /* UTF-8 (invalid bytes are shown as '?') */
    int64_t ts_ms;    /* wall clock, ms since the epoch */
};

struct mail_head {
    const char *from_addr;   /* envelope and From: address */
    const char *to_addr;     /* the recipient's address */
    const char *to_name;     /* the recipient's user name (display name, greeting) */
    int64_t date_ms;         /* Date:, wall clock ms */
    const char *msgid_local; /* Message-ID left part: [A-Za-z0-9]{1,64}, e.g. random hex */
    enum mailfmt_cte cte;
};

/* A plain addr-spec, checked conservatively: dot-atom local part (letters,
 * digits and !#$%&'*+/=?^_`{|}~-, dots not leading, trailing or doubled, at
 * most 64 bytes) "@" a domain of dot-separated letter-digit-hyphen labels
 * (1..63 bytes each, no leading or trailing '-'); at most MAILFMT_ADDR_MAX
 * bytes. No quoted strings, comments, address literals or spaces. */
bool mailfmt_valid_addr(const char *addr);

/* Copy the characters of src that may appear in a user or room name
 * ([A-Za-z0-9_.:-]) into dst, dropping everything else, truncating to fit.
 * An empty result becomes "?". Returns the length written. */
size_t mailfmt_name(char *dst, size_t dstsz, const char *src);

/* RFC 5322 date in UTC: "Mon, 23 Nov 2026 16:00:00 +0000". */
void mailfmt_date(char out[MAILFMT_DATE_MAX], int64_t wall_ms);

/* Encode len bytes as quoted-printable (RFC 2045 6.7): "\n" (or "\r\n") in
 * the input is a hard line break written as CRLF; lines are soft-broken to
 * at most 76 characters without splitting an =XX; trailing space and tab
 * are encoded. Returns a NUL-terminated malloc'd string, length in *outlen. */
char *mailfmt_qp(const char *s, size_t len, size_t *outlen);

/* Encode len bytes as base64 in lines of 76 characters, each ending CRLF.
 * Returns a NUL-terminated malloc'd string, length in *outlen. */
char *mailfmt_base64(const void *data, size_t len, size_t *outlen);

/* The plain-text body (UTF-8, "\n" line ends, before transfer encoding):
 * a greeting, then one entry per item, "[room] from at time: text" or
 * "from (direct message) at time: text", at most MAILFMT_LIST_MAX of them
 * followed by a count of the rest. Returns a malloc'd NUL-terminated string. */
char *mailfmt_body(const char *to_name, const struct mail_item *items, size_t n);

/* The whole message: headers and encoded body, CRLF throughout. Returns a
 * malloc'd NUL-terminated string with its length in *len, or NULL (with a
 * reason in err) when an address or the Message-ID part is invalid or n is
 * 0. */
char *mailfmt_message(const struct mail_head *h, const struct mail_item *items, size_t n,
                      size_t *len, char *err, size_t errsz);

/* One mboxrd entry for msg: the "From env_from Mon Nov 23 16:00:00 2026"
 * separator (env_from must be a valid address, else MAILER-DAEMON), the
 * message with CRLF turned into LF and every line matching ^>*From  quoted
 * with one more '>', then an empty line. Returns malloc'd, length in
 * *outlen. */
char *mailfmt_mbox(const char *env_from, int64_t wall_ms, const char *msg, size_t len,
                   size_t *outlen);

#endif
