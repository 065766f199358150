/*
 * codec — protocol v1: JSON-mode decoding and every encoder (JSON and text).
 * Text-mode decoding and the /help text live in textmode.c.
 *
 * Decoding: a linear pre-scan bounds the nesting depth before jansson sees
 * the bytes (jansson's parser recurses once per level, so hostile input must
 * not reach it deep), then jansson parses with duplicate keys refused, then
 * each field the request type uses is checked against the contract. Fields a
 * type does not use are ignored; a JSON null counts as an absent field.
 *
 * Encoding never builds a jansson tree: an event is encoded once per
 * broadcast and written straight into a msgbuf by a small escaper, so a
 * message costs one allocation however many fields it has. The escaper also
 * repairs invalid UTF-8 (U+FFFD) so a frame can never make a browser drop
 * the connection, even if a caller hands us bytes that bypassed the decoder.
 *
 * Thread: any. No state.
 */
#include "codec.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_int.h"
#include "util.h"

/* Deeper than any request needs (they are flat) and far below the depth at
 * which jansson's recursion could matter. */
#define NEST_MAX 32
/* Integers above 2^53 do not survive a JavaScript client's doubles. */
#define SAFE_INT_MAX 9007199254740992LL
#define REF_CHARS_MAX 64
#define DEFAULT_MAX_TEXT 4000

#define PUT_LIT(b, s) mb_put((b), (s), sizeof(s) - 1)

static const char *const err_names[] = {
    [ERR_NONE] = "none",
    [ERR_BAD_JSON] = "bad_json",
    [ERR_BAD_REQUEST] = "bad_request",
    [ERR_UNKNOWN_TYPE] = "unknown_type",
    [ERR_AUTH_REQUIRED] = "auth_required",
    [ERR_AUTH_FAILED] = "auth_failed",
    [ERR_NAME_TAKEN] = "name_taken",
    [ERR_NOT_JOINED] = "not_joined",
    [ERR_FORBIDDEN] = "forbidden",
    [ERR_NO_SUCH_USER] = "no_such_user",
    [ERR_RATE_LIMITED] = "rate_limited",
    [ERR_TOO_LARGE] = "too_large",
    [ERR_INTERNAL] = "internal",
    [ERR_SHUTTING_DOWN] = "shutting_down",
};

const char *codec_err_name(enum err_code c)
{
    if ((unsigned)c >= ARRAY_LEN(err_names) || !err_names[c])
        return "internal";
    return err_names[c];
}

void req_release(struct req *r)
{
    if (!r)
        return;
    free(r->text);
    r->text = NULL;
    r->text_len = 0;
    free(r->token);
    r->token = NULL;
}

/* ---- names ---- */

static bool name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

static bool valid_name_n(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!name_char((unsigned char)s[i]))
            return false;
    }
    return true;
}

bool codec_valid_user(const char *s)
{
    return s && valid_name_n(s, strnlen(s, CODEC_USER_MAX + 1), CODEC_USER_MAX);
}

/* "dm" names the DM rooms (dm:a:b) as a whole; a public room of that name
 * could be taken for one of them. Other names starting with dm are fine:
 * no public name can hold the ':' that every DM room has. */
static bool reserved_room(const char *s)
{
    return strcmp(s, "dm") == 0;
}

bool codec_valid_room(const char *s)
{
    return s && valid_name_n(s, strnlen(s, CODEC_ROOM_MAX + 1), CODEC_ROOM_MAX) &&
           !reserved_room(s);
}

bool codec_dm_room(const char *u1, const char *u2, char out[CODEC_ROOMID_MAX + 1])
{
    if (!codec_valid_user(u1) || !codec_valid_user(u2))
        return false;
    int c = strcmp(u1, u2);
    if (c == 0)
        return false; /* "a < b" has no room for a conversation with oneself */
    snprintf(out, CODEC_ROOMID_MAX + 1, "dm:%s:%s", c < 0 ? u1 : u2, c < 0 ? u2 : u1);
    return true;
}

/* a and b may be NULL when only validity matters. */
bool codec_parse_dm(const char *room, char a[CODEC_USER_MAX + 1], char b[CODEC_USER_MAX + 1])
{
    if (!room || strncmp(room, "dm:", 3) != 0)
        return false;
    const char *pa = room + 3;
    const char *colon = strchr(pa, ':');
    if (!colon)
        return false;
    size_t na = (size_t)(colon - pa);
    const char *pb = colon + 1;
    size_t nb = strnlen(pb, CODEC_USER_MAX + 1);
    if (!valid_name_n(pa, na, CODEC_USER_MAX) || !valid_name_n(pb, nb, CODEC_USER_MAX))
        return false;
    /* byte order, a strictly first; a shorter prefix sorts first */
    int c = memcmp(pa, pb, na < nb ? na : nb);
    if (c > 0 || (c == 0 && na >= nb))
        return false;
    if (a) {
        memcpy(a, pa, na);
        a[na] = '\0';
    }
    if (b) {
        memcpy(b, pb, nb);
        b[nb] = '\0';
    }
    return true;
}

static bool valid_room_field(const char *s)
{
    return codec_valid_room(s) || codec_parse_dm(s, NULL, NULL);
}

/* ---- UTF-8 and escaping ---- */

static const char hexdig[] = "0123456789abcdef";
static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

/* The JSON escape for an ASCII byte that needs one; returns its length. */
static size_t json_esc(unsigned char c, char out[6])
{
    out[0] = '\\';
    switch (c) {
    case '"':
        out[1] = '"';
        return 2;
    case '\\':
        out[1] = '\\';
        return 2;
    case '\n':
        out[1] = 'n';
        return 2;
    case '\r':
        out[1] = 'r';
        return 2;
    case '\t':
        out[1] = 't';
        return 2;
    case '\b':
        out[1] = 'b';
        return 2;
    case '\f':
        out[1] = 'f';
        return 2;
    default:
        out[1] = 'u';
        out[2] = '0';
        out[3] = '0';
        out[4] = hexdig[c >> 4];
        out[5] = hexdig[c & 15];
        return 6;
    }
}

/* A JSON string literal for s[0..len): runs of plain bytes are copied in one
 * mb_put, which is the whole string for ordinary chat text. */
static void put_json_str(struct msgbuf *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
    char esc[6];

    mb_putc(b, '"');
    while (p < end) {
        unsigned c = *p;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            continue;
        }
        if (c >= 0x80) {
            uint32_t cp;
            size_t n = (size_t)utf8_decode(p, (size_t)(end - p), &cp);
            if (n) {
                p += n;
                continue;
            }
            mb_put(b, run, (size_t)(p - run));
            PUT_LIT(b, replacement);
        } else {
            mb_put(b, run, (size_t)(p - run));
            mb_put(b, esc, json_esc((unsigned char)c, esc));
        }
        run = ++p;
    }
    mb_put(b, run, (size_t)(p - run));
    mb_putc(b, '"');
}

static void put_json_cstr(struct msgbuf *b, const char *s)
{
    if (!s)
        s = "";
    put_json_str(b, s, strlen(s));
}

/*
 * For text mode: copy s, turning anything that could end or rewrite a
 * terminal line into a space: C0 controls (\n, \r, \t, ESC...), DEL, C1
 * controls (U+0080..U+009F, which include NEL), the line and paragraph
 * separators and the bidirectional overrides and isolates (U+202A..U+202E,
 * U+2066..U+2069), which could make a user's text pose as a server line.
 * Invalid UTF-8 becomes U+FFFD.
 */
static void put_text_safe(struct msgbuf *b, const char *s, size_t len)
{
    if (!s)
        return;
    const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;

    while (p < end) {
        unsigned c = *p;
        if (c >= 0x20 && c < 0x7f) {
            p++;
            continue;
        }
        size_t n = 1;
        const char *rep = " ";
        size_t repn = 1;
        if (c >= 0x80) {
            uint32_t cp;
            n = (size_t)utf8_decode(p, (size_t)(end - p), &cp);
            if (!n) {
                n = 1;
                rep = replacement;
                repn = sizeof(replacement) - 1;
            } else if (!(cp <= 0x9f || cp == 0x2028 || cp == 0x2029 ||
                         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))) {
                p += n;
                continue;
            }
        }
        mb_put(b, run, (size_t)(p - run));
        mb_put(b, rep, repn);
        p += n;
        run = p;
    }
    mb_put(b, run, (size_t)(p - run));
}

static void put_text_cstr(struct msgbuf *b, const char *s)
{
    if (s)
        put_text_safe(b, s, strlen(s));
}

static void put_u64(struct msgbuf *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    mb_put(b, tmp + i, sizeof(tmp) - i);
}

static void put_i64(struct msgbuf *b, int64_t v)
{
    if (v < 0) {
        mb_putc(b, '-');
        put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(b, (uint64_t)v);
    }
}

/* JSON has no NaN or infinity; a nonsense rate is sent as 0 rather than
 * as a frame no client can parse. Whole numbers print without a fraction. */
static void put_double(struct msgbuf *b, double v)
{
    if (!isfinite(v))
        v = 0;
    if (v > -(double)SAFE_INT_MAX && v < (double)SAFE_INT_MAX && (double)(int64_t)v == v) {
        put_i64(b, (int64_t)v);
        return;
    }
    mb_printf(b, "%.15g", v);
}

static void put_ref(struct msgbuf *b, const char *ref)
{
    if (ref && *ref) {
        PUT_LIT(b, ",\"ref\":");
        mb_puts(b, ref); /* already JSON: the decoder encoded it */
    }
}

/* "HH:MM:SS" of a ms timestamp, UTC. */
static void put_hms(struct msgbuf *b, int64_t ts)
{
    int64_t day = ts / 1000 % 86400; /* seconds into the UTC day */
    if (ts % 1000 < 0)
        day--; /* round toward the past for times before 1970 */
    if (day < 0)
        day += 86400;
    unsigned v[3] = {(unsigned)(day / 3600), (unsigned)(day / 60 % 60), (unsigned)(day % 60)};
    char tmp[8];
    for (int i = 0; i < 3; i++) {
        tmp[3 * i] = (char)('0' + v[i] / 10);
        tmp[3 * i + 1] = (char)('0' + v[i] % 10);
        if (i < 2)
            tmp[3 * i + 2] = ':';
    }
    mb_put(b, tmp, sizeof(tmp));
}

/* ---- JSON decoding ---- */

struct dec {
    struct req *out;
    char *msg;
    size_t msgsz;
    size_t max_text;
};

/* Both decoders (this one and textmode.c's) report errors the same way. */
#define fail(d, c, ...) codec__fail((d)->msg, (d)->msgsz, (c), __VA_ARGS__)

enum err_code codec__fail(char *msg, size_t msgsz, enum err_code c, const char *fmt, ...)
{
    if (msg && msgsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msgsz, fmt, ap);
        va_end(ap);
    }
    return c;
}

/*
 * Refuse nesting deeper than NEST_MAX without recursion. Brackets inside
 * strings do not count. The scan must never see less depth than jansson
 * would: both agree on where strings are in any valid prefix, jansson stops
 * at the first error, and a stray closer is not allowed to lower the count
 * below zero.
 */
static bool nesting_ok(const char *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;
    int depth = 0;
    bool in_str = false;

    for (size_t i = 0; i < len; i++) {
        unsigned c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > NEST_MAX)
                return false;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return true;
}

/* A member, with null treated as absent. */
static json_t *member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

/* Escape a decoded (hence valid UTF-8) string into dst as a JSON literal;
 * returns the encoded length or 0 if it does not fit in cap - 1. */
static size_t json_encode_small(const char *s, size_t len, char *dst, size_t cap)
{
    size_t o = 0;
    char esc[6];

    if (cap < 3)
        return 0;
    dst[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') {
            size_t n = json_esc(c, esc);
            if (o + n + 2 > cap)
                return 0;
            memcpy(dst + o, esc, n);
            o += n;
        } else {
            if (o + 3 > cap)
                return 0;
            dst[o++] = (char)c;
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return o;
}

static enum err_code get_ref(struct dec *d, json_t *root)
{
    json_t *v = member(root, "ref");
    if (!v)
        return ERR_NONE;
    if (json_is_integer(v)) {
        snprintf(d->out->ref, sizeof(d->out->ref), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        return ERR_NONE;
    }
    if (!json_is_string(v))
        return fail(d, ERR_BAD_REQUEST, "field 'ref' must be a string or an integer");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    long chars = utf8_count(s, len);
    if (chars < 0 || chars > REF_CHARS_MAX ||
        !json_encode_small(s, len, d->out->ref, sizeof(d->out->ref))) {
        d->out->ref[0] = '\0';
        return fail(d, ERR_BAD_REQUEST, "field 'ref' is too long (at most %d characters)",
                    REF_CHARS_MAX);
    }
    return ERR_NONE;
}

static enum err_code get_string(struct dec *d, json_t *o, const char *key, bool required,
                                const char **s, size_t *len)
{
    json_t *v = member(o, key);
    *s = NULL;
    *len = 0;
    if (!v) {
        if (required)
            return fail(d, ERR_BAD_REQUEST, "missing field '%s'", key);
        return ERR_NONE;
    }
    if (!json_is_string(v))
        return fail(d, ERR_BAD_REQUEST, "field '%s' must be a string", key);
    *s = json_string_value(v);
    *len = json_string_length(v);
    return ERR_NONE;
}

static enum err_code get_room(struct dec *d, json_t *o)
{
    const char *s;
    size_t len;
    enum err_code rc = get_string(d, o, "room", true, &s, &len);
    if (rc)
        return rc;
    if (reserved_room(s))
        return fail(d, ERR_BAD_REQUEST,
                    "field 'room' is 'dm', which is reserved (a DM room is dm:a:b)");
    if (len > CODEC_ROOMID_MAX || !valid_room_field(s))
        return fail(d, ERR_BAD_REQUEST,
                    "field 'room' is not a valid room name (1-64 of A-Z a-z 0-9 _ . -, "
                    "or dm:a:b)");
    memcpy(d->out->room, s, len + 1);
    return ERR_NONE;
}

/* user (hello) or to (dm) */
static enum err_code get_user(struct dec *d, json_t *o, const char *key, bool required,
                              char dst[CODEC_USER_MAX + 1])
{
    const char *s;
    size_t len;
    enum err_code rc = get_string(d, o, key, required, &s, &len);
    if (rc || !s)
        return rc;
    if (len > CODEC_USER_MAX || !codec_valid_user(s))
        return fail(d, ERR_BAD_REQUEST,
                    "field '%s' is not a valid user name (1-32 of A-Z a-z 0-9 _ . -)", key);
    memcpy(dst, s, len + 1);
    return ERR_NONE;
}

static bool printable_ascii(const char *s, size_t len, bool space_ok)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c > 0x7e || c < (space_ok ? 0x20 : 0x21))
            return false;
    }
    return true;
}

static enum err_code get_token(struct dec *d, json_t *o)
{
    const char *s;
    size_t len;
    enum err_code rc = get_string(d, o, "token", false, &s, &len);
    if (rc || !s)
        return rc;
    if (len == 0 || len > CODEC_TOKEN_MAX || !printable_ascii(s, len, false))
        return fail(d, ERR_BAD_REQUEST,
                    "field 'token' must be 1-%d printable ASCII characters without spaces",
                    CODEC_TOKEN_MAX);
    d->out->token = xstrndup(s, len);
    return ERR_NONE;
}

static enum err_code get_id(struct dec *d, json_t *o)
{
    const char *s;
    size_t len;
    enum err_code rc = get_string(d, o, "id", false, &s, &len);
    if (rc || !s)
        return rc;
    if (len == 0 || len > CODEC_ID_MAX || !printable_ascii(s, len, true))
        return fail(d, ERR_BAD_REQUEST, "field 'id' must be 1-%d printable ASCII characters",
                    CODEC_ID_MAX);
    memcpy(d->out->id, s, len + 1);
    return ERR_NONE;
}

static enum err_code get_text(struct dec *d, json_t *o)
{
    const char *s;
    size_t len;
    enum err_code rc = get_string(d, o, "text", true, &s, &len);
    if (rc)
        return rc;
    if (len == 0)
        return fail(d, ERR_BAD_REQUEST, "field 'text' must not be empty");
    /* at most 4 bytes per code point: longer cannot fit, skip the count */
    long chars = len / 4 > d->max_text ? -1 : utf8_count(s, len);
    if (chars < 0 || (size_t)chars > d->max_text)
        return fail(d, ERR_TOO_LARGE, "field 'text' is longer than %zu characters",
                    d->max_text);
    d->out->text = xstrndup(s, len);
    d->out->text_len = len;
    return ERR_NONE;
}

/* since/before: a JSON integer 0..2^53. */
static enum err_code get_seq(struct dec *d, json_t *o, const char *key, bool *has, uint64_t *val)
{
    json_t *v = member(o, key);
    if (!v)
        return ERR_NONE;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > SAFE_INT_MAX)
        return fail(d, ERR_BAD_REQUEST, "field '%s' must be an integer from 0 to 2^53", key);
    *has = true;
    *val = (uint64_t)json_integer_value(v);
    return ERR_NONE;
}

/* limit: an integer >= 1; above the maximum it is clamped, not refused, so
 * a client asking for "everything" still gets the most the server gives. */
static enum err_code get_limit(struct dec *d, json_t *o)
{
    json_t *v = member(o, "limit");
    if (!v)
        return ERR_NONE;
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return fail(d, ERR_BAD_REQUEST, "field 'limit' must be an integer of at least 1");
    json_int_t n = json_integer_value(v);
    d->out->limit = n > CODEC_LIMIT_MAX ? CODEC_LIMIT_MAX : (int)n;
    return ERR_NONE;
}

static enum err_code dec_hello(struct dec *d, json_t *o)
{
    enum err_code rc = get_user(d, o, "user", false, d->out->user);
    if (!rc)
        rc = get_token(d, o);
    if (!rc && !d->out->user[0] && !d->out->token)
        rc = fail(d, ERR_BAD_REQUEST, "hello needs field 'user' or field 'token'");
    return rc;
}

static enum err_code dec_join(struct dec *d, json_t *o)
{
    enum err_code rc = get_room(d, o);
    if (!rc)
        rc = get_seq(d, o, "since", &d->out->has_since, &d->out->since);
    if (!rc)
        rc = get_limit(d, o);
    return rc;
}

static enum err_code dec_room_only(struct dec *d, json_t *o)
{
    return get_room(d, o);
}

static enum err_code dec_send(struct dec *d, json_t *o)
{
    enum err_code rc = get_room(d, o);
    if (!rc)
        rc = get_id(d, o);
    if (!rc)
        rc = get_text(d, o);
    return rc;
}

static enum err_code dec_dm(struct dec *d, json_t *o)
{
    enum err_code rc = get_user(d, o, "to", true, d->out->to);
    if (!rc)
        rc = get_id(d, o);
    if (!rc)
        rc = get_text(d, o);
    return rc;
}

static enum err_code dec_history(struct dec *d, json_t *o)
{
    enum err_code rc = get_room(d, o);
    if (!rc)
        rc = get_seq(d, o, "before", &d->out->has_before, &d->out->before);
    if (!rc)
        rc = get_limit(d, o);
    return rc;
}

static enum err_code dec_nothing(struct dec *d, json_t *o)
{
    (void)d;
    (void)o;
    return ERR_NONE;
}

static const struct {
    const char *name;
    enum req_type type;
    enum err_code (*fn)(struct dec *d, json_t *o);
} json_types[] = {
    {"hello", REQ_HELLO, dec_hello},       {"join", REQ_JOIN, dec_join},
    {"leave", REQ_LEAVE, dec_room_only},   {"send", REQ_SEND, dec_send},
    {"dm", REQ_DM, dec_dm},                {"history", REQ_HISTORY, dec_history},
    {"who", REQ_WHO, dec_room_only},       {"rooms", REQ_ROOMS, dec_nothing},
    {"typing", REQ_TYPING, dec_room_only}, {"ping", REQ_PING, dec_nothing},
};

enum err_code codec_decode_json(const char *buf, size_t len, const struct codec_limits *lim,
                                struct req *out, char *msgbuf, size_t msgsz)
{
    struct dec d = {
        .out = out,
        .msg = msgbuf,
        .msgsz = msgsz,
        .max_text = lim && lim->max_text ? lim->max_text : DEFAULT_MAX_TEXT,
    };
    json_t *root = NULL;
    json_error_t jerr;
    enum err_code rc;
    const char *type;
    size_t tlen;

    memset(out, 0, sizeof(*out));
    out->limit = CODEC_LIMIT_DEFAULT;
    if (msgbuf && msgsz)
        msgbuf[0] = '\0';
    if (!buf)
        buf = "";

    if (!nesting_ok(buf, len))
        return fail(&d, ERR_BAD_JSON, "JSON nested deeper than %d levels", NEST_MAX);
    /* JSON_DECODE_ANY so that a scalar top level gets our clearer message */
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root)
        return fail(&d, ERR_BAD_JSON, "invalid JSON: %s", jerr.text);
    if (!json_is_object(root)) {
        rc = fail(&d, ERR_BAD_JSON, "expected a JSON object");
        goto out_decref;
    }
    rc = get_ref(&d, root);
    if (rc)
        goto out_decref;

    rc = get_string(&d, root, "type", true, &type, &tlen);
    if (rc)
        goto out_decref;
    rc = ERR_UNKNOWN_TYPE;
    for (size_t i = 0; i < ARRAY_LEN(json_types); i++) {
        if (strcmp(type, json_types[i].name) == 0) {
            out->type = json_types[i].type;
            rc = json_types[i].fn(&d, root);
            goto out_decref;
        }
    }
    /* the type is echoed only when short and plain, so the message stays
     * readable whatever the client sent */
    if (tlen <= 32 && printable_ascii(type, tlen, false))
        fail(&d, rc, "unknown type '%s'", type);
    else
        fail(&d, rc, "unknown type");

out_decref:
    json_decref(root);
    if (rc != ERR_NONE)
        req_release(out); /* on error the caller owns nothing but out->ref */
    return rc;
}

/* ---- encoding ---- */

/* Payload bytes for a message object, before escaping grows it. */
static size_t message_hint(const struct chat_msg *m)
{
    return 160 + m->text_len;
}

static void put_message_json(struct msgbuf *b, const struct chat_msg *m)
{
    PUT_LIT(b, "{\"type\":\"message\",\"room\":");
    put_json_cstr(b, m->room);
    PUT_LIT(b, ",\"seq\":");
    put_u64(b, m->seq);
    PUT_LIT(b, ",\"from\":");
    put_json_cstr(b, m->from);
    PUT_LIT(b, ",\"text\":");
    put_json_str(b, m->text ? m->text : "", m->text ? m->text_len : 0);
    PUT_LIT(b, ",\"ts\":");
    put_i64(b, m->ts);
    if (m->id && *m->id) {
        PUT_LIT(b, ",\"id\":");
        put_json_cstr(b, m->id);
    }
    mb_putc(b, '}');
}

msg_t *codec_message_parts(const struct chat_msg *m, size_t *seq_at)
{
    struct msgbuf b;
    mb_init(&b, message_hint(m));
    PUT_LIT(&b, "{\"type\":\"message\",\"room\":");
    put_json_cstr(&b, m->room);
    PUT_LIT(&b, ",\"seq\":");
    *seq_at = b.len;
    PUT_LIT(&b, ",\"from\":");
    put_json_cstr(&b, m->from);
    PUT_LIT(&b, ",\"text\":");
    put_json_str(&b, m->text ? m->text : "", m->text ? m->text_len : 0);
    PUT_LIT(&b, ",\"ts\":");
    put_i64(&b, m->ts);
    if (m->id && *m->id) {
        PUT_LIT(&b, ",\"id\":");
        put_json_cstr(&b, m->id);
    }
    mb_putc(&b, '}');
    return mb_finish(&b);
}

/*
 * "[general #42 12:03:07] alice: hello", "[dm alice→bob #3 12:00:00]
 * alice: hi" (from → the other member), and for a text starting with "/me "
 * the action form "[general #42 12:03:07] * alice waves".
 */
static void put_message_text(struct msgbuf *b, const struct chat_msg *m)
{
    char ua[CODEC_USER_MAX + 1], ub[CODEC_USER_MAX + 1];
    const char *text = m->text ? m->text : "";
    size_t tlen = m->text ? m->text_len : 0;

    mb_putc(b, '[');
    if (m->from && codec_parse_dm(m->room, ua, ub) &&
        (strcmp(m->from, ua) == 0 || strcmp(m->from, ub) == 0)) {
        PUT_LIT(b, "dm ");
        put_text_cstr(b, m->from);
        PUT_LIT(b, "\xe2\x86\x92"); /* → */
        put_text_cstr(b, strcmp(m->from, ua) == 0 ? ub : ua);
    } else {
        put_text_cstr(b, m->room);
    }
    PUT_LIT(b, " #");
    put_u64(b, m->seq);
    mb_putc(b, ' ');
    put_hms(b, m->ts);
    PUT_LIT(b, "] ");
    if (tlen >= 4 && memcmp(text, "/me ", 4) == 0) {
        PUT_LIT(b, "* ");
        put_text_cstr(b, m->from);
        mb_putc(b, ' ');
        put_text_safe(b, text + 4, tlen - 4);
    } else {
        put_text_cstr(b, m->from);
        PUT_LIT(b, ": ");
        put_text_safe(b, text, tlen);
    }
}

static void put_messages_json(struct msgbuf *b, const struct chat_msg *msgs, size_t n)
{
    mb_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            mb_putc(b, ',');
        put_message_json(b, &msgs[i]);
    }
    mb_putc(b, ']');
}

static void put_messages_text(struct msgbuf *b, const struct chat_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mb_putc(b, '\n');
        put_message_text(b, &msgs[i]);
    }
}

static size_t messages_hint(const struct chat_msg *msgs, size_t n)
{
    size_t h = 128;
    for (size_t i = 0; i < n; i++)
        h += message_hint(&msgs[i]);
    return h;
}

static void put_names_json(struct msgbuf *b, const char *const *names, size_t n)
{
    mb_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            mb_putc(b, ',');
        put_json_cstr(b, names[i]);
    }
    mb_putc(b, ']');
}

static void put_names_text(struct msgbuf *b, const char *const *names, size_t n)
{
    if (n == 0)
        PUT_LIT(b, "nobody");
    for (size_t i = 0; i < n; i++) {
        if (i)
            PUT_LIT(b, ", ");
        put_text_cstr(b, names[i]);
    }
}

msg_t *codec_message(enum codec_fmt f, const struct chat_msg *m)
{
    struct msgbuf b;
    mb_init(&b, message_hint(m));
    if (f == FMT_TEXT)
        put_message_text(&b, m);
    else
        put_message_json(&b, m);
    return mb_finish(&b);
}

msg_t *codec_presence(enum codec_fmt f, const char *room, const char *user, bool join)
{
    struct msgbuf b;
    mb_init(&b, 128);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* ");
        put_text_cstr(&b, user);
        if (join)
            PUT_LIT(&b, " joined ");
        else
            PUT_LIT(&b, " left ");
        put_text_cstr(&b, room);
    } else {
        PUT_LIT(&b, "{\"type\":\"presence\",\"room\":");
        put_json_cstr(&b, room);
        PUT_LIT(&b, ",\"user\":");
        put_json_cstr(&b, user);
        if (join)
            PUT_LIT(&b, ",\"event\":\"join\"}");
        else
            PUT_LIT(&b, ",\"event\":\"leave\"}");
    }
    return mb_finish(&b);
}

msg_t *codec_typing(enum codec_fmt f, const char *room, const char *user)
{
    struct msgbuf b;
    mb_init(&b, 128);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "~ ");
        put_text_cstr(&b, user);
        PUT_LIT(&b, " is typing in ");
        put_text_cstr(&b, room);
    } else {
        PUT_LIT(&b, "{\"type\":\"typing\",\"room\":");
        put_json_cstr(&b, room);
        PUT_LIT(&b, ",\"user\":");
        put_json_cstr(&b, user);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_error(enum codec_fmt f, enum err_code code, const char *message, const char *ref,
                   int64_t retry_after_ms)
{
    struct msgbuf b;
    mb_init(&b, 128 + (message ? strlen(message) : 0));
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "! ");
        mb_puts(&b, codec_err_name(code));
        PUT_LIT(&b, ": ");
        put_text_cstr(&b, message);
        if (retry_after_ms >= 0) {
            PUT_LIT(&b, " (retry in ");
            put_i64(&b, retry_after_ms);
            PUT_LIT(&b, " ms)");
        }
    } else {
        PUT_LIT(&b, "{\"type\":\"error\",\"code\":\"");
        mb_puts(&b, codec_err_name(code));
        PUT_LIT(&b, "\",\"message\":");
        put_json_cstr(&b, message);
        put_ref(&b, ref);
        if (retry_after_ms >= 0) {
            PUT_LIT(&b, ",\"retry_after_ms\":");
            put_i64(&b, retry_after_ms);
        }
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_welcome(enum codec_fmt f, const char *user, const char *session, const char *ref,
                     size_t max_text, size_t max_frame, double rate, double burst)
{
    struct msgbuf b;
    mb_init(&b, 256);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* welcome ");
        put_text_cstr(&b, user);
        PUT_LIT(&b, " (protocol 1) \xe2\x80\x94 type /help"); /* em dash */
    } else {
        PUT_LIT(&b, "{\"type\":\"welcome\",\"user\":");
        put_json_cstr(&b, user);
        PUT_LIT(&b, ",\"session\":");
        put_json_cstr(&b, session);
        PUT_LIT(&b, ",\"protocol\":1,\"limits\":{\"max_text\":");
        put_u64(&b, max_text);
        PUT_LIT(&b, ",\"max_frame\":");
        put_u64(&b, max_frame);
        PUT_LIT(&b, ",\"rate\":");
        put_double(&b, rate);
        PUT_LIT(&b, ",\"burst\":");
        put_double(&b, burst);
        mb_putc(&b, '}');
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_joined(enum codec_fmt f, const char *room, uint64_t seq, const char *const *members,
                    size_t nmembers, const struct chat_msg *hist, size_t nhist, const char *ref)
{
    struct msgbuf b;
    mb_init(&b, messages_hint(hist, nhist) + 40 * nmembers);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* joined ");
        put_text_cstr(&b, room);
        PUT_LIT(&b, " (seq ");
        put_u64(&b, seq);
        PUT_LIT(&b, ", members: ");
        put_names_text(&b, members, nmembers);
        mb_putc(&b, ')');
        put_messages_text(&b, hist, nhist);
    } else {
        PUT_LIT(&b, "{\"type\":\"joined\",\"room\":");
        put_json_cstr(&b, room);
        PUT_LIT(&b, ",\"seq\":");
        put_u64(&b, seq);
        PUT_LIT(&b, ",\"members\":");
        put_names_json(&b, members, nmembers);
        PUT_LIT(&b, ",\"history\":");
        put_messages_json(&b, hist, nhist);
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_left(enum codec_fmt f, const char *room, const char *ref)
{
    struct msgbuf b;
    mb_init(&b, 128);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* left ");
        put_text_cstr(&b, room);
    } else {
        PUT_LIT(&b, "{\"type\":\"left\",\"room\":");
        put_json_cstr(&b, room);
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_ack(enum codec_fmt f, const char *room, uint64_t seq, const char *id,
                 const char *ref)
{
    struct msgbuf b;
    mb_init(&b, 256);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* ack ");
        put_text_cstr(&b, room);
        PUT_LIT(&b, " #");
        put_u64(&b, seq);
        if (id && *id) {
            PUT_LIT(&b, " id ");
            put_text_cstr(&b, id);
        }
    } else {
        PUT_LIT(&b, "{\"type\":\"ack\",\"room\":");
        put_json_cstr(&b, room);
        PUT_LIT(&b, ",\"seq\":");
        put_u64(&b, seq);
        if (id && *id) {
            PUT_LIT(&b, ",\"id\":");
            put_json_cstr(&b, id);
        }
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_history(enum codec_fmt f, const char *room, const struct chat_msg *msgs, size_t n,
                     bool more, const char *ref)
{
    struct msgbuf b;
    mb_init(&b, messages_hint(msgs, n));
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* history ");
        put_text_cstr(&b, room);
        PUT_LIT(&b, ": ");
        if (n == 0) {
            PUT_LIT(&b, "no messages");
        } else {
            put_u64(&b, n);
            if (n == 1)
                PUT_LIT(&b, " message");
            else
                PUT_LIT(&b, " messages");
        }
        if (more)
            PUT_LIT(&b, " (older messages exist)");
        put_messages_text(&b, msgs, n);
    } else {
        PUT_LIT(&b, "{\"type\":\"history\",\"room\":");
        put_json_cstr(&b, room);
        PUT_LIT(&b, ",\"messages\":");
        put_messages_json(&b, msgs, n);
        if (more)
            PUT_LIT(&b, ",\"more\":true");
        else
            PUT_LIT(&b, ",\"more\":false");
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_members(enum codec_fmt f, const char *room, const char *const *users, size_t n,
                     const char *ref)
{
    struct msgbuf b;
    mb_init(&b, 128 + 40 * n);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* members of ");
        put_text_cstr(&b, room);
        PUT_LIT(&b, ": ");
        put_names_text(&b, users, n);
    } else {
        PUT_LIT(&b, "{\"type\":\"members\",\"room\":");
        put_json_cstr(&b, room);
        PUT_LIT(&b, ",\"users\":");
        put_names_json(&b, users, n);
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_rooms(enum codec_fmt f, const struct room_info *rooms, size_t n, const char *ref)
{
    struct msgbuf b;
    mb_init(&b, 128 + 100 * n);
    if (f == FMT_TEXT) {
        if (n == 0)
            PUT_LIT(&b, "* no rooms");
        else
            PUT_LIT(&b, "* rooms:");
        for (size_t i = 0; i < n; i++) {
            PUT_LIT(&b, "\n  ");
            put_text_cstr(&b, rooms[i].name);
            PUT_LIT(&b, " (");
            put_u64(&b, rooms[i].members);
            if (rooms[i].members == 1)
                PUT_LIT(&b, " member, seq ");
            else
                PUT_LIT(&b, " members, seq ");
            put_u64(&b, rooms[i].seq);
            mb_putc(&b, ')');
        }
    } else {
        PUT_LIT(&b, "{\"type\":\"rooms\",\"rooms\":[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                mb_putc(&b, ',');
            PUT_LIT(&b, "{\"name\":");
            put_json_cstr(&b, rooms[i].name);
            PUT_LIT(&b, ",\"members\":");
            put_u64(&b, rooms[i].members);
            PUT_LIT(&b, ",\"seq\":");
            put_u64(&b, rooms[i].seq);
            mb_putc(&b, '}');
        }
        mb_putc(&b, ']');
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}

msg_t *codec_pong(enum codec_fmt f, const char *ref)
{
    struct msgbuf b;
    mb_init(&b, 64);
    if (f == FMT_TEXT) {
        PUT_LIT(&b, "* pong");
    } else {
        PUT_LIT(&b, "{\"type\":\"pong\"");
        put_ref(&b, ref);
        mb_putc(&b, '}');
    }
    return mb_finish(&b);
}
