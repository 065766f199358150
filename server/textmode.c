/*
 * textmode — protocol v1 for people at a terminal: one input line becomes
 * one struct req, checked by the same rules as JSON mode, so the broker
 * cannot tell the two apart. Also the /help text, kept next to the command
 * table it describes. The output lines are written by the encoders in
 * codec.c (FMT_TEXT).
 *
 * A line starting with "/" is a command (the name is case-insensitive);
 * "//" sends the rest of the line, starting with one "/", as plain text;
 * any other line is a message to the room joined last. "/me ACTION" sends
 * the text "/me ACTION" verbatim, which text-mode output shows as
 * "* alice ACTION", so an action looks the same whichever client sent it.
 *
 * Thread: any. No state.
 */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec_int.h"
#include "util.h"

#define DEFAULT_MAX_TEXT 4000

struct tdec {
    struct req *out;
    char *msg;
    size_t msgsz;
    size_t max_text;
    const char *current; /* room joined last, "" if none */
};

/* the error helper shared with codec.c (codec_int.h) */
#define tfail(d, c, ...) codec__fail((d)->msg, (d)->msgsz, (c), __VA_ARGS__)

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* A cursor over the arguments of one command. */
struct args {
    const char *p, *end;
};

static void skip_blanks(struct args *a)
{
    while (a->p < a->end && is_blank(*a->p))
        a->p++;
}

/* The next blank-separated word, or false if none is left. */
static bool next_word(struct args *a, const char **w, size_t *n)
{
    skip_blanks(a);
    if (a->p == a->end)
        return false;
    *w = a->p;
    while (a->p < a->end && !is_blank(*a->p))
        a->p++;
    *n = (size_t)(a->p - *w);
    return true;
}

static bool at_end(struct args *a)
{
    skip_blanks(a);
    return a->p == a->end;
}

/* Copy a word into a NUL-terminated buffer; false if it does not fit. */
static bool word_copy(char *dst, size_t dstsz, const char *w, size_t n)
{
    if (n >= dstsz)
        return false;
    memcpy(dst, w, n);
    dst[n] = '\0';
    return true;
}

static enum err_code use_current(struct tdec *d)
{
    if (!d->current[0])
        return tfail(d, ERR_NOT_JOINED, "join a room first: /join ROOM");
    str_lcpy(d->out->room, d->current, sizeof(d->out->room));
    return ERR_NONE;
}

static enum err_code set_room_arg(struct tdec *d, const char *w, size_t n)
{
    if (!word_copy(d->out->room, sizeof(d->out->room), w, n) ||
        !(codec_valid_room(d->out->room) || codec_parse_dm(d->out->room, NULL, NULL))) {
        d->out->room[0] = '\0';
        return tfail(d, ERR_BAD_REQUEST,
                     "invalid room name: use 1-64 of A-Z a-z 0-9 _ . - "
                     "(or dm:a:b; 'dm' alone is reserved)");
    }
    return ERR_NONE;
}

static enum err_code set_user_arg(struct tdec *d, char dst[CODEC_USER_MAX + 1], const char *w,
                                  size_t n)
{
    if (!word_copy(dst, CODEC_USER_MAX + 1, w, n) || !codec_valid_user(dst)) {
        dst[0] = '\0';
        return tfail(d, ERR_BAD_REQUEST, "invalid user name: use 1-32 of A-Z a-z 0-9 _ . -");
    }
    return ERR_NONE;
}

/* The text of a send or dm, counted in code points as JSON mode does. */
static enum err_code set_text(struct tdec *d, const char *s, size_t n)
{
    if (n == 0)
        return tfail(d, ERR_BAD_REQUEST, "empty message");
    long chars = n / 4 > d->max_text ? -1 : utf8_count(s, n);
    if (chars < 0 || (size_t)chars > d->max_text)
        return tfail(d, ERR_TOO_LARGE, "message is longer than %zu characters", d->max_text);
    d->out->text = xstrndup(s, n);
    d->out->text_len = n;
    return ERR_NONE;
}

static enum err_code cmd_nick(struct tdec *d, struct args *a)
{
    const char *w;
    size_t n;
    if (!next_word(a, &w, &n) || !at_end(a))
        return tfail(d, ERR_BAD_REQUEST, "usage: /nick NAME");
    d->out->type = REQ_HELLO;
    return set_user_arg(d, d->out->user, w, n);
}

static enum err_code cmd_token(struct tdec *d, struct args *a)
{
    const char *w;
    size_t n;
    if (!next_word(a, &w, &n) || !at_end(a))
        return tfail(d, ERR_BAD_REQUEST, "usage: /token JWT");
    if (n > CODEC_TOKEN_MAX)
        return tfail(d, ERR_BAD_REQUEST, "token is longer than %d characters", CODEC_TOKEN_MAX);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)w[i] < 0x21 || (unsigned char)w[i] > 0x7e)
            return tfail(d, ERR_BAD_REQUEST, "token must be printable ASCII");
    }
    d->out->type = REQ_HELLO;
    d->out->token = xstrndup(w, n);
    return ERR_NONE;
}

static enum err_code cmd_join(struct tdec *d, struct args *a)
{
    const char *w;
    size_t n;
    if (!next_word(a, &w, &n) || !at_end(a))
        return tfail(d, ERR_BAD_REQUEST, "usage: /join ROOM");
    d->out->type = REQ_JOIN;
    return set_room_arg(d, w, n);
}

/* /leave [ROOM] and /who [ROOM] */
static enum err_code cmd_room_opt(struct tdec *d, struct args *a, enum req_type t,
                                  const char *usage)
{
    const char *w;
    size_t n;
    d->out->type = t;
    if (!next_word(a, &w, &n))
        return use_current(d);
    if (!at_end(a))
        return tfail(d, ERR_BAD_REQUEST, "usage: %s", usage);
    return set_room_arg(d, w, n);
}

static enum err_code cmd_leave(struct tdec *d, struct args *a)
{
    return cmd_room_opt(d, a, REQ_LEAVE, "/leave [ROOM]");
}

static enum err_code cmd_who(struct tdec *d, struct args *a)
{
    return cmd_room_opt(d, a, REQ_WHO, "/who [ROOM]");
}

static enum err_code cmd_msg(struct tdec *d, struct args *a)
{
    const char *w;
    size_t n;
    if (!next_word(a, &w, &n) || at_end(a))
        return tfail(d, ERR_BAD_REQUEST, "usage: /msg USER TEXT");
    d->out->type = REQ_DM;
    enum err_code rc = set_user_arg(d, d->out->to, w, n);
    if (rc)
        return rc;
    /* the text is the rest of the line as typed, inner spacing kept */
    return set_text(d, a->p, (size_t)(a->end - a->p));
}

static enum err_code cmd_rooms(struct tdec *d, struct args *a)
{
    if (!at_end(a))
        return tfail(d, ERR_BAD_REQUEST, "usage: /rooms");
    d->out->type = REQ_ROOMS;
    return ERR_NONE;
}

static enum err_code cmd_history(struct tdec *d, struct args *a)
{
    const char *w;
    size_t n;
    d->out->type = REQ_HISTORY;
    if (next_word(a, &w, &n)) {
        unsigned long v = 0;
        bool ok = at_end(a) && n <= 9;
        for (size_t i = 0; ok && i < n; i++) {
            ok = w[i] >= '0' && w[i] <= '9';
            v = v * 10 + (unsigned long)(w[i] - '0');
        }
        if (!ok || v < 1)
            return tfail(d, ERR_BAD_REQUEST, "usage: /history [N], N from 1 to %d",
                         CODEC_LIMIT_MAX);
        /* clamped like JSON mode's limit */
        d->out->limit = v > CODEC_LIMIT_MAX ? CODEC_LIMIT_MAX : (int)v;
    }
    return use_current(d);
}

static enum err_code cmd_me(struct tdec *d, struct args *a)
{
    skip_blanks(a);
    if (a->p == a->end)
        return tfail(d, ERR_BAD_REQUEST, "usage: /me ACTION");
    d->out->type = REQ_SEND;
    d->out->me = true;
    enum err_code rc = use_current(d);
    if (rc)
        return rc;
    /* stored as "/me ACTION": the limit applies to the stored text */
    size_t n = (size_t)(a->end - a->p);
    char *t = xmalloc(4 + n);
    memcpy(t, "/me ", 4);
    memcpy(t + 4, a->p, n);
    rc = set_text(d, t, 4 + n);
    free(t);
    return rc;
}

static enum err_code cmd_ping(struct tdec *d, struct args *a)
{
    (void)a;
    d->out->type = REQ_PING;
    return ERR_NONE;
}

/* /help and /quit take no arguments but tolerate them ("/quit bye"). */
static enum err_code cmd_help(struct tdec *d, struct args *a)
{
    (void)a;
    d->out->type = REQ_HELP;
    return ERR_NONE;
}

static enum err_code cmd_quit(struct tdec *d, struct args *a)
{
    (void)a;
    d->out->type = REQ_QUIT;
    return ERR_NONE;
}

static const struct command {
    const char *name;
    enum err_code (*fn)(struct tdec *d, struct args *a);
    const char *usage;
    const char *what;
} commands[] = {
    {"nick", cmd_nick, "/nick NAME", "sign in as NAME (open mode)"},
    {"token", cmd_token, "/token JWT", "sign in with a token (accounts mode)"},
    {"join", cmd_join, "/join ROOM", "join ROOM and show its recent messages"},
    {"leave", cmd_leave, "/leave [ROOM]", "leave ROOM (default: the room joined last)"},
    {"msg", cmd_msg, "/msg USER TEXT", "send a direct message to USER"},
    {"who", cmd_who, "/who [ROOM]", "list who is in ROOM"},
    {"rooms", cmd_rooms, "/rooms", "list public rooms"},
    {"history", cmd_history, "/history [N]", "show the last N messages (default 50)"},
    {"me", cmd_me, "/me ACTION", "send an action (* alice waves)"},
    {"ping", cmd_ping, "/ping", "check that the server answers"},
    {"help", cmd_help, "/help", "show this help"},
    {"quit", cmd_quit, "/quit", "disconnect"},
};

enum err_code codec_decode_text(const char *line, size_t len, const char *current_room,
                                const struct codec_limits *lim, struct req *out, char *msgbuf,
                                size_t msgsz)
{
    struct tdec d = {
        .out = out,
        .msg = msgbuf,
        .msgsz = msgsz,
        .max_text = lim && lim->max_text ? lim->max_text : DEFAULT_MAX_TEXT,
        .current = current_room ? current_room : "",
    };
    enum err_code rc;

    memset(out, 0, sizeof(*out));
    out->limit = CODEC_LIMIT_DEFAULT;
    if (msgbuf && msgsz)
        msgbuf[0] = '\0';
    if (!line)
        len = 0;
    /* a room name we could not have produced is no room */
    if (strlen(d.current) > CODEC_ROOMID_MAX)
        d.current = "";

    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len && memchr(line, '\0', len))
        return tfail(&d, ERR_BAD_REQUEST, "line contains a NUL byte");
    if (len && (memchr(line, '\n', len) || memchr(line, '\r', len)))
        return tfail(&d, ERR_BAD_REQUEST, "one line at a time");
    if (len && utf8_count(line, len) < 0)
        return tfail(&d, ERR_BAD_REQUEST, "line is not valid UTF-8");
    size_t i = 0;
    while (i < len && is_blank(line[i]))
        i++;
    if (i == len)
        return tfail(&d, ERR_BAD_REQUEST, "empty line");

    if (line[0] != '/' || (len >= 2 && line[1] == '/')) {
        size_t skip = line[0] == '/' ? 1 : 0; /* "//x" sends "/x" */
        out->type = REQ_SEND;
        rc = use_current(&d);
        if (!rc)
            rc = set_text(&d, line + skip, len - skip);
        goto out;
    }

    struct args a = {.p = line + 1, .end = line + len};
    const char *name = a.p;
    while (a.p < a.end && !is_blank(*a.p))
        a.p++;
    size_t nlen = (size_t)(a.p - name);
    for (size_t k = 0; k < ARRAY_LEN(commands); k++) {
        if (strlen(commands[k].name) == nlen && strncasecmp(name, commands[k].name, nlen) == 0) {
            rc = commands[k].fn(&d, &a);
            goto out;
        }
    }
    rc = ERR_UNKNOWN_TYPE;
    bool plain = nlen > 0 && nlen <= 32;
    for (size_t k = 0; plain && k < nlen; k++)
        plain = (unsigned char)name[k] > 0x20 && (unsigned char)name[k] < 0x7f;
    if (plain)
        tfail(&d, rc, "unknown command /%.*s, try /help", (int)nlen, name);
    else
        tfail(&d, rc, "unknown command, try /help");

out:
    if (rc != ERR_NONE)
        req_release(out);
    return rc;
}

msg_t *codec_help(void)
{
    struct msgbuf b;
    mb_init(&b, 1024);
    mb_puts(&b, "* commands:");
    for (size_t i = 0; i < ARRAY_LEN(commands); i++)
        mb_printf(&b, "\n  %-16s %s", commands[i].usage, commands[i].what);
    mb_puts(&b, "\n  //TEXT           send TEXT starting with one /"
                "\n  any other line is sent to the room joined last");
    return mb_finish(&b);
}
