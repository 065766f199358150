/*
 * codec — protocol v1 on the wire: decodes client requests (JSON mode and
 * text mode) into struct req, and encodes server replies and events into
 * ready-to-send frames (msg_t). Pure functions, no I/O, no shared state:
 * every function is safe on any thread. Only this module includes jansson.h.
 *
 * Validation lives here so that the broker only ever sees well-formed
 * requests: names match the contract's patterns, text is valid UTF-8 within
 * the code-point limit, numbers are in range, unknown fields are ignored.
 */
#ifndef PARLEY_CODEC_H
#define PARLEY_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

#define CODEC_USER_MAX 32
#define CODEC_ROOM_MAX 64
/* "dm:" + user + ":" + user */
#define CODEC_ROOMID_MAX (3 + CODEC_USER_MAX + 1 + CODEC_USER_MAX)
#define CODEC_ID_MAX 64
#define CODEC_REF_MAX 128 /* encoded JSON of the ref value */
#define CODEC_TOKEN_MAX 2048
#define CODEC_LIMIT_DEFAULT 50
#define CODEC_LIMIT_MAX 200

enum req_type {
    REQ_HELLO,
    REQ_JOIN,
    REQ_LEAVE,
    REQ_SEND,
    REQ_DM,
    REQ_HISTORY,
    REQ_WHO,
    REQ_ROOMS,
    REQ_TYPING,
    REQ_PING,
    /* text mode only */
    REQ_HELP,
    REQ_QUIT,
};

/* Error codes of the contract, in its order. */
enum err_code {
    ERR_NONE = 0,
    ERR_BAD_JSON,
    ERR_BAD_REQUEST,
    ERR_UNKNOWN_TYPE,
    ERR_AUTH_REQUIRED,
    ERR_AUTH_FAILED,
    ERR_NAME_TAKEN,
    ERR_NOT_JOINED,
    ERR_FORBIDDEN,
    ERR_NO_SUCH_USER,
    ERR_RATE_LIMITED,
    ERR_TOO_LARGE,
    ERR_INTERNAL,
    ERR_SHUTTING_DOWN,
};

/* The wire name of an error code ("bad_json", ...). */
const char *codec_err_name(enum err_code c);

/*
 * A decoded request. Strings are NUL-terminated and already validated.
 * Owned by the caller; req_release frees text/token. Empty string = absent,
 * except where a has_* flag is given.
 */
struct req {
    enum req_type type;
    char ref[CODEC_REF_MAX + 1]; /* JSON text of "ref" ("\"a\"", "42"), "" if none */
    char user[CODEC_USER_MAX + 1];  /* hello (open mode) */
    char *token;                    /* hello (accounts mode), NULL if none */
    char room[CODEC_ROOMID_MAX + 1]; /* join/leave/send/history/who/typing; may be dm:a:b */
    char to[CODEC_USER_MAX + 1];    /* dm */
    char id[CODEC_ID_MAX + 1];      /* send/dm client message id, "" if none */
    char *text;                     /* send/dm, NULL otherwise */
    size_t text_len;                /* bytes */
    bool has_since, has_before;
    uint64_t since, before;
    int limit;                      /* join/history: 1..CODEC_LIMIT_MAX, default applied */
    bool me;                        /* text mode /me: text is an action */
};

void req_release(struct req *r);

struct codec_limits {
    size_t max_text; /* code points, default 4000 */
};

/*
 * Decode one JSON-mode frame. Returns ERR_NONE and fills *out, or an error
 * code with a human message in msgbuf; out->ref is filled whenever the
 * frame was a JSON object with a usable "ref" so errors can echo it.
 * Duplicate keys are bad_json; deep nesting is refused without recursion
 * blowing the stack; "type" missing or not a string is bad_request; an
 * unknown type is unknown_type.
 */
enum err_code codec_decode_json(const char *buf, size_t len, const struct codec_limits *lim,
                                struct req *out, char *msgbuf, size_t msgsz);

/*
 * Decode one text-mode line (no trailing newline needed; a trailing \r\n
 * is ignored). "/nick NAME", "/token JWT", "/join ROOM", "/leave [ROOM]",
 * "/msg USER TEXT", "/who [ROOM]", "/rooms", "/history [N]", "/me ACTION",
 * "/help", "/quit", "/ping"; any other line is a send to current_room
 * (the room joined last; "" if none -> ERR_NOT_JOINED). "/leave" and "/who"
 * without an argument and "/history" use current_room.
 */
enum err_code codec_decode_text(const char *line, size_t len, const char *current_room,
                                const struct codec_limits *lim, struct req *out, char *msgbuf,
                                size_t msgsz);

/* Name validation shared with the broker. codec_valid_room: public rooms
 * only, so never dm:a:b, and never "dm" itself (reserved: the prefix of the
 * DM rooms). */
bool codec_valid_user(const char *s);
bool codec_valid_room(const char *s);
/* Build "dm:a:b" with a < b in byte order; returns false if either is invalid. */
bool codec_dm_room(const char *u1, const char *u2, char out[CODEC_ROOMID_MAX + 1]);
/* If room is a valid dm:a:b name (a < b, both valid), copy a and b out. */
bool codec_parse_dm(const char *room, char a[CODEC_USER_MAX + 1], char b[CODEC_USER_MAX + 1]);

/* ---- encoding: every function returns a finished frame with refcount 1 ---- */

enum codec_fmt { FMT_JSON, FMT_TEXT };

/* One chat message as stored and as sent. */
struct chat_msg {
    const char *room;
    uint64_t seq;
    const char *from;
    const char *text;
    size_t text_len;
    int64_t ts; /* ms since epoch */
    const char *id; /* "" or NULL if none */
};

struct room_info {
    const char *name;
    unsigned members;
    uint64_t seq;
};

msg_t *codec_message(enum codec_fmt f, const struct chat_msg *m);
/* The JSON frame of m with its seq left out (m->seq is ignored): the
 * decimal seq goes at payload offset *seq_at, which gives exactly
 * codec_message(FMT_JSON, m). For an engine that assigns the seq elsewhere
 * (a Redis script), so the event is still encoded once. */
msg_t *codec_message_parts(const struct chat_msg *m, size_t *seq_at);
msg_t *codec_presence(enum codec_fmt f, const char *room, const char *user, bool join);
msg_t *codec_typing(enum codec_fmt f, const char *room, const char *user);
msg_t *codec_error(enum codec_fmt f, enum err_code code, const char *message, const char *ref,
                   int64_t retry_after_ms /* <0: none */);
msg_t *codec_welcome(enum codec_fmt f, const char *user, const char *session, const char *ref,
                     size_t max_text, size_t max_frame, double rate, double burst);
msg_t *codec_joined(enum codec_fmt f, const char *room, uint64_t seq, const char *const *members,
                    size_t nmembers, const struct chat_msg *hist, size_t nhist, const char *ref);
msg_t *codec_left(enum codec_fmt f, const char *room, const char *ref);
msg_t *codec_ack(enum codec_fmt f, const char *room, uint64_t seq, const char *id,
                 const char *ref);
msg_t *codec_history(enum codec_fmt f, const char *room, const struct chat_msg *msgs, size_t n,
                     bool more, const char *ref);
msg_t *codec_members(enum codec_fmt f, const char *room, const char *const *users, size_t n,
                     const char *ref);
msg_t *codec_rooms(enum codec_fmt f, const struct room_info *rooms, size_t n, const char *ref);
msg_t *codec_pong(enum codec_fmt f, const char *ref);
/* Text mode only: the /help text. */
msg_t *codec_help(void);

/* ---- HTTP API bodies (apibody.c) ---- */

/* {user, password, email?} of POST /api/register and /api/login. */
struct credentials {
    char user[CODEC_USER_MAX + 1]; /* validated name */
    char *password;                /* <= 1024 bytes, not yet judged for strength */
    char *email;                   /* NULL if absent; not yet validated */
};
/* Decode a JSON body; ERR_BAD_JSON / ERR_BAD_REQUEST with a message. */
enum err_code codec_decode_credentials(const char *buf, size_t len, struct credentials *out,
                                       char *msg, size_t msgsz);
/* Wipe and free the password and email. */
void credentials_release(struct credentials *c);
/* The JSON body of an HTTP API error: {"error": code, "message": message},
 * escaped (message may quote client input). Heap string. */
char *codec_http_error(const char *code, const char *message);

#endif
