/*
 * apibody — the codec for HTTP API request bodies (part of the codec
 * module, which owns every use of jansson). Pure; any thread.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "util.h"

static enum err_code field(json_t *root, const char *name, bool required, char **out,
                           size_t maxlen, char *msg, size_t msgsz)
{
    json_t *v = json_object_get(root, name);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!required)
            return ERR_NONE;
        snprintf(msg, msgsz, "field '%s' is required", name);
        return ERR_BAD_REQUEST;
    }
    if (!json_is_string(v)) {
        snprintf(msg, msgsz, "field '%s' must be a string", name);
        return ERR_BAD_REQUEST;
    }
    size_t n = json_string_length(v);
    if (n > maxlen) {
        snprintf(msg, msgsz, "field '%s' is too long", name);
        return ERR_BAD_REQUEST;
    }
    *out = xstrndup(json_string_value(v), n);
    return ERR_NONE;
}

enum err_code codec_decode_credentials(const char *buf, size_t len, struct credentials *out,
                                       char *msg, size_t msgsz)
{
    json_error_t je;
    enum err_code e;
    char *user = NULL;

    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(msg, msgsz, "invalid JSON: %s", je.text);
        return ERR_BAD_JSON;
    }
    if (!json_is_object(root)) {
        snprintf(msg, msgsz, "expected a JSON object");
        e = ERR_BAD_JSON;
        goto out;
    }
    if ((e = field(root, "user", true, &user, CODEC_USER_MAX, msg, msgsz)) != ERR_NONE)
        goto out;
    if (!codec_valid_user(user)) {
        snprintf(msg, msgsz, "invalid user name: 1-32 of A-Z a-z 0-9 _ . -");
        e = ERR_BAD_REQUEST;
        goto out;
    }
    str_lcpy(out->user, user, sizeof(out->user));
    if ((e = field(root, "password", true, &out->password, 1024, msg, msgsz)) != ERR_NONE)
        goto out;
    e = field(root, "email", false, &out->email, 254, msg, msgsz);
out:
    free(user);
    json_decref(root);
    if (e != ERR_NONE)
        credentials_release(out);
    return e;
}

char *codec_http_error(const char *code, const char *message)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s ? s : xstrdup("{\"error\":\"internal\"}");
}

void credentials_release(struct credentials *c)
{
    if (c->password) {
        /* do not leave passwords lying around in freed memory */
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    free(c->email);
    c->password = c->email = NULL;
}
