/*
 * test_codec — JSON-mode decoding (data-driven from tests/fixtures/, plus
 * field-by-field checks), name validation, and every encoder's JSON output
 * parsed back with jansson.
 *
 * Fixtures: tests/fixtures/valid/<type>.<case>.json must decode to request
 * <type>; tests/fixtures/invalid/<code>.<case>.json must fail with error
 * <code>, and a case named "field-<name>-..." must name '<name>' in the
 * message. The directory is $PARLEY_SOURCE/tests/fixtures, else found from
 * __FILE__.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec.h"
#include "msg.h"

static const struct codec_limits lim = {.max_text = 4000};

/* ---- helpers ---- */

static void str_copy(char *dst, const char *src, size_t sz)
{
    size_t n = strlen(src);
    cr_assert_lt(n, sz);
    memcpy(dst, src, n + 1);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* out = a + b + "tests/fixtures" if that is a directory */
static bool try_dir(char *out, size_t outsz, const char *a, const char *b)
{
    int n = snprintf(out, outsz, "%s%stests/fixtures", a, b);
    return n > 0 && (size_t)n < outsz && is_dir(out);
}

/* tests/fixtures, from $PARLEY_SOURCE or from this file's path (relative to
 * the cwd, or to the build root meson compiles in: an ancestor of the test
 * binary's directory). */
static void fixtures_dir(char *out, size_t outsz)
{
    const char *src = getenv("PARLEY_SOURCE");
    if (src && *src && try_dir(out, outsz, src, "/"))
        return;
    char here[PATH_MAX];
    str_copy(here, __FILE__, sizeof(here));
    char *slash = strstr(here, "tests/unit/test_codec.c");
    cr_assert_not_null(slash, "unexpected __FILE__ %s", __FILE__);
    *slash = '\0';
    if (try_dir(out, outsz, "", here))
        return;

    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    cr_assert(n > 0);
    exe[n] = '\0';
    for (int up = 0; up < 4; up++) {
        char *s = strrchr(exe, '/');
        if (!s)
            break;
        s[1] = '\0';
        if (try_dir(out, outsz, exe, here))
            return;
        *s = '\0';
    }
    cr_assert_fail("cannot find tests/fixtures; set PARLEY_SOURCE");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

static const char *type_name(enum req_type t)
{
    static const char *const names[] = {"hello", "join",    "leave", "send",   "dm",   "history",
                                        "who",   "rooms",   "typing", "ping", "help", "quit"};
    return names[t];
}

static enum err_code decode(const char *s, struct req *r, char *msg)
{
    return codec_decode_json(s, strlen(s), &lim, r, msg, 256);
}

/* Payload of a frame as a NUL-terminated string (the caller frees it). */
static char *payload_str(const msg_t *m)
{
    size_t n;
    const unsigned char *p = msg_payload(m, &n);
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Parse a frame's payload; asserts it is one JSON object. */
static json_t *parse_frame(msg_t *m)
{
    size_t n;
    const unsigned char *p = msg_payload(m, &n);
    json_error_t e;
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(j, "frame is not JSON (%s): %.*s", e.text, (int)n, p);
    cr_assert(json_is_object(j));
    return j;
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_string(v), "field %s is not a string", k);
    return json_string_value(v);
}

static json_int_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_integer(v), "field %s is not an integer", k);
    return json_integer_value(v);
}

/* ---- fixtures ---- */

static int run_fixture_dir(const char *sub, bool valid)
{
    char dir[PATH_MAX], path[PATH_MAX + 256];
    char base[PATH_MAX - 16];
    fixtures_dir(base, sizeof(base));
    cr_assert(snprintf(dir, sizeof(dir), "%s/%s", base, sub) > 0);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir %s", dir);
    struct dirent *de;
    int count = 0;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        size_t nl = strlen(name);
        if (nl < 6 || strcmp(name + nl - 5, ".json") != 0)
            continue;
        cr_assert_lt((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name), sizeof(path));
        size_t len;
        char *buf = read_file(path, &len);
        struct req r;
        char msg[256];
        enum err_code rc = codec_decode_json(buf, len, &lim, &r, msg, sizeof(msg));
        const char *dot = strchr(name, '.');
        cr_assert_not_null(dot, "fixture name %s has no <prefix>.", name);
        size_t pl = (size_t)(dot - name);
        if (valid) {
            cr_expect_eq(rc, ERR_NONE, "%s: expected success, got %s: %s", name,
                         codec_err_name(rc), msg);
            if (rc == ERR_NONE) {
                cr_expect(strlen(type_name(r.type)) == pl &&
                              strncmp(type_name(r.type), name, pl) == 0,
                          "%s: decoded as %s", name, type_name(r.type));
            }
        } else {
            const char *got = codec_err_name(rc);
            cr_expect(rc != ERR_NONE && strlen(got) == pl && strncmp(got, name, pl) == 0,
                      "%s: expected %.*s, got %s (%s)", name, (int)pl, name, got, msg);
            cr_expect(msg[0] != '\0', "%s: empty error message", name);
            cr_expect_null(r.text, "%s: text kept after an error", name);
            cr_expect_null(r.token, "%s: token kept after an error", name);
            if (strncmp(dot + 1, "field-", 6) == 0) {
                char field[64] = "'";
                const char *f = dot + 7;
                size_t fl = strcspn(f, "-.");
                strncat(field, f, fl);
                strcat(field, "'");
                cr_expect(strstr(msg, field), "%s: message '%s' does not name %s", name, msg,
                          field);
            }
        }
        req_release(&r);
        free(buf);
        count++;
    }
    closedir(d);
    return count;
}

Test(fixtures, valid)
{
    cr_assert_gt(run_fixture_dir("valid", true), 30);
}

Test(fixtures, invalid)
{
    cr_assert_gt(run_fixture_dir("invalid", false), 100);
}

/* ---- decoding: every request type with all its fields ---- */

Test(decode, hello_user_and_token)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"hello\",\"user\":\"alice\",\"ref\":\"h\"}", &r, msg),
                 ERR_NONE);
    cr_expect_eq(r.type, REQ_HELLO);
    cr_expect_str_eq(r.user, "alice");
    cr_expect_null(r.token);
    cr_expect_str_eq(r.ref, "\"h\"");
    req_release(&r);

    cr_assert_eq(decode("{\"type\":\"hello\",\"token\":\"a.b.c\"}", &r, msg), ERR_NONE);
    cr_expect_str_eq(r.user, "");
    cr_expect_str_eq(r.token, "a.b.c");
    req_release(&r);
    cr_expect_null(r.token, "req_release clears the pointer");
    req_release(&r); /* and is idempotent */
}

Test(decode, join_all_fields)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"join\",\"room\":\"general\",\"since\":41,\"limit\":7,"
                        "\"ref\":12}",
                        &r, msg),
                 ERR_NONE);
    cr_expect_eq(r.type, REQ_JOIN);
    cr_expect_str_eq(r.room, "general");
    cr_expect(r.has_since);
    cr_expect_eq(r.since, 41);
    cr_expect_eq(r.limit, 7);
    cr_expect_str_eq(r.ref, "12");
    cr_expect_not(r.has_before);
    req_release(&r);
}

Test(decode, join_defaults)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"join\",\"room\":\"dm:alice:bob\"}", &r, msg), ERR_NONE);
    cr_expect_str_eq(r.room, "dm:alice:bob");
    cr_expect_not(r.has_since);
    cr_expect_eq(r.limit, CODEC_LIMIT_DEFAULT);
    cr_expect_str_eq(r.ref, "");
    req_release(&r);
}

Test(decode, limit_bounds)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"history\",\"room\":\"a\",\"limit\":200}", &r, msg),
                 ERR_NONE);
    cr_expect_eq(r.limit, 200);
    cr_assert_eq(decode("{\"type\":\"history\",\"room\":\"a\",\"limit\":201}", &r, msg),
                 ERR_NONE);
    cr_expect_eq(r.limit, 200, "clamped");
    cr_assert_eq(decode("{\"type\":\"history\",\"room\":\"a\",\"limit\":9223372036854775807}",
                        &r, msg),
                 ERR_NONE);
    cr_expect_eq(r.limit, 200, "clamped");
    cr_assert_eq(decode("{\"type\":\"history\",\"room\":\"a\",\"limit\":1}", &r, msg), ERR_NONE);
    cr_expect_eq(r.limit, 1);
    cr_expect_eq(decode("{\"type\":\"history\",\"room\":\"a\",\"limit\":0}", &r, msg),
                 ERR_BAD_REQUEST);
}

Test(decode, seq_bounds)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"join\",\"room\":\"a\",\"since\":0}", &r, msg), ERR_NONE);
    cr_expect(r.has_since);
    cr_expect_eq(r.since, 0);
    cr_assert_eq(decode("{\"type\":\"join\",\"room\":\"a\",\"since\":9007199254740992}", &r,
                        msg),
                 ERR_NONE);
    cr_expect_eq(r.since, 9007199254740992ULL);
    cr_expect_eq(decode("{\"type\":\"join\",\"room\":\"a\",\"since\":9007199254740993}", &r,
                        msg),
                 ERR_BAD_REQUEST);
    cr_expect(strstr(msg, "'since'"));
    cr_expect_eq(decode("{\"type\":\"join\",\"room\":\"a\",\"since\":-1}", &r, msg),
                 ERR_BAD_REQUEST);
    cr_expect_eq(decode("{\"type\":\"join\",\"room\":\"a\",\"since\":3.0}", &r, msg),
                 ERR_BAD_REQUEST);
    cr_assert_eq(decode("{\"type\":\"history\",\"room\":\"a\",\"before\":99}", &r, msg),
                 ERR_NONE);
    cr_expect(r.has_before);
    cr_expect_eq(r.before, 99);
    cr_expect_not(r.has_since);
}

Test(decode, leave_who_typing)
{
    static const struct {
        const char *type;
        enum req_type t;
    } cases[] = {{"leave", REQ_LEAVE}, {"who", REQ_WHO}, {"typing", REQ_TYPING}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char in[128], msg[256];
        struct req r;
        snprintf(in, sizeof(in), "{\"type\":\"%s\",\"room\":\"r.1_-X\",\"ref\":\"q\"}",
                 cases[i].type);
        cr_assert_eq(decode(in, &r, msg), ERR_NONE, "%s: %s", cases[i].type, msg);
        cr_expect_eq(r.type, cases[i].t);
        cr_expect_str_eq(r.room, "r.1_-X");
        cr_expect_str_eq(r.ref, "\"q\"");
        req_release(&r);
        snprintf(in, sizeof(in), "{\"type\":\"%s\"}", cases[i].type);
        cr_expect_eq(decode(in, &r, msg), ERR_BAD_REQUEST);
        cr_expect_str_eq(msg, "missing field 'room'");
    }
}

Test(decode, send_all_fields)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"send\",\"room\":\"general\",\"text\":\"h\\u00e9\\n\\\"\","
                        "\"id\":\"c 1\",\"ref\":\"s1\"}",
                        &r, msg),
                 ERR_NONE);
    cr_expect_eq(r.type, REQ_SEND);
    cr_expect_str_eq(r.room, "general");
    cr_expect_str_eq(r.text, "h\xc3\xa9\n\"");
    cr_expect_eq(r.text_len, 5);
    cr_expect_str_eq(r.id, "c 1");
    cr_expect_str_eq(r.ref, "\"s1\"");
    cr_expect_not(r.me);
    req_release(&r);
}

Test(decode, dm_all_fields)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"dm\",\"to\":\"bob\",\"text\":\"psst\",\"id\":\"d9\","
                        "\"ref\":-4}",
                        &r, msg),
                 ERR_NONE);
    cr_expect_eq(r.type, REQ_DM);
    cr_expect_str_eq(r.to, "bob");
    cr_expect_str_eq(r.text, "psst");
    cr_expect_str_eq(r.id, "d9");
    cr_expect_str_eq(r.ref, "-4");
    cr_expect_str_eq(r.room, "");
    req_release(&r);
}

Test(decode, history_rooms_ping)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"history\",\"room\":\"x\",\"before\":10,\"limit\":3}", &r,
                        msg),
                 ERR_NONE);
    cr_expect_eq(r.type, REQ_HISTORY);
    cr_expect_eq(r.before, 10);
    cr_expect_eq(r.limit, 3);
    cr_assert_eq(decode("{\"type\":\"rooms\",\"room\":5}", &r, msg), ERR_NONE,
                 "fields a type does not use are ignored");
    cr_expect_eq(r.type, REQ_ROOMS);
    cr_assert_eq(decode("{\"type\":\"ping\"}", &r, msg), ERR_NONE);
    cr_expect_eq(r.type, REQ_PING);
}

Test(decode, surrogate_pair_becomes_utf8)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"send\",\"room\":\"a\",\"text\":\"\\ud83d\\ude00\"}", &r,
                        msg),
                 ERR_NONE);
    cr_expect_eq(r.text_len, 4);
    cr_expect_str_eq(r.text, "\xf0\x9f\x98\x80");
    req_release(&r);
}

Test(decode, text_limit_counts_code_points)
{
    struct codec_limits small = {.max_text = 5};
    struct req r;
    char msg[256];
    const char *ok = "{\"type\":\"send\",\"room\":\"a\",\"text\":\"\xc3\xa9\xc3\xa9\xc3\xa9"
                     "\xf0\x9f\x98\x80x\"}";
    cr_assert_eq(codec_decode_json(ok, strlen(ok), &small, &r, msg, sizeof(msg)), ERR_NONE, "%s",
                 msg);
    cr_expect_eq(r.text_len, 11);
    req_release(&r);
    const char *big = "{\"type\":\"send\",\"room\":\"a\",\"text\":\"abcdef\"}";
    cr_expect_eq(codec_decode_json(big, strlen(big), &small, &r, msg, sizeof(msg)),
                 ERR_TOO_LARGE);
    cr_expect(strstr(msg, "5 characters"), "%s", msg);
    cr_expect_null(r.text);
    /* NULL limits and 0 mean the default */
    cr_expect_eq(codec_decode_json(big, strlen(big), NULL, &r, msg, sizeof(msg)), ERR_NONE);
    req_release(&r);
}

Test(decode, ref_is_echoed_on_errors)
{
    struct req r;
    char msg[256];
    cr_expect_eq(decode("{\"type\":\"join\",\"room\":\"bad room\",\"ref\":\"r9\"}", &r, msg),
                 ERR_BAD_REQUEST);
    cr_expect_str_eq(r.ref, "\"r9\"");
    cr_expect_eq(decode("{\"type\":\"nope\",\"ref\":5}", &r, msg), ERR_UNKNOWN_TYPE);
    cr_expect_str_eq(r.ref, "5");
    cr_expect_str_eq(msg, "unknown type 'nope'");
    cr_expect_eq(decode("{\"ref\":\"x\"}", &r, msg), ERR_BAD_REQUEST);
    cr_expect_str_eq(r.ref, "\"x\"");
    cr_expect_str_eq(msg, "missing field 'type'");
    cr_expect_eq(decode("{\"type\":4,\"ref\":\"x\"}", &r, msg), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "field 'type' must be a string");
    cr_expect_eq(decode("{\"type\":\"send\",\"room\":\"a\",\"text\":\"\",\"ref\":1}", &r, msg),
                 ERR_BAD_REQUEST);
    cr_expect_str_eq(r.ref, "1");
    cr_expect_str_eq(msg, "field 'text' must not be empty");
}

Test(decode, ref_encoding)
{
    struct req r;
    char msg[256];
    cr_assert_eq(decode("{\"type\":\"ping\",\"ref\":\"a\\\"b\\\\c\\u0001\\u00e9\"}", &r, msg),
                 ERR_NONE);
    cr_expect_str_eq(r.ref, "\"a\\\"b\\\\c\\u0001\xc3\xa9\"");
    /* the stored form is itself valid JSON that decodes to the same string */
    json_t *j = json_loads(r.ref, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(j);
    cr_expect_str_eq(json_string_value(j), "a\"b\\c\x01\xc3\xa9");
    json_decref(j);
    cr_assert_eq(decode("{\"type\":\"ping\",\"ref\":-9223372036854775808}", &r, msg), ERR_NONE);
    cr_expect_str_eq(r.ref, "-9223372036854775808");
    /* a ref that is not usable is not echoed */
    cr_expect_eq(decode("{\"type\":\"ping\",\"ref\":{\"a\":1}}", &r, msg), ERR_BAD_REQUEST);
    cr_expect_str_eq(r.ref, "");
    cr_expect_str_eq(msg, "field 'ref' must be a string or an integer");
    /* 64 control characters: 64 code points, but 386 bytes once encoded */
    char in[512] = "{\"type\":\"ping\",\"ref\":\"";
    for (int i = 0; i < 64; i++)
        strcat(in, "\\u0002");
    strcat(in, "\"}");
    cr_expect_eq(decode(in, &r, msg), ERR_BAD_REQUEST);
    cr_expect_str_eq(r.ref, "");
}

Test(decode, error_clears_allocations)
{
    struct req r;
    char msg[256];
    /* text is decoded after id, token after user: a later failure must free them */
    cr_expect_eq(decode("{\"type\":\"hello\",\"token\":\"abc\",\"user\":\"x y\"}", &r, msg),
                 ERR_BAD_REQUEST);
    cr_expect_null(r.token);
    cr_expect_null(r.text);
}

Test(decode, messages_and_null_buffers)
{
    struct req r;
    cr_expect_eq(codec_decode_json("[]", 2, &lim, &r, NULL, 0), ERR_BAD_JSON);
    char msg[256];
    cr_expect_eq(decode("[1]", &r, msg), ERR_BAD_JSON);
    cr_expect_str_eq(msg, "expected a JSON object");
    cr_expect_eq(decode("{\"type\":\"ping\"", &r, msg), ERR_BAD_JSON);
    cr_expect(strncmp(msg, "invalid JSON: ", 14) == 0, "%s", msg);
    cr_expect_eq(decode("{\"type\":\"ping\",\"type\":\"ping\"}", &r, msg), ERR_BAD_JSON);
    cr_expect(strstr(msg, "duplicate"), "%s", msg);
    cr_expect_eq(codec_decode_json(NULL, 0, &lim, &r, msg, sizeof(msg)), ERR_BAD_JSON);
    /* a tiny message buffer truncates but stays terminated */
    char tiny[8];
    cr_expect_eq(codec_decode_json("{}", 2, &lim, &r, tiny, sizeof(tiny)), ERR_BAD_REQUEST);
    cr_expect_eq(strlen(tiny), 7);
}

Test(decode, nesting_limit_exact)
{
    struct req r;
    char msg[256];
    char buf[256];
    /* the object itself is level 1: 31 more arrays is depth 32 */
    for (int depth = 31; depth <= 32; depth++) {
        int n = snprintf(buf, sizeof(buf), "{\"type\":\"ping\",\"x\":");
        for (int i = 0; i < depth; i++)
            buf[n++] = '[';
        for (int i = 0; i < depth; i++)
            buf[n++] = ']';
        buf[n++] = '}';
        buf[n] = '\0';
        enum err_code rc = decode(buf, &r, msg);
        cr_expect_eq(rc, depth == 31 ? ERR_NONE : ERR_BAD_JSON, "depth %d: %s", depth + 1, msg);
    }
    cr_expect(strstr(msg, "nested deeper than 32"), "%s", msg);
    /* a stray closer must not buy extra depth */
    char odd[128] = "]]]]";
    for (int i = 0; i < 33; i++)
        strcat(odd, "[");
    cr_expect_eq(decode(odd, &r, msg), ERR_BAD_JSON);
    cr_expect(strstr(msg, "nested"), "%s", msg);
}

Test(decode, deep_nesting_huge)
{
    /* a million levels: refused by the scan, jansson never recurses */
    size_t n = 1000000;
    char *buf = malloc(n);
    memset(buf, '[', n);
    struct req r;
    char msg[256];
    cr_expect_eq(codec_decode_json(buf, n, &lim, &r, msg, sizeof(msg)), ERR_BAD_JSON);
    free(buf);
}

/* ---- names ---- */

Test(names, users_and_rooms)
{
    cr_expect(codec_valid_user("a"));
    cr_expect(codec_valid_user("Az09_.-"));
    cr_expect(codec_valid_user("abcdefghijklmnopqrstuvwxyz012345"));
    cr_expect_not(codec_valid_user("abcdefghijklmnopqrstuvwxyz0123456"));
    cr_expect_not(codec_valid_user(""));
    cr_expect_not(codec_valid_user(NULL));
    cr_expect_not(codec_valid_user("a b"));
    cr_expect_not(codec_valid_user("a:b"));
    cr_expect_not(codec_valid_user("\xc3\xa9"));
    char room64[65], room65[66];
    memset(room64, 'r', 64);
    room64[64] = '\0';
    memset(room65, 'r', 65);
    room65[65] = '\0';
    cr_expect(codec_valid_room(room64));
    cr_expect_not(codec_valid_room(room65));
    cr_expect_not(codec_valid_room("dm:alice:bob"), "public rooms only");
    cr_expect_not(codec_valid_room("#x"));
}

Test(names, dm_rooms)
{
    char room[CODEC_ROOMID_MAX + 1], a[CODEC_USER_MAX + 1], b[CODEC_USER_MAX + 1];
    cr_assert(codec_dm_room("bob", "alice", room));
    cr_expect_str_eq(room, "dm:alice:bob");
    cr_assert(codec_dm_room("alice", "bob", room));
    cr_expect_str_eq(room, "dm:alice:bob");
    cr_expect(codec_dm_room("B", "a", room));
    cr_expect_str_eq(room, "dm:B:a", "byte order: upper case first");
    cr_expect_not(codec_dm_room("alice", "alice", room));
    cr_expect_not(codec_dm_room("alice", "b b", room));
    cr_expect_not(codec_dm_room("", "bob", room));

    char u32a[33], u32b[33];
    memset(u32a, 'a', 32);
    u32a[32] = '\0';
    memset(u32b, 'b', 32);
    u32b[32] = '\0';
    cr_assert(codec_dm_room(u32b, u32a, room));
    cr_expect_eq(strlen(room), CODEC_ROOMID_MAX);
    cr_assert(codec_parse_dm(room, a, b));
    cr_expect_str_eq(a, u32a);
    cr_expect_str_eq(b, u32b);

    cr_assert(codec_parse_dm("dm:al:alice", a, b), "a prefix sorts first");
    cr_expect_str_eq(a, "al");
    cr_expect_str_eq(b, "alice");
    cr_expect_not(codec_parse_dm("dm:alice:al", a, b));
    cr_expect_not(codec_parse_dm("dm:bob:alice", a, b));
    cr_expect_not(codec_parse_dm("dm:alice:alice", a, b));
    cr_expect_not(codec_parse_dm("dm:alice", a, b));
    cr_expect_not(codec_parse_dm("dm::bob", a, b));
    cr_expect_not(codec_parse_dm("dm:alice:", a, b));
    cr_expect_not(codec_parse_dm("dm:a:b:c", a, b));
    cr_expect_not(codec_parse_dm("DM:a:b", a, b));
    cr_expect_not(codec_parse_dm("general", a, b));
    cr_expect_not(codec_parse_dm(NULL, a, b));
    cr_expect(codec_parse_dm("dm:a:b", NULL, NULL));
}

Test(names, error_names)
{
    static const char *const want[] = {
        "none",          "bad_json",     "bad_request", "unknown_type", "auth_required",
        "auth_failed",   "name_taken",   "not_joined",  "forbidden",    "no_such_user",
        "rate_limited",  "too_large",    "internal",    "shutting_down",
    };
    for (int c = ERR_NONE; c <= ERR_SHUTTING_DOWN; c++)
        cr_expect_str_eq(codec_err_name((enum err_code)c), want[c]);
    cr_expect_str_eq(codec_err_name((enum err_code)99), "internal");
}

/* ---- encoders (JSON) ---- */

Test(encode, message_field_order_and_values)
{
    struct chat_msg m = {.room = "general", .seq = 42, .from = "alice", .text = "hi",
                         .text_len = 2, .ts = 1700000000000, .id = "c1"};
    msg_t *f = codec_message(FMT_JSON, &m);
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"message\",\"room\":\"general\",\"seq\":42,\"from\":\"alice\","
                        "\"text\":\"hi\",\"ts\":1700000000000,\"id\":\"c1\"}");
    free(s);
    msg_unref(&f);
    cr_expect_null(f);

    m.id = "";
    f = codec_message(FMT_JSON, &m);
    json_t *j = parse_frame(f);
    cr_expect_null(json_object_get(j, "id"), "empty id is omitted");
    cr_expect_eq(json_object_size(j), 6);
    json_decref(j);
    msg_unref(&f);
    m.id = NULL;
    f = codec_message(FMT_JSON, &m);
    j = parse_frame(f);
    cr_expect_null(json_object_get(j, "id"));
    json_decref(j);
    msg_unref(&f);
}

Test(encode, escaping_round_trips)
{
    /* every control character, quotes, backslash, DEL, multi-byte UTF-8 */
    char text[128];
    size_t n = 0;
    for (int c = 1; c < 0x20; c++)
        text[n++] = (char)c;
    memcpy(text + n, "\"\\/\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80<>&", 17);
    n += 17;
    text[n++] = '\0'; /* an embedded NUL is escaped too */
    text[n++] = 'z';
    struct chat_msg m = {.room = "r", .seq = 1, .from = "a\"b", .text = text, .text_len = n,
                         .ts = -5};
    msg_t *f = codec_message(FMT_JSON, &m);
    size_t plen;
    const unsigned char *p = msg_payload(f, &plen);
    for (size_t i = 0; i < plen; i++)
        cr_assert(p[i] >= 0x20, "raw control byte %#x in JSON output", p[i]);
    json_error_t e;
    json_t *j = json_loadb((const char *)p, plen, JSON_ALLOW_NUL, &e);
    cr_assert_not_null(j, "%s", e.text);
    json_t *t = json_object_get(j, "text");
    cr_assert_eq(json_string_length(t), n);
    cr_expect(memcmp(json_string_value(t), text, n) == 0);
    cr_expect_str_eq(jstr(j, "from"), "a\"b");
    cr_expect_eq(jint(j, "ts"), -5);
    json_decref(j);
    char *s = payload_str(f);
    cr_expect(strstr(s, "\\n\\u000b\\f\\r\\u000e"), "short escapes where JSON has them: %s", s);
    cr_expect(strstr(s, "\\u0000z"));
    cr_expect(strstr(s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), "UTF-8 kept as is");
    free(s);
    msg_unref(&f);
}

Test(encode, invalid_utf8_is_repaired)
{
    /* bytes that never passed the decoder still make a valid frame */
    const char text[] = "a\xff" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe4\xb8";
    struct chat_msg m = {.room = "r", .seq = 1, .from = "x", .text = text,
                         .text_len = sizeof(text) - 1};
    msg_t *f = codec_message(FMT_JSON, &m);
    json_t *j = parse_frame(f); /* jansson refuses invalid UTF-8 */
    const char *t = jstr(j, "text");
    cr_expect_eq(t[0], 'a');
    cr_expect(strstr(t, "\xef\xbf\xbd"), "U+FFFD in %s", t);
    cr_expect(strchr(t, 'd'));
    json_decref(j);
    msg_unref(&f);
}

Test(encode, presence_typing)
{
    msg_t *f = codec_presence(FMT_JSON, "general", "bob", true);
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"presence\",\"room\":\"general\",\"user\":\"bob\","
                        "\"event\":\"join\"}");
    free(s);
    msg_unref(&f);
    f = codec_presence(FMT_JSON, "general", "bob", false);
    json_t *j = parse_frame(f);
    cr_expect_str_eq(jstr(j, "event"), "leave");
    json_decref(j);
    msg_unref(&f);
    f = codec_typing(FMT_JSON, "general", "alice");
    s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"typing\",\"room\":\"general\",\"user\":\"alice\"}");
    free(s);
    msg_unref(&f);
}

Test(encode, error)
{
    msg_t *f = codec_error(FMT_JSON, ERR_RATE_LIMITED, "slow \"down\"", "\"r1\"", 800);
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":"
                        "\"slow \\\"down\\\"\",\"ref\":\"r1\",\"retry_after_ms\":800}");
    free(s);
    msg_unref(&f);
    f = codec_error(FMT_JSON, ERR_BAD_JSON, "x", "", -1);
    json_t *j = parse_frame(f);
    cr_expect_eq(json_object_size(j), 3);
    cr_expect_str_eq(jstr(j, "code"), "bad_json");
    json_decref(j);
    msg_unref(&f);
    f = codec_error(FMT_JSON, ERR_INTERNAL, NULL, NULL, 0);
    j = parse_frame(f);
    cr_expect_str_eq(jstr(j, "message"), "");
    cr_expect_eq(jint(j, "retry_after_ms"), 0);
    json_decref(j);
    msg_unref(&f);
}

Test(encode, welcome)
{
    msg_t *f = codec_welcome(FMT_JSON, "alice", "s-1", "7", 4000, 65536, 5, 10);
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"welcome\",\"user\":\"alice\",\"session\":\"s-1\","
                        "\"protocol\":1,\"limits\":{\"max_text\":4000,\"max_frame\":65536,"
                        "\"rate\":5,\"burst\":10},\"ref\":7}");
    free(s);
    msg_unref(&f);
    f = codec_welcome(FMT_JSON, "alice", "s", NULL, 1, 2, 0.5, 1.0 / 0.0);
    json_t *j = parse_frame(f);
    json_t *l = json_object_get(j, "limits");
    cr_expect_float_eq(json_number_value(json_object_get(l, "rate")), 0.5, 1e-12);
    cr_expect_eq(json_number_value(json_object_get(l, "burst")), 0, "infinity is not JSON");
    cr_expect_null(json_object_get(j, "ref"));
    json_decref(j);
    msg_unref(&f);
}

Test(encode, joined_with_history)
{
    const char *members[] = {"alice", "bob"};
    struct chat_msg hist[] = {
        {.room = "general", .seq = 41, .from = "bob", .text = "one", .text_len = 3, .ts = 1},
        {.room = "general", .seq = 42, .from = "alice", .text = "two", .text_len = 3, .ts = 2,
         .id = "c9"},
    };
    msg_t *f = codec_joined(FMT_JSON, "general", 42, members, 2, hist, 2, "\"j\"");
    json_t *j = parse_frame(f);
    cr_expect_str_eq(jstr(j, "type"), "joined");
    cr_expect_str_eq(jstr(j, "room"), "general");
    cr_expect_eq(jint(j, "seq"), 42);
    cr_expect_str_eq(jstr(j, "ref"), "j");
    json_t *mem = json_object_get(j, "members");
    cr_assert_eq(json_array_size(mem), 2);
    cr_expect_str_eq(json_string_value(json_array_get(mem, 1)), "bob");
    json_t *h = json_object_get(j, "history");
    cr_assert_eq(json_array_size(h), 2);
    json_t *h1 = json_array_get(h, 1);
    cr_expect_str_eq(jstr(h1, "type"), "message");
    cr_expect_eq(jint(h1, "seq"), 42);
    cr_expect_str_eq(jstr(h1, "id"), "c9");
    cr_expect_null(json_object_get(json_array_get(h, 0), "id"));
    json_decref(j);
    msg_unref(&f);

    f = codec_joined(FMT_JSON, "empty", 0, NULL, 0, NULL, 0, NULL);
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"joined\",\"room\":\"empty\",\"seq\":0,\"members\":[],"
                        "\"history\":[]}");
    free(s);
    msg_unref(&f);
}

Test(encode, left_ack_pong)
{
    msg_t *f = codec_left(FMT_JSON, "general", "3");
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"left\",\"room\":\"general\",\"ref\":3}");
    free(s);
    msg_unref(&f);
    f = codec_ack(FMT_JSON, "dm:alice:bob", 3, "c1", "\"a\"");
    s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"ack\",\"room\":\"dm:alice:bob\",\"seq\":3,\"id\":\"c1\","
                        "\"ref\":\"a\"}");
    free(s);
    msg_unref(&f);
    f = codec_ack(FMT_JSON, "general", 18446744073709551615ULL, NULL, NULL);
    s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"ack\",\"room\":\"general\",\"seq\":18446744073709551615}");
    free(s);
    msg_unref(&f);
    f = codec_pong(FMT_JSON, NULL);
    s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"pong\"}");
    free(s);
    msg_unref(&f);
    f = codec_pong(FMT_JSON, "\"p\"");
    s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"pong\",\"ref\":\"p\"}");
    free(s);
    msg_unref(&f);
}

Test(encode, history)
{
    struct chat_msg msgs[3];
    for (int i = 0; i < 3; i++)
        msgs[i] = (struct chat_msg){.room = "r", .seq = (uint64_t)(10 + i), .from = "u",
                                    .text = "t", .text_len = 1, .ts = 1000 * i};
    msg_t *f = codec_history(FMT_JSON, "r", msgs, 3, true, "1");
    json_t *j = parse_frame(f);
    cr_expect_str_eq(jstr(j, "type"), "history");
    cr_expect(json_is_true(json_object_get(j, "more")));
    json_t *a = json_object_get(j, "messages");
    cr_assert_eq(json_array_size(a), 3);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(jint(json_array_get(a, (size_t)i), "seq"), 10 + i, "oldest first");
    json_decref(j);
    msg_unref(&f);
    f = codec_history(FMT_JSON, "r", NULL, 0, false, NULL);
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"history\",\"room\":\"r\",\"messages\":[],\"more\":false}");
    free(s);
    msg_unref(&f);
}

Test(encode, members_rooms)
{
    const char *users[] = {"a", "b\"", "c"};
    msg_t *f = codec_members(FMT_JSON, "general", users, 3, NULL);
    json_t *j = parse_frame(f);
    json_t *u = json_object_get(j, "users");
    cr_assert_eq(json_array_size(u), 3);
    cr_expect_str_eq(json_string_value(json_array_get(u, 1)), "b\"");
    json_decref(j);
    msg_unref(&f);

    struct room_info rooms[] = {{"general", 3, 42}, {"random", 0, 0}};
    f = codec_rooms(FMT_JSON, rooms, 2, "\"r\"");
    char *s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"rooms\",\"rooms\":[{\"name\":\"general\",\"members\":3,"
                        "\"seq\":42},{\"name\":\"random\",\"members\":0,\"seq\":0}],"
                        "\"ref\":\"r\"}");
    free(s);
    msg_unref(&f);
    f = codec_rooms(FMT_JSON, NULL, 0, NULL);
    s = payload_str(f);
    cr_expect_str_eq(s, "{\"type\":\"rooms\",\"rooms\":[]}");
    free(s);
    msg_unref(&f);
}

/* Decode, then echo: the ref the decoder stored goes back out intact. */
Test(encode, ref_round_trip)
{
    static const char *const refs[] = {"\"simple\"", "0", "-17", "\"q\\\"uo\\\\te\"",
                                       "\"\\u0001\\t\"", "\"\xe2\x82\xac\""};
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
        char in[256], msg[256];
        struct req r;
        snprintf(in, sizeof(in), "{\"type\":\"ping\",\"ref\":%s}", refs[i]);
        cr_assert_eq(decode(in, &r, msg), ERR_NONE, "%s: %s", in, msg);
        json_t *want = json_loads(refs[i], JSON_DECODE_ANY, NULL);
        msg_t *f = codec_pong(FMT_JSON, r.ref);
        json_t *j = parse_frame(f);
        cr_expect(json_equal(json_object_get(j, "ref"), want), "ref %s came back changed",
                  refs[i]);
        json_decref(want);
        json_decref(j);
        msg_unref(&f);
    }
}

/* ---- frame headers ---- */

static msg_t *message_of_payload(size_t want)
{
    struct chat_msg m = {.room = "r", .seq = 1, .from = "u", .text = "", .text_len = 0};
    msg_t *f = codec_message(FMT_JSON, &m);
    size_t base;
    msg_payload(f, &base);
    msg_unref(&f);
    cr_assert(want >= base);
    char *text = malloc(want - base + 1);
    memset(text, 'x', want - base);
    m.text = text;
    m.text_len = want - base;
    f = codec_message(FMT_JSON, &m);
    free(text);
    size_t got;
    msg_payload(f, &got);
    cr_assert_eq(got, want);
    return f;
}

Test(frame, header_sizes)
{
    static const struct {
        size_t payload;
        size_t hlen;
        unsigned char h[10];
    } cases[] = {
        {125, 2, {0x81, 125}},
        {126, 4, {0x81, 126, 0x00, 126}},
        {65535, 4, {0x81, 126, 0xff, 0xff}},
        {65536, 10, {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        msg_t *f = message_of_payload(cases[i].payload);
        size_t flen, plen;
        const unsigned char *fr = msg_frame(f, &flen);
        const unsigned char *pl = msg_payload(f, &plen);
        cr_expect_eq(flen, cases[i].hlen + cases[i].payload);
        cr_expect(memcmp(fr, cases[i].h, cases[i].hlen) == 0, "header for %zu bytes",
                  cases[i].payload);
        cr_expect_eq(fr + cases[i].hlen, pl, "header and payload are contiguous");
        cr_expect_eq(msg_size(f), flen);
        json_t *j = parse_frame(f);
        json_decref(j);
        msg_unref(&f);
    }
}
