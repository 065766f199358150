/*
 * test_textmode — text-mode input lines (every command, argument errors,
 * plain lines, line endings) and every encoder's FMT_TEXT output, including
 * attempts to inject a fake server line through user-controlled strings.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "msg.h"

static const struct codec_limits lim = {.max_text = 4000};

static struct req r;
static char msg[256];

static void fini(void)
{
    req_release(&r);
}

TestSuite(decode, .fini = fini);
TestSuite(render);

static enum err_code dec(const char *line, const char *room)
{
    req_release(&r);
    return codec_decode_text(line, strlen(line), room, &lim, &r, msg, sizeof(msg));
}

/* A frame's payload as a string (the caller frees it). */
static char *out(msg_t *m)
{
    size_t n;
    const unsigned char *p = msg_payload(m, &n);
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    msg_unref(&m);
    return s;
}

#define expect_out(frame, want)                                                                    \
    do {                                                                                           \
        char *got_ = out(frame);                                                                   \
        cr_expect_str_eq(got_, want);                                                              \
        free(got_);                                                                                \
    } while (0)

/* ---- decoding ---- */

Test(decode, nick)
{
    cr_assert_eq(dec("/nick alice", ""), ERR_NONE, "%s", msg);
    cr_expect_eq(r.type, REQ_HELLO);
    cr_expect_str_eq(r.user, "alice");
    cr_expect_null(r.token);
    cr_expect_eq(dec("/nick", ""), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "usage: /nick NAME");
    cr_expect_eq(dec("/nick a b", ""), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/nick al:ice", ""), ERR_BAD_REQUEST);
    cr_expect(strstr(msg, "invalid user name"), "%s", msg);
    cr_expect_eq(dec("/nick abcdefghijklmnopqrstuvwxyz0123456", ""), ERR_BAD_REQUEST);
    cr_expect_str_eq(r.user, "");
}

Test(decode, token)
{
    cr_assert_eq(dec("/token aaa.bbb.ccc", ""), ERR_NONE);
    cr_expect_eq(r.type, REQ_HELLO);
    cr_expect_str_eq(r.token, "aaa.bbb.ccc");
    cr_expect_str_eq(r.user, "");
    cr_expect_eq(dec("/token", ""), ERR_BAD_REQUEST);
    cr_expect_null(r.token);
    cr_expect_eq(dec("/token \xc3\xa9", ""), ERR_BAD_REQUEST);
    char big[2100] = "/token ";
    memset(big + 7, 'x', 2049);
    big[7 + 2049] = '\0';
    cr_expect_eq(dec(big, ""), ERR_BAD_REQUEST);
    big[7 + 2048] = '\0';
    cr_expect_eq(dec(big, ""), ERR_NONE);
    cr_expect_eq(strlen(r.token), 2048);
}

Test(decode, join)
{
    cr_assert_eq(dec("/join general", "other"), ERR_NONE);
    cr_expect_eq(r.type, REQ_JOIN);
    cr_expect_str_eq(r.room, "general");
    cr_expect_not(r.has_since);
    cr_expect_eq(r.limit, CODEC_LIMIT_DEFAULT);
    cr_assert_eq(dec("/join dm:alice:bob", ""), ERR_NONE);
    cr_expect_str_eq(r.room, "dm:alice:bob");
    cr_expect_eq(dec("/join", ""), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "usage: /join ROOM");
    cr_expect_eq(dec("/join #general", ""), ERR_BAD_REQUEST);
    cr_expect(strstr(msg, "invalid room name"), "%s", msg);
    cr_expect_eq(dec("/join dm:bob:alice", ""), ERR_BAD_REQUEST);
    /* "dm" is reserved for the DM rooms; names that only start with it are not */
    cr_expect_eq(dec("/join dm", ""), ERR_BAD_REQUEST);
    cr_expect(strstr(msg, "reserved"), "%s", msg);
    cr_expect_eq(dec("/leave dm", "general"), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/join dms", ""), ERR_NONE);
    cr_expect_eq(dec("/join DM", ""), ERR_NONE);
    cr_expect_eq(dec("/join a b", ""), ERR_BAD_REQUEST);
    char room65[80] = "/join ";
    memset(room65 + 6, 'r', 65);
    room65[6 + 65] = '\0';
    cr_expect_eq(dec(room65, ""), ERR_BAD_REQUEST);
    room65[6 + 64] = '\0';
    cr_expect_eq(dec(room65, ""), ERR_NONE);
}

Test(decode, leave)
{
    cr_assert_eq(dec("/leave", "general"), ERR_NONE);
    cr_expect_eq(r.type, REQ_LEAVE);
    cr_expect_str_eq(r.room, "general");
    cr_assert_eq(dec("/leave random", "general"), ERR_NONE);
    cr_expect_str_eq(r.room, "random");
    cr_expect_eq(dec("/leave", ""), ERR_NOT_JOINED);
    cr_expect_str_eq(msg, "join a room first: /join ROOM");
    cr_expect_eq(dec("/leave", NULL), ERR_NOT_JOINED);
    cr_expect_eq(dec("/leave a b", "general"), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "usage: /leave [ROOM]");
}

Test(decode, msg)
{
    cr_assert_eq(dec("/msg bob hello  there ", ""), ERR_NONE, "a DM needs no joined room");
    cr_expect_eq(r.type, REQ_DM);
    cr_expect_str_eq(r.to, "bob");
    cr_expect_str_eq(r.text, "hello  there ", "the text is kept as typed");
    cr_expect_eq(r.text_len, 13);
    cr_assert_eq(dec("/msg\tbob\t\tx", ""), ERR_NONE);
    cr_expect_str_eq(r.text, "x");
    cr_expect_eq(dec("/msg bob", ""), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "usage: /msg USER TEXT");
    cr_expect_eq(dec("/msg bob   ", ""), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/msg", ""), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/msg b!b hi", ""), ERR_BAD_REQUEST);
    cr_expect(strstr(msg, "invalid user name"));
    cr_expect_null(r.text);
}

Test(decode, who)
{
    cr_assert_eq(dec("/who", "general"), ERR_NONE);
    cr_expect_eq(r.type, REQ_WHO);
    cr_expect_str_eq(r.room, "general");
    cr_assert_eq(dec("/who lobby", ""), ERR_NONE);
    cr_expect_str_eq(r.room, "lobby");
    cr_expect_eq(dec("/who", ""), ERR_NOT_JOINED);
}

Test(decode, rooms_ping_help_quit)
{
    cr_assert_eq(dec("/rooms", ""), ERR_NONE);
    cr_expect_eq(r.type, REQ_ROOMS);
    cr_expect_eq(dec("/rooms x", ""), ERR_BAD_REQUEST);
    cr_assert_eq(dec("/ping", ""), ERR_NONE);
    cr_expect_eq(r.type, REQ_PING);
    cr_assert_eq(dec("/help", ""), ERR_NONE);
    cr_expect_eq(r.type, REQ_HELP);
    cr_assert_eq(dec("/quit", "general"), ERR_NONE);
    cr_expect_eq(r.type, REQ_QUIT);
    cr_assert_eq(dec("/quit see you", ""), ERR_NONE);
    cr_expect_eq(r.type, REQ_QUIT);
}

Test(decode, history)
{
    cr_assert_eq(dec("/history", "general"), ERR_NONE);
    cr_expect_eq(r.type, REQ_HISTORY);
    cr_expect_str_eq(r.room, "general");
    cr_expect_eq(r.limit, CODEC_LIMIT_DEFAULT);
    cr_expect_not(r.has_before);
    cr_assert_eq(dec("/history 5", "general"), ERR_NONE);
    cr_expect_eq(r.limit, 5);
    cr_assert_eq(dec("/history 200", "general"), ERR_NONE);
    cr_expect_eq(r.limit, 200);
    cr_assert_eq(dec("/history 100000", "general"), ERR_NONE);
    cr_expect_eq(r.limit, 200, "clamped like JSON mode");
    cr_expect_eq(dec("/history 0", "general"), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/history -3", "general"), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/history abc", "general"), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/history 5 6", "general"), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/history 99999999999999999999", "general"), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/history", ""), ERR_NOT_JOINED);
    cr_expect_eq(dec("/history 5", ""), ERR_NOT_JOINED);
}

Test(decode, me)
{
    cr_assert_eq(dec("/me waves  at bob", "general"), ERR_NONE);
    cr_expect_eq(r.type, REQ_SEND);
    cr_expect(r.me);
    cr_expect_str_eq(r.room, "general");
    cr_expect_str_eq(r.text, "/me waves  at bob");
    cr_expect_eq(r.text_len, strlen("/me waves  at bob"));
    cr_expect_eq(dec("/me", "general"), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "usage: /me ACTION");
    cr_expect_eq(dec("/me   ", "general"), ERR_BAD_REQUEST);
    cr_expect_eq(dec("/me waves", ""), ERR_NOT_JOINED);
    cr_expect_null(r.text);
}

Test(decode, plain_lines)
{
    cr_assert_eq(dec("hello world", "general"), ERR_NONE);
    cr_expect_eq(r.type, REQ_SEND);
    cr_expect_not(r.me);
    cr_expect_str_eq(r.room, "general");
    cr_expect_str_eq(r.text, "hello world");
    cr_expect_str_eq(r.id, "");
    cr_expect_str_eq(r.ref, "");
    cr_assert_eq(dec("  indented", "dm:alice:bob"), ERR_NONE);
    cr_expect_str_eq(r.text, "  indented");
    cr_expect_str_eq(r.room, "dm:alice:bob");
    cr_expect_eq(dec("hello", ""), ERR_NOT_JOINED);
    cr_expect_null(r.text);
    cr_expect_eq(dec("hello", NULL), ERR_NOT_JOINED);
    /* "//" escapes a leading slash */
    cr_assert_eq(dec("//join is a command", "general"), ERR_NONE);
    cr_expect_eq(r.type, REQ_SEND);
    cr_expect_str_eq(r.text, "/join is a command");
    cr_expect_eq(dec("//", "general"), ERR_NONE);
    cr_expect_str_eq(r.text, "/");
}

Test(decode, line_endings)
{
    cr_assert_eq(dec("hi\r\n", "general"), ERR_NONE);
    cr_expect_str_eq(r.text, "hi");
    cr_expect_eq(r.text_len, 2);
    cr_assert_eq(dec("hi\n", "general"), ERR_NONE);
    cr_expect_str_eq(r.text, "hi");
    cr_assert_eq(dec("/join general\r\n", ""), ERR_NONE);
    cr_expect_str_eq(r.room, "general");
    cr_assert_eq(dec("/nick bob\r", ""), ERR_NONE);
    cr_expect_str_eq(r.user, "bob");
    cr_expect_eq(dec("a\nb", "general"), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "one line at a time");
    cr_expect_eq(dec("a\rb\r\n", "general"), ERR_BAD_REQUEST);
}

Test(decode, empty_and_odd_lines)
{
    cr_expect_eq(dec("", "general"), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "empty line");
    cr_expect_eq(dec("\r\n", "general"), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "empty line");
    cr_expect_eq(dec(" \t ", "general"), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "empty line");
    cr_expect_eq(codec_decode_text(NULL, 0, "general", &lim, &r, msg, sizeof(msg)),
                 ERR_BAD_REQUEST);
    cr_expect_eq(codec_decode_text("a\0b", 3, "general", &lim, &r, msg, sizeof(msg)),
                 ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "line contains a NUL byte");
    cr_expect_eq(dec("caf\xc3", "general"), ERR_BAD_REQUEST);
    cr_expect_str_eq(msg, "line is not valid UTF-8");
    cr_expect_eq(dec("\xed\xa0\x80", "general"), ERR_BAD_REQUEST);
    /* the line's length is what counts, not a NUL */
    cr_assert_eq(codec_decode_text("hi there", 2, "general", &lim, &r, msg, sizeof(msg)),
                 ERR_NONE);
    cr_expect_str_eq(r.text, "hi");
    /* a current room too long to be real is no room */
    char longroom[100];
    memset(longroom, 'r', 99);
    longroom[99] = '\0';
    cr_expect_eq(dec("hi", longroom), ERR_NOT_JOINED);
}

Test(decode, unknown_commands)
{
    cr_expect_eq(dec("/frobnicate now", "general"), ERR_UNKNOWN_TYPE);
    cr_expect_str_eq(msg, "unknown command /frobnicate, try /help");
    cr_expect_eq(dec("/", "general"), ERR_UNKNOWN_TYPE);
    cr_expect_str_eq(msg, "unknown command, try /help");
    cr_expect_eq(dec("/ x", "general"), ERR_UNKNOWN_TYPE);
    cr_expect_eq(dec("/\xc3\xa9", "general"), ERR_UNKNOWN_TYPE);
    cr_expect_str_eq(msg, "unknown command, try /help");
    cr_expect_eq(dec("/nickname bob", "general"), ERR_UNKNOWN_TYPE, "no prefix matching");
    cr_expect_eq(dec("/hello", "general"), ERR_UNKNOWN_TYPE);
}

Test(decode, commands_ignore_case)
{
    cr_assert_eq(dec("/JOIN general", ""), ERR_NONE);
    cr_expect_eq(r.type, REQ_JOIN);
    cr_assert_eq(dec("/Msg bob hi", ""), ERR_NONE);
    cr_expect_eq(r.type, REQ_DM);
}

Test(decode, text_limit)
{
    struct codec_limits small = {.max_text = 5};
    cr_assert_eq(codec_decode_text("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 10, "g", &small,
                                   &r, msg, sizeof(msg)),
                 ERR_NONE, "five code points fit");
    req_release(&r);
    cr_expect_eq(codec_decode_text("abcdef", 6, "g", &small, &r, msg, sizeof(msg)),
                 ERR_TOO_LARGE);
    cr_expect_str_eq(msg, "message is longer than 5 characters");
    cr_expect_eq(codec_decode_text("/msg bob abcdef", 15, "", &small, &r, msg, sizeof(msg)),
                 ERR_TOO_LARGE);
    /* /me counts the stored "/me " too */
    cr_expect_eq(codec_decode_text("/me ab", 6, "g", &small, &r, msg, sizeof(msg)),
                 ERR_TOO_LARGE);
    cr_expect_eq(codec_decode_text("/me a", 5, "g", &small, &r, msg, sizeof(msg)), ERR_NONE);
    req_release(&r);
    /* the default limit */
    char *big = malloc(4002);
    memset(big, 'a', 4001);
    big[4001] = '\0';
    cr_expect_eq(codec_decode_text(big, 4001, "g", NULL, &r, msg, sizeof(msg)), ERR_TOO_LARGE);
    cr_expect_eq(codec_decode_text(big, 4000, "g", NULL, &r, msg, sizeof(msg)), ERR_NONE);
    free(big);
}

/* ---- rendering ---- */

Test(render, message)
{
    struct chat_msg m = {.room = "general", .seq = 42, .from = "alice", .text = "hello",
                         .text_len = 5, .ts = 1700000000000 + 43200000 + 999};
    /* 1700000000 is 2023-11-14 22:13:20 UTC; plus 12 h */
    expect_out(codec_message(FMT_TEXT, &m), "[general #42 10:13:20] alice: hello");
    m.ts = 0;
    expect_out(codec_message(FMT_TEXT, &m), "[general #42 00:00:00] alice: hello");
    m.ts = -1; /* 1969-12-31 23:59:59.999 */
    expect_out(codec_message(FMT_TEXT, &m), "[general #42 23:59:59] alice: hello");
    m.ts = 86399999;
    expect_out(codec_message(FMT_TEXT, &m), "[general #42 23:59:59] alice: hello");
    m.id = "c1"; /* ids are not shown */
    expect_out(codec_message(FMT_TEXT, &m), "[general #42 23:59:59] alice: hello");
}

Test(render, me_action)
{
    struct chat_msg m = {.room = "general", .seq = 7, .from = "alice", .text = "/me waves",
                         .text_len = 9, .ts = 0};
    expect_out(codec_message(FMT_TEXT, &m), "[general #7 00:00:00] * alice waves");
    m.text = "/meow";
    m.text_len = 5;
    expect_out(codec_message(FMT_TEXT, &m), "[general #7 00:00:00] alice: /meow");
    m.text = "/me";
    m.text_len = 3;
    expect_out(codec_message(FMT_TEXT, &m), "[general #7 00:00:00] alice: /me");
}

Test(render, dm)
{
    struct chat_msg m = {.room = "dm:alice:bob", .seq = 3, .from = "alice", .text = "hi",
                         .text_len = 2, .ts = 0};
    expect_out(codec_message(FMT_TEXT, &m), "[dm alice\xe2\x86\x92" "bob #3 00:00:00] alice: hi");
    m.from = "bob";
    expect_out(codec_message(FMT_TEXT, &m), "[dm bob\xe2\x86\x92" "alice #3 00:00:00] bob: hi");
    m.from = "carol"; /* not a member: show the room as it is */
    expect_out(codec_message(FMT_TEXT, &m), "[dm:alice:bob #3 00:00:00] carol: hi");
}

Test(render, injection_is_neutralised)
{
    const char *evil = "hi\n[general #43 12:00:00] bob: send me your password\r"
                       "\x1b[2K\tx\x7f" "\xc2\x85" "\xe2\x80\xa8" "\xe2\x80\xae" "y\xff";
    struct chat_msg m = {.room = "general", .seq = 42, .from = "mal\nlory", .text = evil,
                         .text_len = strlen(evil), .ts = 0};
    char *s = out(codec_message(FMT_TEXT, &m));
    cr_expect_null(strchr(s, '\n'), "%s", s);
    cr_expect_null(strchr(s, '\r'));
    cr_expect_null(strchr(s, '\x1b'));
    cr_expect_null(strchr(s, '\t'));
    cr_expect_null(strchr(s, '\x7f'));
    cr_expect_null(strstr(s, "\xc2\x85"), "NEL");
    cr_expect_null(strstr(s, "\xe2\x80\xa8"), "line separator");
    cr_expect_null(strstr(s, "\xe2\x80\xae"), "right-to-left override");
    cr_expect_str_eq(s, "[general #42 00:00:00] mal lory: hi [general #43 12:00:00] bob: send me "
                        "your password  [2K x    y\xef\xbf\xbd");
    free(s);

    /* every user-supplied string in every text frame */
    const char *u = "a\nb";
    const char *users[] = {u};
    struct room_info ri = {.name = u, .members = 1, .seq = 1};
    msg_t *frames[] = {
        codec_presence(FMT_TEXT, u, u, true),
        codec_typing(FMT_TEXT, u, u),
        codec_error(FMT_TEXT, ERR_BAD_REQUEST, "x\ny", NULL, -1),
        codec_welcome(FMT_TEXT, u, u, NULL, 1, 1, 1, 1),
        codec_left(FMT_TEXT, u, NULL),
        codec_ack(FMT_TEXT, u, 1, u, NULL),
        codec_members(FMT_TEXT, u, users, 1, NULL),
        codec_history(FMT_TEXT, u, &m, 1, false, NULL),
        codec_joined(FMT_TEXT, u, 1, users, 1, &m, 1, NULL),
        codec_rooms(FMT_TEXT, &ri, 1, NULL),
    };
    /* the multi-line frames have exactly as many lines as they should */
    const int lines[] = {1, 1, 1, 1, 1, 1, 1, 2, 2, 2};
    for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
        s = out(frames[i]);
        int n = 1;
        for (const char *p = s; *p; p++)
            n += *p == '\n';
        cr_expect_eq(n, lines[i], "frame %zu has %d lines: %s", i, n, s);
        cr_expect_null(strchr(s, '\r'));
        cr_expect(strstr(s, "a\nb") == NULL, "frame %zu: %s", i, s);
        free(s);
    }
}

Test(render, presence_typing)
{
    expect_out(codec_presence(FMT_TEXT, "general", "bob", true), "* bob joined general");
    expect_out(codec_presence(FMT_TEXT, "general", "bob", false), "* bob left general");
    expect_out(codec_typing(FMT_TEXT, "general", "alice"), "~ alice is typing in general");
}

Test(render, errors)
{
    expect_out(codec_error(FMT_TEXT, ERR_RATE_LIMITED, "slow down", "\"r\"", 800),
               "! rate_limited: slow down (retry in 800 ms)");
    expect_out(codec_error(FMT_TEXT, ERR_NOT_JOINED, "join a room first: /join ROOM", NULL, -1),
               "! not_joined: join a room first: /join ROOM");
    expect_out(codec_error(FMT_TEXT, ERR_INTERNAL, NULL, NULL, -1), "! internal: ");
}

Test(render, replies)
{
    expect_out(codec_welcome(FMT_TEXT, "alice", "s1", NULL, 4000, 65536, 5, 10),
               "* welcome alice (protocol 1) \xe2\x80\x94 type /help");
    expect_out(codec_left(FMT_TEXT, "general", NULL), "* left general");
    expect_out(codec_ack(FMT_TEXT, "general", 42, NULL, NULL), "* ack general #42");
    expect_out(codec_ack(FMT_TEXT, "general", 42, "", NULL), "* ack general #42");
    expect_out(codec_ack(FMT_TEXT, "general", 42, "c1", NULL), "* ack general #42 id c1");
    expect_out(codec_pong(FMT_TEXT, "1"), "* pong");
    const char *users[] = {"alice", "bob"};
    expect_out(codec_members(FMT_TEXT, "general", users, 2, NULL),
               "* members of general: alice, bob");
    expect_out(codec_members(FMT_TEXT, "general", NULL, 0, NULL), "* members of general: nobody");
}

Test(render, joined)
{
    const char *members[] = {"alice", "bob"};
    struct chat_msg hist[] = {
        {.room = "general", .seq = 41, .from = "bob", .text = "one", .text_len = 3, .ts = 1000},
        {.room = "general", .seq = 42, .from = "alice", .text = "/me two", .text_len = 7,
         .ts = 2000},
    };
    expect_out(codec_joined(FMT_TEXT, "general", 42, members, 2, hist, 2, NULL),
               "* joined general (seq 42, members: alice, bob)\n"
               "[general #41 00:00:01] bob: one\n"
               "[general #42 00:00:02] * alice two");
    expect_out(codec_joined(FMT_TEXT, "new", 0, members, 1, NULL, 0, NULL),
               "* joined new (seq 0, members: alice)");
}

Test(render, history)
{
    struct chat_msg h = {.room = "general", .seq = 9, .from = "bob", .text = "x", .text_len = 1,
                         .ts = 0};
    expect_out(codec_history(FMT_TEXT, "general", &h, 1, true, NULL),
               "* history general: 1 message (older messages exist)\n"
               "[general #9 00:00:00] bob: x");
    struct chat_msg two[] = {h, h};
    two[1].seq = 10;
    expect_out(codec_history(FMT_TEXT, "general", two, 2, false, NULL),
               "* history general: 2 messages\n"
               "[general #9 00:00:00] bob: x\n"
               "[general #10 00:00:00] bob: x");
    expect_out(codec_history(FMT_TEXT, "general", NULL, 0, false, NULL),
               "* history general: no messages");
}

Test(render, rooms)
{
    struct room_info rooms[] = {{"general", 3, 42}, {"quiet", 1, 0}};
    expect_out(codec_rooms(FMT_TEXT, rooms, 2, NULL),
               "* rooms:\n"
               "  general (3 members, seq 42)\n"
               "  quiet (1 member, seq 0)");
    expect_out(codec_rooms(FMT_TEXT, NULL, 0, NULL), "* no rooms");
}

Test(render, help_lists_every_command)
{
    char *s = out(codec_help());
    static const char *const cmds[] = {"/nick NAME", "/token JWT", "/join ROOM",
                                       "/leave [ROOM]", "/msg USER TEXT", "/who [ROOM]",
                                       "/rooms", "/history [N]", "/me ACTION",
                                       "/ping", "/help", "/quit", "//TEXT"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        cr_expect(strstr(s, cmds[i]), "help lacks %s", cmds[i]);
    cr_expect(strncmp(s, "* commands:\n", 12) == 0);
    cr_expect_neq(s[strlen(s) - 1], '\n', "no trailing newline");
    free(s);
}

/* Whatever a text-mode user types, a send is rendered as exactly one line. */
Test(render, decoded_lines_render_as_one_line)
{
    const char *lines[] = {"hello", "/me dances", "tab\there", "\x1b[31mred", "//x"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct req q;
        char m[128];
        cr_assert_eq(codec_decode_text(lines[i], strlen(lines[i]), "general", &lim, &q, m,
                                       sizeof(m)),
                     ERR_NONE);
        struct chat_msg cm = {.room = q.room, .seq = 1, .from = "u", .text = q.text,
                              .text_len = q.text_len, .ts = 0};
        char *s = out(codec_message(FMT_TEXT, &cm));
        for (const char *p = s; *p; p++)
            cr_expect((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in %s", s);
        free(s);
        req_release(&q);
    }
}
